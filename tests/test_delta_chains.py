"""Delta objects: chunks stored as XOR deltas against the parent commit's version.

A property test drives random histories (small updates, rewrites, shape and
dtype changes, tensors added and removed) and checks that every commit reads
back bit-exact, that chains respect the writer's bound, and that a chunk whose
only change is a few flipped bits is stored against its parent version exactly
when the bound allows it. Then damage (a corrupt or missing base), transfers
(push, clone, a base living on another branch, partial clones) and the
switches that turn deltas off.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import pytest
from conftest import (
    FAST_TMP,
    RemoteSpot,
    RunWvc,
    assert_bit_exact,
    assert_same_tree,
    flip_bits,
    random_tensor,
    write_checkpoint,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.numpy import load_file
from sqlalchemy import select

from wvc.errors import BrokenChainError, CorruptObjectError, MissingObjectError
from wvc.index import objects as objects_table
from wvc.objects import HEADER_SIZE, object_key
from wvc.ops._read import read_commit, read_file_manifest, read_tree
from wvc.ops.fsck import ProblemKind
from wvc.repository import Repository

DTYPES: dict[str, Any] = {
    "F32": np.dtype(np.float32),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "F16": np.dtype(np.float16),
    "I32": np.dtype(np.int32),
}
State = dict[str, np.ndarray]
# tmpfs when there is one: these tests check content, not durability, and fsync is free there.


# --- helpers ------------------------------------------------------------------------------


def snapshot(state: Mapping[str, np.ndarray]) -> State:
    return {n: np.array(a, copy=True) for n, a in state.items()}


def tensor_chunks(repo: Repository, rev: str) -> dict[str, tuple[str, ...]]:
    """Chunk ids of every tensor of ``rev`` (names are unique across its files here)."""
    commit = read_commit(repo.objects, repo.resolve(rev))
    out: dict[str, tuple[str, ...]] = {}
    for entry in read_tree(repo.objects, commit.tree).entries:
        for seg in read_file_manifest(repo.objects, entry.manifest).segments:
            if seg.tensor is not None:
                out[seg.tensor.name] = seg.chunks
    return out


def all_chunks(repo: Repository, rev: str) -> set[str]:
    commit = read_commit(repo.objects, repo.resolve(rev))
    return {
        c
        for entry in read_tree(repo.objects, commit.tree).entries
        for seg in read_file_manifest(repo.objects, entry.manifest).segments
        for c in seg.chunks
    }


def object_rows(repo: Repository) -> dict[str, str | None]:
    with repo.index.read() as conn:
        return {r.id: r.base for r in conn.execute(select(objects_table))}


def object_file(repo: Repository, oid: str) -> Path:
    return repo.dir / "objects" / object_key(oid)


def flip_last_byte(path: Path) -> None:
    blob = bytearray(path.read_bytes())
    assert len(blob) > HEADER_SIZE  # the byte flipped is in the payload, not the header
    blob[-1] ^= 0xFF
    path.write_bytes(bytes(blob))


def chain_history(
    repo: Repository, rng: np.random.Generator, n_commits: int, names: tuple[str, ...]
) -> list[tuple[str, State]]:
    """``n_commits`` commits of ``names`` (F32, BF16, F16, I32 in turn), each a few bits apart."""
    dtypes = list(DTYPES.values())
    state: State = {
        n: random_tensor(rng, dtypes[i % len(dtypes)], (32, 32)) for i, n in enumerate(names)
    }
    out = []
    for i in range(n_commits):
        if i:
            state = {n: flip_bits(rng, a, 3) for n, a in state.items()}
        res = repo.commit_state_dict(state, message=f"c{i}")
        out.append((res.id, snapshot(state)))
    return out


# --- the property --------------------------------------------------------------------------

_shapes = st.tuples(st.integers(16, 40), st.integers(16, 40))
_pick = st.integers(0, 63)
_sparse = st.tuples(st.just("sparse"), _pick, st.integers(1, 4))
_op = st.one_of(
    _sparse,
    _sparse,  # weighted: the case the prediction below checks most precisely
    _sparse,
    st.tuples(st.just("dense"), _pick),
    st.tuples(st.just("rewrite"), _pick),
    st.tuples(st.just("reshape"), _pick, _shapes),
    st.tuples(st.just("retype"), _pick, st.sampled_from(sorted(DTYPES))),
    st.tuples(st.just("add"), st.sampled_from(sorted(DTYPES)), _shapes),
    st.tuples(st.just("remove"), _pick),
)


def _apply(
    rng: np.random.Generator, state: State, op: tuple[Any, ...], counter: list[int]
) -> tuple[str | None, str]:
    """Apply ``op`` to ``state``; returns (tensor name touched, what was done)."""
    kind = op[0]
    if kind == "add":
        counter[0] += 1
        name = f"t{counter[0]}"
        state[name] = random_tensor(rng, DTYPES[op[1]], op[2])
        return name, kind
    names = sorted(state)
    name = names[op[1] % len(names)]
    a = state[name]
    if kind == "sparse":
        state[name] = flip_bits(rng, a, op[2])
    elif kind == "dense":
        if a.dtype == np.int32:
            state[name] = a + rng.integers(-3, 4, size=a.shape, dtype=np.int32)
        else:
            noise = 1 + 1e-3 * rng.standard_normal(a.shape)
            state[name] = (a.astype(np.float64) * noise).astype(a.dtype)
    elif kind == "rewrite":
        state[name] = random_tensor(rng, a.dtype, a.shape)
    elif kind == "reshape":
        state[name] = random_tensor(rng, a.dtype, op[2])
    elif kind == "retype":
        new = DTYPES[op[2]]
        both_float = new != np.int32 and a.dtype != np.int32
        state[name] = a.astype(new) if both_float else random_tensor(rng, new, a.shape)
    elif kind == "remove":
        if len(state) == 1:
            return None, "noop"
        del state[name]
    return name, kind


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    seed=st.integers(0, 2**32 - 1),
    max_chain=st.integers(2, 5),
    initial=st.lists(st.tuples(st.sampled_from(sorted(DTYPES)), _shapes), min_size=1, max_size=4),
    history=st.lists(st.lists(_op, max_size=3), min_size=8, max_size=15),
)
def test_random_histories_restore_bit_exact_with_bounded_chains(
    seed: int,
    max_chain: int,
    initial: list[tuple[str, tuple[int, int]]],
    history: list[list[tuple[Any, ...]]],
) -> None:
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory(dir=FAST_TMP) as tmp:
        repo = Repository.init(Path(tmp) / "repo")
        repo.objects.max_chain = max_chain
        try:
            counter = [0]
            state: State = {}
            for dt, shape in initial:
                _apply(rng, state, ("add", dt, shape), counter)
            commits: list[tuple[str, State, dict[str, set[str]]]] = []
            for i, ops in enumerate([[], *history]):
                done: dict[str, set[str]] = {}
                for op in ops:
                    name, kind = _apply(rng, state, op, counter)
                    if name is not None:
                        done.setdefault(name, set()).add(kind)
                res = repo.commit_state_dict(state, message=f"c{i}")
                commits.append((res.id, snapshot(state), done))
            _check_history(repo, Path(tmp), commits, max_chain)
        finally:
            repo.close()


def _check_history(
    repo: Repository,
    tmp: Path,
    commits: list[tuple[str, State, dict[str, set[str]]]],
    max_chain: int,
) -> None:
    objects = repo.objects
    # Every commit reads back bit-exact: loaded, and restored as a file another reader parses.
    for i, (cid, expected, _) in enumerate(commits):
        assert_bit_exact(repo.load(cid), expected)
        out = tmp / f"restored-{i}"
        repo.restore(cid, out)
        assert_bit_exact(load_file(str(out / "model.safetensors")), expected)

    # The writer's bound holds for every object stored, and the index agrees with the headers.
    rows = object_rows(repo)
    assert set(rows) == set(objects.iter_ids())
    for oid, base in rows.items():
        chain = objects.read_chain(oid)
        assert 1 <= len(chain) <= max_chain, (oid, chain)
        header, _ = objects.read_header(oid)
        assert header.base == base
        assert chain[1:2] == ([base] if base else [])
    stats = repo.stats()
    assert sum(c.delta_objects or 0 for c in stats.commits) == sum(
        1 for b in rows.values() if b is not None
    )

    # How each new chunk was stored follows from what changed since the parent commit.
    seen: set[str] = set()
    predicted_deltas = 0
    deltas_seen = 0
    for i, (cid, expected, done) in enumerate(commits):
        chunks = tensor_chunks(repo, cid)
        parent_chunks = tensor_chunks(repo, commits[i - 1][0]) if i else {}
        parent_state = commits[i - 1][1] if i else {}
        for name, (c,) in chunks.items():
            if c in seen:
                continue  # an object stored before (identical content): nothing to predict
            chain = objects.read_chain(c)
            deltas_seen += len(chain) > 1
            before = parent_state.get(name)
            same_layout = (
                before is not None
                and before.dtype == expected[name].dtype
                and before.shape == expected[name].shape
            )
            if not same_layout:
                assert chain == [c], f"{name}: no base exists, yet stored as a delta"
            elif done.get(name) == {"sparse"}:
                (p,) = parent_chunks[name]
                below = objects.read_chain(p)
                if len(below) < max_chain:
                    predicted_deltas += 1
                    assert chain == [c, *below], f"{name}: a few flipped bits, stored whole"
                else:
                    assert chain == [c], f"{name}: chain of {len(below)} extended past the bound"
        seen |= all_chunks(repo, cid)
    assert deltas_seen >= predicted_deltas

    check = repo.fsck()
    assert check.ok, check.problems


# --- deltas occur, and can be turned off -----------------------------------------------------


def test_small_updates_are_stored_as_deltas_with_a_keyframe_every_max_chain(
    work: Path, rng: np.random.Generator
) -> None:
    repo = Repository.init(work / "r")
    repo.objects.max_chain = 3
    history = chain_history(repo, rng, 7, ("a", "b", "c", "d"))
    lengths = {
        n: [len(repo.objects.read_chain(tensor_chunks(repo, cid)[n][0])) for cid, _ in history]
        for n in "abcd"
    }
    for n in "abcd":
        assert lengths[n] == [1, 2, 3, 1, 2, 3, 1], n
    for cid, expected in history:
        assert_bit_exact(repo.load(cid), expected)
    per = {c.id: c for c in repo.stats().commits}
    assert per[history[0][0]].delta_objects == 0
    assert per[history[1][0]].delta_objects == 4
    assert per[history[3][0]].delta_objects == 0  # every chain was full: keyframes
    delta = per[history[1][0]]
    assert delta.delta_raw_size is not None and delta.delta_stored_size is not None
    assert delta.delta_stored_size < delta.delta_raw_size / 10
    assert repo.fsck().ok


def test_delta_false_and_max_chain_1_store_every_chunk_whole(
    work: Path, rng: np.random.Generator
) -> None:
    states = [{"w": random_tensor(rng, DTYPES["F32"], (48, 48))}]
    for _ in range(3):
        states.append({"w": flip_bits(rng, states[-1]["w"], 2)})
    with_deltas = Repository.init(work / "on")
    off = Repository.init(work / "off")
    bound_1 = Repository.init(work / "bound-1")
    bound_1.objects.max_chain = 1
    for s in states:
        with_deltas.commit_state_dict(s)
        off.commit_state_dict(s, delta=False)
        bound_1.commit_state_dict(s)
    # The same history stores deltas when allowed (so the switch is what makes the difference).
    assert any(b is not None for b in object_rows(with_deltas).values())
    for repo in (off, bound_1):
        assert all(b is None for b in object_rows(repo).values())
        for oid in repo.objects.iter_ids():
            assert repo.objects.read_header(oid)[0].base is None
            assert repo.objects.read_chain(oid) == [oid]
        assert all(c.delta_objects == 0 for c in repo.stats().commits)
        assert repo.stats().stored_size > with_deltas.stats().stored_size
        for i, s in enumerate(states):
            assert_bit_exact(repo.load(f"HEAD~{len(states) - 1 - i}"), s)


def test_cli_max_chain_env_no_delta_and_stats_json(
    work: Path, rng: np.random.Generator, run_wvc: RunWvc
) -> None:
    repo = Repository.init(work / "r")
    ck = work / "ck"
    x = random_tensor(rng, DTYPES["BF16"], (64, 64))
    y = rng.integers(0, 9, (64,), dtype=np.int32)
    ids = []
    for i in range(6):
        if i:
            x = flip_bits(rng, x, 2)
        write_checkpoint(ck, {"model.safetensors": {"x": x, "y": y}})
        if i == 2:  # the bound from the environment: with the default (8) this is a delta
            proc = run_wvc("commit", ck, "--json", cwd=repo.root, env={"WVC_MAX_CHAIN": "2"})
        elif i == 3:  # with the default bound this is a delta too
            proc = run_wvc("commit", ck, "--no-delta", "--json", cwd=repo.root)
        else:
            ids.append(repo.commit(ck, f"c{i}").id)
            continue
        assert proc.returncode == 0, proc.stderr
        ids.append(json.loads(proc.stdout)["id"])
    chains = [len(repo.objects.read_chain(tensor_chunks(repo, c)["x"][0])) for c in ids]
    assert chains == [1, 2, 1, 1, 2, 3]
    assert len({tensor_chunks(repo, c)["y"] for c in ids}) == 1  # deduplicated throughout

    proc = run_wvc("stats", "--json", cwd=repo.root)
    assert proc.returncode == 0, proc.stderr
    per = {c["id"]: c for c in json.loads(proc.stdout)["commits"]}
    assert [per[c]["delta_objects"] for c in ids] == [0, 1, 0, 0, 1, 1]
    small = per[ids[1]]
    assert 0 < small["delta_stored_size"] < small["delta_raw_size"] / 10
    assert small["standalone_objects"] == small["new_objects"] - 1
    assert small["deduped_size"] == small["logical_size"] - small["delta_raw_size"]
    assert per[ids[0]]["delta_stored_size"] == 0
    assert repo.fsck().ok


# --- a damaged base ------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["flip", "delete"])
@pytest.mark.parametrize("where", [0, 1], ids=["keyframe", "mid-chain"])
def test_damaged_base_breaks_exactly_its_dependents(
    work: Path, rng: np.random.Generator, run_wvc: RunWvc, damage: str, where: int
) -> None:
    repo = Repository.init(work / "r")
    history = chain_history(repo, rng, 4, ("a", "b", "c"))
    base = tensor_chunks(repo, history[where][0])["a"][0]
    every = set(repo.objects.iter_ids())
    chains = {oid: repo.objects.read_chain(oid) for oid in every}
    dependents = {oid for oid, chain in chains.items() if base in chain[1:]}
    assert dependents == {tensor_chunks(repo, cid)["a"][0] for cid, _ in history[where + 1 :]}

    if damage == "flip":
        flip_last_byte(object_file(repo, base))
    else:
        object_file(repo, base).unlink()

    for oid in sorted(dependents):
        with pytest.raises(BrokenChainError) as err:
            repo.objects.get(oid)
        assert err.value.object_id == oid
        assert err.value.base == base
        assert base in str(err.value)
    with pytest.raises(CorruptObjectError if damage == "flip" else MissingObjectError) as err:
        repo.objects.get(base)
    assert not isinstance(err.value, BrokenChainError)  # the base itself is at fault
    for oid in sorted(every - dependents - {base}):
        repo.objects.get(oid)  # every other object still reads and verifies

    res = repo.fsck()
    assert not res.ok
    broken = [p for p in res.problems if p.kind is ProblemKind.BROKEN_CHAIN]
    assert {p.object for p in broken} == dependents
    assert len(broken) == len(dependents)
    assert all(base in p.message for p in broken)
    base_kind = ProblemKind.CORRUPT_OBJECT if damage == "flip" else ProblemKind.MISSING_OBJECT
    assert base_kind in {p.kind for p in res.problems if p.object == base}

    # Restoring a commit that needs the base fails and leaves no target behind.
    for i, (cid, expected) in enumerate(history):
        out = work / f"out-{i}"
        if i >= where:
            with pytest.raises(
                CorruptObjectError if damage == "flip" or i > where else MissingObjectError
            ) as err:
                repo.restore(cid, out)
            assert base in str(err.value)
            assert not out.exists()
        else:
            repo.restore(cid, out)
            assert_bit_exact(load_file(str(out / "model.safetensors")), expected)
    if where == 0:  # the CLI says so with exit code 6
        out = work / "cli-out"
        proc = run_wvc("restore", history[-1][0], "--to", out, cwd=repo.root)
        assert proc.returncode == 6, proc.stderr
        assert base in proc.stderr
        assert not out.exists()

    # A commit on top of the broken chain cannot use it as a base: it stores a keyframe.
    state = dict(history[-1][1])
    state["a"] = flip_bits(rng, state["a"], 1)
    on_top = repo.commit_state_dict(state, message="on top")
    fresh = tensor_chunks(repo, on_top.id)["a"][0]
    assert repo.objects.read_chain(fresh) == [fresh]
    assert_bit_exact(repo.load(on_top.id), state)

    # Repair deletes the corrupt base and every dependent; committing the states again heals.
    repaired = repo.fsck(repair=True)
    assert set(repaired.removed) == dependents | ({base} if damage == "flip" else set())
    after = repo.fsck()
    assert {p.kind for p in after.problems} == {ProblemKind.MISSING_OBJECT}
    assert {p.object for p in after.problems} == dependents | {base}
    for _, expected in history:
        repo.commit_state_dict(expected, message="again")
    assert repo.fsck().ok
    for cid, expected in history:
        assert_bit_exact(repo.load(cid), expected)


def test_clone_refuses_a_remote_whose_delta_base_is_corrupt(
    work: Path, rng: np.random.Generator
) -> None:
    a = Repository.init(work / "a")
    history = chain_history(a, rng, 3, ("w",))
    remote = work / "remote"
    a.add_remote("origin", str(remote))
    a.push("origin")
    keyframe = tensor_chunks(a, history[0][0])["w"][0]
    flip_last_byte(remote / "objects" / object_key(keyframe))
    # Only the tip's chunk is selected: its chain (down to the keyframe) comes with it.
    with pytest.raises(CorruptObjectError) as err:
        Repository.clone(str(remote), work / "b", tensors=["w"], jobs=1)
    assert keyframe in str(err.value)  # the error names the object that is damaged
    assert not (work / "b").exists()


# --- transfers -------------------------------------------------------------------------------


def test_push_clone_keeps_chains_and_restores_bit_exact(
    work: Path, rng: np.random.Generator, remote_spot: RemoteSpot
) -> None:
    a = Repository.init(work / "a")
    a.objects.max_chain = 8  # one chain over the five commits
    history = chain_history(a, rng, 5, ("enc", "dec", "head", "emb"))
    a.add_remote("origin", remote_spot.url, remote_spot.options)
    a.push("origin")
    b = Repository.clone(remote_spot.url, work / "b", options=remote_spot.options)
    for i, (cid, expected) in enumerate(history):
        assert_bit_exact(b.load(cid), expected)
        a.restore(cid, work / f"a-{i}")
        b.restore(cid, work / f"b-{i}")
        assert_same_tree(work / f"a-{i}", work / f"b-{i}")
    # Object files travel byte for byte: the clone holds the very same chains.
    assert set(b.objects.iter_ids()) == set(a.objects.iter_ids())
    longest = 0
    for oid in a.objects.iter_ids():
        chain = a.objects.read_chain(oid)
        assert b.objects.read_chain(oid) == chain
        longest = max(longest, len(chain))
    assert longest == 5
    assert b.fsck().ok


def test_push_sends_a_delta_base_that_only_another_branch_reaches(
    work: Path, rng: np.random.Generator, remote_spot: RemoteSpot
) -> None:
    a = Repository.init(work / "a")
    w0 = random_tensor(rng, DTYPES["F32"], (48, 48))
    other = random_tensor(rng, DTYPES["F32"], (48, 48))
    tip = flip_bits(rng, other, 2)
    a.commit_state_dict({"w": w0}, message="root")
    a.commit_state_dict({"w": other}, message="x1", branch="x")
    a.commit_state_dict({"w": tip}, message="x2", branch="x")
    delta, base = tensor_chunks(a, "x")["w"][0], tensor_chunks(a, "x~1")["w"][0]
    assert a.objects.read_chain(delta) == [delta, base]
    # Branch y (from main) holds the same tensor: it reuses the delta, whose base only x has.
    a.commit_state_dict({"w": tip}, message="y1", branch="y")
    assert tensor_chunks(a, "y")["w"] == (delta,)
    assert base not in all_chunks(a, "y") | all_chunks(a, "main")

    a.add_remote("origin", remote_spot.url, remote_spot.options)
    a.push("origin", ["y"])
    c = Repository.clone(remote_spot.url, work / "c", branch="y", options=remote_spot.options)
    assert [r.name for r in c.branches()] == ["y"]
    assert c.objects.has(base)
    assert_bit_exact(c.load("y"), {"w": tip})
    assert_bit_exact(c.load("y~1"), {"w": w0})
    c.restore("y", work / "out")
    assert_bit_exact(load_file(str(work / "out" / "model.safetensors")), {"w": tip})
    assert c.fsck().ok


@pytest.mark.parametrize("select", ["tensors", "files"])
def test_partial_clone_fetches_chain_bases_with_the_selection_and_on_demand(
    work: Path, rng: np.random.Generator, remote_spot: RemoteSpot, select: str
) -> None:
    a = Repository.init(work / "a")
    a.objects.max_chain = 8  # one chain over the five commits
    enc = random_tensor(rng, DTYPES["F32"], (40, 40))
    dec = random_tensor(rng, DTYPES["BF16"], (40, 40))
    history: list[tuple[str, State]] = []
    ck = work / "ck"
    for i in range(5):
        if i:
            enc, dec = flip_bits(rng, enc, 2), flip_bits(rng, dec, 2)
        state = {"enc.w": enc, "dec.w": dec}
        if select == "tensors":
            cid = a.commit_state_dict(state, message=f"c{i}").id
        else:
            write_checkpoint(
                ck, {"enc.safetensors": {"enc.w": enc}, "dec.safetensors": {"dec.w": dec}}
            )
            cid = a.commit(ck, f"c{i}").id
        history.append((cid, snapshot(state)))
    a.add_remote("origin", remote_spot.url, remote_spot.options)
    a.push("origin")

    selection: dict[str, list[str]] = (
        {"tensors": ["enc.*"]} if select == "tensors" else {"files": ["enc.safetensors"]}
    )
    b = Repository.clone(remote_spot.url, work / "b", options=remote_spot.options, **selection)
    assert b.last_clone is not None and b.last_clone.fetch.partial

    def chain_at(rev: str, name: str) -> list[str]:
        return a.objects.read_chain(tensor_chunks(a, rev)[name][0])

    enc_chain, dec_chain = chain_at(history[-1][0], "enc.w"), chain_at(history[-1][0], "dec.w")
    assert len(enc_chain) == len(dec_chain) == 5
    # The selected tensor's tip came with its whole chain (held here, not fetched later) ...
    assert all(b.objects.has(o) for o in enc_chain)
    assert not any(b.objects.has(o) for o in dec_chain)
    first = b.fsck()
    assert first.ok and first.not_fetched > 0
    # ... so every version of it reads with the remote gone.
    b.remove_remote("origin", force=True)
    for cid, expected in history:
        got = b.load_state_dict(cid)["enc.w"]
        assert_bit_exact({"enc.w": got}, {"enc.w": expected["enc.w"]})
    b.add_remote("origin", remote_spot.url, remote_spot.options)
    b.fetch("origin", **selection)  # marks the remote partial again: on-demand reads resume

    # An old version of the other tensor is fetched on demand with its bases, and kept.
    old_cid, old_state = history[2]
    got = b.load_state_dict(old_cid)["dec.w"]
    assert_bit_exact({"dec.w": got}, {"dec.w": old_state["dec.w"]})
    assert all(b.objects.has(o) for o in chain_at(old_cid, "dec.w"))
    assert not b.objects.has(dec_chain[0])
    for i, (cid, expected) in enumerate(history):
        assert_bit_exact(b.load(cid), expected)
        a.restore(cid, work / f"a-{i}")
        b.restore(cid, work / f"b-{i}")
        assert_same_tree(work / f"a-{i}", work / f"b-{i}")
    last = b.fsck()
    assert last.ok and last.not_fetched == 0


def test_apply_stores_changed_tensors_as_deltas_against_the_versions_they_replace(
    work: Path, rng: np.random.Generator
) -> None:
    base = {f"l{i}.w": random_tensor(rng, DTYPES["F32"], (256, 256)) for i in range(3)}
    tuned = {n: flip_bits(rng, t, 20) for n, t in base.items()}
    # The delta file is made elsewhere; the repository applying it has only the base.
    maker = Repository.init(work / "maker")
    made_base = maker.commit_state_dict(base, message="base").id
    made_tuned = maker.commit_state_dict(tuned, message="tuned").id
    maker.delta(made_base, made_tuned, work / "d.safetensors")
    repo = Repository.init(work / "r")
    base_id = repo.commit_state_dict(base, message="base").id
    res = repo.apply(work / "d.safetensors", onto=base_id, branch="applied")
    assert res.commit is not None
    assert_bit_exact(repo.load("applied"), tuned)
    (row,) = [c for c in repo.stats("applied").commits if c.id == res.commit.id]
    assert row.delta_objects == 3, row
    assert row.new_stored_size < 0.2 * sum(t.nbytes for t in tuned.values()), row
    assert repo.fsck().ok
