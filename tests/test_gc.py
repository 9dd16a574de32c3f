"""wvc gc: what it removes (only what no ref reaches), what it keeps (delta bases, recent
objects, objects of running writers), and the commit that loses a race with it.

The reachable set is computed here independently of gc: gc marks by reading commit,
tree and manifest objects; these tests walk the index (refs, commit parents, tree
rows) and close over delta chains with ``read_chain``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import pytest
from conftest import FAST_TMP, RunWvc, assert_bit_exact, assert_same_tree, flip_bits, random_tensor
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from wvc.codecs import CodecId, codec_for, get_codec
from wvc.dtypes import DType
from wvc.errors import ObjectRemovedError
from wvc.index import commit_parents, tree_files
from wvc.index import commits as commits_table
from wvc.index import objects as objects_table
from wvc.index import refs as refs_table
from wvc.manifest import parse_file_manifest
from wvc.objects import ObjectKind, hash_bytes, object_key
from wvc.ops._read import read_commit, read_file_manifest, read_tree
from wvc.ops._running import RUNNING_DIR, running
from wvc.ops.commit import Target, record_commit
from wvc.ops.gc import GRACE_S
from wvc.repository import Repository

State = dict[str, np.ndarray]
DTYPES: list[Any] = [np.dtype(np.float32), np.dtype(ml_dtypes.bfloat16), np.dtype(np.int32)]
# tmpfs when there is one: these tests check content, not durability, and fsync is free there.


# --- helpers ------------------------------------------------------------------------------


def object_file(repo: Repository, oid: str) -> Path:
    return repo.dir / "objects" / object_key(oid)


def set_mtime(repo: Repository, oid: str, when: float) -> None:
    os.utime(object_file(repo, oid), (when, when))


def sizes(repo: Repository) -> dict[str, int]:
    return {oid: object_file(repo, oid).stat().st_size for oid in repo.objects.iter_ids()}


def reachable_commits(repo: Repository) -> set[str]:
    """Commits reachable from any ref (branches, tags, HEAD, remote-tracking), via the index."""
    with repo.index.read() as conn:
        roots = {r.target for r in conn.execute(select(refs_table)) if r.target is not None}
        parents: dict[str, list[str]] = {}
        for row in conn.execute(select(commit_parents)):
            parents.setdefault(row.commit, []).append(row.parent)
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        c = todo.pop()
        if c not in seen:
            seen.add(c)
            todo.extend(parents.get(c, []))
    return seen


def expected_reachable(repo: Repository) -> set[str]:
    """Every object a ref reaches: commits, trees, manifests, chunks, their delta chains."""
    commits = reachable_commits(repo)
    with repo.index.read() as conn:
        tree_of = {r.id: r.tree for r in conn.execute(select(commits_table))}
        manifests_of: dict[str, set[str]] = {}
        for row in conn.execute(select(tree_files)):
            manifests_of.setdefault(row.tree, set()).add(row.manifest)
    trees = {tree_of[c] for c in commits}
    manifests = {m for t in trees for m in manifests_of.get(t, set())}
    out = commits | trees | manifests
    for m in manifests:
        manifest = parse_file_manifest(bytes(repo.objects.get(m)))
        for seg in manifest.segments:
            for chunk in seg.chunks:
                if repo.objects.has(chunk):  # a partial clone lacks some
                    out.update(repo.objects.read_chain(chunk))
                else:
                    out.add(chunk)
    return out


def tensor_chunk(repo: Repository, rev: str, name: str) -> str:
    commit = read_commit(repo.objects, repo.resolve(rev))
    for entry in read_tree(repo.objects, commit.tree).entries:
        for seg in read_file_manifest(repo.objects, entry.manifest).segments:
            if seg.tensor is not None and seg.tensor.name == name:
                return seg.chunks[0]
    raise AssertionError(f"{name} not in {rev}")


def commit_ids(repo: Repository) -> set[str]:
    with repo.index.read() as conn:
        return {r.id for r in conn.execute(select(commits_table.c.id))}


def put_garbage(repo: Repository, rng: np.random.Generator) -> str:
    """A chunk object no commit names."""
    data = rng.integers(0, 256, 3000, dtype=np.uint8).tobytes()
    return repo.objects.put(data, ObjectKind.CHUNK, get_codec(CodecId.ZSTD)).id


# --- the property --------------------------------------------------------------------------

BRANCHES = ["main", "x", "y", "z"]
TAGS = ["t1", "t2"]
_op = st.one_of(
    st.tuples(st.just("commit"), st.sampled_from(BRANCHES), st.sampled_from(["small", "fresh"])),
    st.tuples(st.just("commit"), st.sampled_from(BRANCHES), st.just("small")),
    st.tuples(st.just("branch"), st.sampled_from(BRANCHES[1:]), st.integers(0, 99)),
    st.tuples(st.just("delete"), st.sampled_from(BRANCHES[1:])),
    st.tuples(st.just("tag"), st.sampled_from(TAGS), st.integers(0, 99)),
    st.tuples(st.just("untag"), st.sampled_from(TAGS)),
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    phases=[Phase.explicit, Phase.reuse, Phase.generate],  # no shrinking: bounded runtime
)
@given(
    seed=st.integers(0, 2**32 - 1),
    ops=st.lists(_op, min_size=4, max_size=14),
    survivor=st.sampled_from([None, *BRANCHES[1:], *TAGS]),
)
def test_gc_removes_exactly_the_unreachable_and_every_ref_still_restores(
    seed: int, ops: list[tuple[Any, ...]], survivor: str | None
) -> None:
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory(dir=FAST_TMP) as tmp:
        repo = Repository.init(Path(tmp) / "repo")
        repo.objects.max_chain = 3
        try:
            # The history, then every ref but main and ``survivor`` dropped: garbage.
            drop = [n for n in BRANCHES[1:] + TAGS if n != survivor]
            ops = ops + [("untag", n) if n in TAGS else ("delete", n) for n in drop]
            expected = _run_history(repo, rng, ops)
            _check_gc(repo, expected)
        finally:
            repo.close()


def _run_history(
    repo: Repository, rng: np.random.Generator, ops: list[tuple[Any, ...]]
) -> dict[str, State]:
    """Play ``ops``; returns the tensors of every commit made."""
    expected: dict[str, State] = {}
    state: State = {
        "a": random_tensor(rng, DTYPES[0], (32, 32)),
        "b": random_tensor(rng, DTYPES[1], (24, 40)),
        "c": random_tensor(rng, DTYPES[2], (300,)),
    }
    order = [repo.commit_state_dict(state, message="root").id]
    expected[order[0]] = {n: a.copy() for n, a in state.items()}
    tips = {"main": order[0]}
    tags: dict[str, str] = {}
    for op in ops:
        kind = op[0]
        if kind == "commit":
            branch, how = op[1], op[2]
            parent = tips.get(branch, tips["main"])
            new = dict(expected[parent])
            name = sorted(new)[int(rng.integers(len(new)))]
            if how == "small":
                new[name] = flip_bits(rng, new[name], 2)
            else:
                new[name] = random_tensor(rng, new[name].dtype, new[name].shape)
            res = repo.commit_state_dict(new, message=f"on {branch}", branch=branch)
            assert res.parents == (parent,)
            tips[branch] = res.id
            order.append(res.id)
            expected[res.id] = {n: a.copy() for n, a in new.items()}
        elif kind == "branch" and op[1] not in tips:
            target = order[op[2] % len(order)]
            repo.branch(op[1], target)
            tips[op[1]] = target
        elif kind == "delete" and op[1] in tips:
            repo.delete_branch(op[1])
            del tips[op[1]]
        elif kind == "tag" and op[1] not in tags:
            tags[op[1]] = order[op[2] % len(order)]
            repo.tag(op[1], tags[op[1]])
        elif kind == "untag" and op[1] in tags:
            repo.delete_tag(op[1])
            del tags[op[1]]
    return expected


def _check_gc(repo: Repository, expected: dict[str, State]) -> None:
    before = sizes(repo)
    keep = expected_reachable(repo)
    assert keep <= set(before)
    garbage = set(before) - keep

    dry = repo.gc(dry_run=True, grace_s=0)
    assert dry.dry_run
    assert set(dry.removed_ids) == garbage and dry.removed == len(garbage)
    assert dry.freed == sum(before[o] for o in garbage)
    assert dry.reachable == len(keep) and dry.recent == 0
    assert sizes(repo) == before  # nothing removed

    res = repo.gc(grace_s=0)
    assert not res.dry_run
    assert set(res.removed_ids) == garbage and res.removed == len(garbage)
    assert res.freed == dry.freed
    assert (res.freed > 0) == bool(garbage)
    assert set(repo.objects.iter_ids()) == keep
    assert not any(object_file(repo, o).exists() for o in garbage)
    with repo.index.read() as conn:
        rows = {r.id for r in conn.execute(select(objects_table.c.id))}
    assert rows == keep  # the removed objects' rows went with them

    for cid in sorted(reachable_commits(repo)):
        assert_bit_exact(repo.load(cid), expected[cid])
    again = repo.gc(grace_s=0)
    assert again.removed == 0 and again.freed == 0
    check = repo.fsck()
    assert check.ok, check.problems


# --- deterministic cases ----------------------------------------------------------------------


def test_objects_only_a_deleted_branch_reached_are_removed_and_fsck_stays_clean(
    work: Path, rng: np.random.Generator
) -> None:
    repo = Repository.init(work / "r")
    w0 = random_tensor(rng, DTYPES[0], (32, 32))
    root = repo.commit_state_dict({"w": w0}, message="root")
    side = repo.commit_state_dict({"w": flip_bits(rng, w0, 1)}, message="side", branch="x")
    side_chunk = tensor_chunk(repo, "x", "w")
    repo.delete_branch("x")
    res = repo.gc(grace_s=0)
    assert side.id in res.removed_ids and side_chunk in res.removed_ids
    assert not object_file(repo, side.id).exists()
    assert res.freed > 0
    assert_bit_exact(repo.load("main"), {"w": w0})
    assert [e.id for e in repo.log()] == [root.id]
    check = repo.fsck()
    assert check.ok, check.problems  # the removed commit is not reported as missing


@pytest.mark.parametrize("holder", ["tag", "detached-head", "remote-tracking"])
def test_every_kind_of_ref_keeps_its_objects(
    work: Path, rng: np.random.Generator, holder: str
) -> None:
    repo = Repository.init(work / "r")
    repo.commit_state_dict({"w": random_tensor(rng, DTYPES[0], (32, 32))}, message="root")
    side_state = {"w": random_tensor(rng, DTYPES[0], (32, 32))}
    side = repo.commit_state_dict(side_state, message="side", branch="x")
    if holder == "tag":
        repo.tag("keep", "x")
    elif holder == "detached-head":
        repo.switch(side.id)
    else:
        repo.add_remote("origin", str(work / "remote"))
        repo.push("origin", ["x"])
    repo.delete_branch("x")
    assert side.id in expected_reachable(repo)
    res = repo.gc(grace_s=0)
    assert res.removed == 0
    assert_bit_exact(repo.load(side.id), side_state)
    # Once the last ref goes, so do the objects.
    if holder == "tag":
        repo.delete_tag("keep")
    elif holder == "detached-head":
        repo.switch("main")
    else:
        repo.remove_remote("origin")
    res = repo.gc(grace_s=0)
    side_chunk = hash_bytes(side_state["w"].tobytes())  # a chunk's id is the hash of its bytes
    assert {side.id, side_chunk} <= set(res.removed_ids)
    assert not object_file(repo, side_chunk).exists()


def test_gc_keeps_the_base_of_a_delta_it_keeps(work: Path, rng: np.random.Generator) -> None:
    """An old base of a recent unreachable delta must stay: the delta is kept, so must be
    readable, and a commit of the same content reuses it."""
    repo = Repository.init(work / "r")
    repo.commit_state_dict({"w": random_tensor(rng, DTYPES[0], (32, 32))}, message="root")
    base_state = random_tensor(rng, DTYPES[0], (32, 32))
    repo.commit_state_dict({"w": base_state}, message="x1", branch="x")
    base = tensor_chunk(repo, "x", "w")
    long_ago = time.time() - 2 * GRACE_S
    for oid in repo.objects.iter_ids():
        set_mtime(repo, oid, long_ago)
    tip = flip_bits(rng, base_state, 1)
    repo.commit_state_dict({"w": tip}, message="x2", branch="x")  # recent, a delta on base
    delta = tensor_chunk(repo, "x", "w")
    assert repo.objects.read_chain(delta) == [delta, base]
    repo.delete_branch("x")

    res = repo.gc()
    assert delta not in res.removed_ids  # recent: kept ...
    assert base not in res.removed_ids  # ... so its base is kept too
    assert bytes(repo.objects.get(delta)) == tip.tobytes()
    again = repo.commit_state_dict({"w": tip}, message="tip on main")
    assert_bit_exact(repo.load(again.id), {"w": tip})


def test_grace_period_spares_recent_unreachable_objects(
    work: Path, rng: np.random.Generator
) -> None:
    repo = Repository.init(work / "r")
    repo.commit_state_dict({"w": random_tensor(rng, DTYPES[0], (32, 32))}, message="root")
    side = repo.commit_state_dict({"w": random_tensor(rng, DTYPES[0], (32, 32))}, branch="x")
    repo.delete_branch("x")
    garbage = sorted(set(repo.objects.iter_ids()) - expected_reachable(repo))
    assert len(garbage) == 4  # x's chunk, manifest, tree and commit
    res = repo.gc()
    assert res.removed == 0 and res.recent == len(garbage) and res.freed == 0
    assert all(object_file(repo, o).exists() for o in garbage)

    # An old object is removed only if no kept (recent) object names it: the side
    # commit past the grace period goes, its tree (recent) and what that names stay.
    now = time.time()
    set_mtime(repo, side.id, now - GRACE_S - 60)  # past the grace period
    tree = read_commit(repo.objects, side.id).tree
    set_mtime(repo, tree, now - GRACE_S + 60)  # not yet
    res = repo.gc()
    assert res.removed_ids == (side.id,)
    assert res.recent == len(garbage) - 1
    assert not object_file(repo, side.id).exists()
    # Once the tree is old too, it and everything only it named go.
    for oid in garbage:
        if object_file(repo, oid).exists():
            set_mtime(repo, oid, now - GRACE_S - 60)
    res = repo.gc()
    assert sorted(res.removed_ids) == sorted(set(garbage) - {side.id})
    assert res.recent == 0


def test_grace_period_is_the_one_given(work: Path, rng: np.random.Generator) -> None:
    repo = Repository.init(work / "r")
    repo.commit_state_dict({"w": random_tensor(rng, DTYPES[0], (16, 16))}, message="root")
    garbage = put_garbage(repo, rng)
    set_mtime(repo, garbage, time.time() - 600)
    assert repo.gc(grace_s=900).removed == 0
    assert repo.gc(grace_s=300).removed_ids == (garbage,)


def test_a_running_writer_spares_what_was_modified_after_it_started(
    work: Path, rng: np.random.Generator
) -> None:
    repo = Repository.init(work / "r")
    repo.commit_state_dict({"w": random_tensor(rng, DTYPES[0], (16, 16))}, message="root")
    during, before, fresh = (put_garbage(repo, rng) for _ in range(3))
    with running(repo.dir):
        (announced,) = [p for p in (repo.dir / RUNNING_DIR).iterdir()]
        started = float(announced.read_text())
        set_mtime(repo, during, started)  # written while the writer runs
        set_mtime(repo, before, started - 30)  # older than the writer
        res = repo.gc(grace_s=0)
        assert res.removed_ids == (before,)
        assert res.recent == 2  # `during` and `fresh`
        assert announced.exists()
    assert not (repo.dir / RUNNING_DIR / announced.name).exists()
    res = repo.gc(grace_s=0)
    assert set(res.removed_ids) == {during, fresh}


def test_a_writer_in_another_process_protects_until_it_dies(
    work: Path, rng: np.random.Generator
) -> None:
    repo = Repository.init(work / "r")
    repo.commit_state_dict({"w": random_tensor(rng, DTYPES[0], (16, 16))}, message="root")
    late = put_garbage(repo, rng)
    code = (
        "import sys; from pathlib import Path; from wvc.ops._running import running\n"
        "with running(Path(sys.argv[1])):\n"
        "    print('ready', flush=True); sys.stdin.read()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(repo.dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        (announced,) = list((repo.dir / RUNNING_DIR).iterdir())
        started = float(announced.read_text())
        set_mtime(repo, late, started)
        res = repo.gc(grace_s=0)
        assert res.removed == 0 and res.recent == 1
    finally:
        proc.kill()  # no cleanup: the file stays, the kernel drops the lock
        proc.wait()
    assert announced.exists()
    res = repo.gc(grace_s=0)
    assert res.removed_ids == (late,)
    assert not announced.exists()


def test_a_stale_running_file_is_removed_and_protects_nothing(
    work: Path, rng: np.random.Generator
) -> None:
    repo = Repository.init(work / "r")
    repo.commit_state_dict({"w": random_tensor(rng, DTYPES[0], (16, 16))}, message="root")
    old = put_garbage(repo, rng)
    set_mtime(repo, old, time.time() - 100)
    stale = repo.dir / RUNNING_DIR / "999999-0123456789abcdef"
    stale.parent.mkdir(exist_ok=True)
    stale.write_text(repr(time.time() - 1000))  # would protect `old` if it were honoured
    res = repo.gc(grace_s=0)
    assert res.removed_ids == (old,)
    assert not stale.exists()


def test_commit_reusing_an_object_gc_removed_fails_and_publishes_nothing(
    work: Path, rng: np.random.Generator
) -> None:
    repo = Repository.init(work / "r")
    w0 = random_tensor(rng, DTYPES[0], (32, 32))
    root = repo.commit_state_dict({"w": w0}, message="root")
    w1 = random_tensor(rng, DTYPES[0], (32, 32))
    repo.commit_state_dict({"w": w1}, message="side", branch="x")
    commit = read_commit(repo.objects, repo.resolve("x"))
    (entry,) = read_tree(repo.objects, commit.tree).entries
    manifest = read_file_manifest(repo.objects, entry.manifest)
    chunk = tensor_chunk(repo, "x", "w")
    repo.delete_branch("x")

    # A commit of w1 finds its chunk stored (and touches it) ...
    codec, param = codec_for(DType.F32)
    put = repo.objects.put(w1.tobytes(), ObjectKind.CHUNK, codec, param)
    assert put.id == chunk and not put.new
    # ... but gc read its mtime before the touch, and removes it (with the side commit
    # that named it: a recent commit would keep the objects it names).
    for oid in repo.objects.iter_ids():
        set_mtime(repo, oid, time.time() - 2 * GRACE_S)
    assert chunk in repo.gc().removed_ids
    commits_before = commit_ids(repo)
    with pytest.raises(ObjectRemovedError) as err:
        record_commit(repo, [(entry.path, entry.format, manifest)], [put], "reuse", {}, Target())
    assert err.value.object_id == chunk
    assert err.value.exit_code == 7
    assert repo.resolve("HEAD") == root.id
    assert commit_ids(repo) == commits_before
    # Running it again stores the chunk afresh.
    again = repo.commit_state_dict({"w": w1}, message="again")
    assert again.parents == (root.id,)
    assert_bit_exact(repo.load(again.id), {"w": w1})


def test_gc_of_a_partial_clone_keeps_everything_and_restores(
    work: Path, rng: np.random.Generator
) -> None:
    a = Repository.init(work / "a")
    state = {
        "enc": random_tensor(rng, DTYPES[0], (32, 32)),
        "dec": random_tensor(rng, DTYPES[1], (32, 32)),
    }
    a.commit_state_dict(state)
    state = {n: flip_bits(rng, t, 2) for n, t in state.items()}
    a.commit_state_dict(state)
    a.add_remote("origin", str(work / "remote"))
    a.push("origin")
    b = Repository.clone(str(work / "remote"), work / "b", tensors=["enc"])
    held = set(b.objects.iter_ids())
    res = b.gc(grace_s=0)
    assert res.removed == 0
    assert set(b.objects.iter_ids()) == held
    a.restore("main", work / "a-out")
    b.restore("main", work / "b-out")
    assert_same_tree(work / "a-out", work / "b-out")


def test_cli_gc_dry_run_json_then_gc(work: Path, rng: np.random.Generator, run_wvc: RunWvc) -> None:
    repo = Repository.init(work / "r")
    repo.commit_state_dict({"w": random_tensor(rng, DTYPES[0], (32, 32))}, message="root")
    repo.commit_state_dict({"w": random_tensor(rng, DTYPES[0], (32, 32))}, branch="x")
    repo.delete_branch("x")
    long_ago = time.time() - 2 * GRACE_S
    for oid in repo.objects.iter_ids():
        set_mtime(repo, oid, long_ago)
    before = sizes(repo)
    garbage = set(before) - expected_reachable(repo)
    assert garbage

    proc = run_wvc("gc", "--dry-run", "--json", cwd=repo.root)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["dry_run"] is True
    assert set(out["removed_ids"]) == garbage and out["removed"] == len(garbage)
    assert out["freed"] == sum(before[o] for o in garbage)
    assert sizes(repo) == before

    proc = run_wvc("gc", cwd=repo.root)
    assert proc.returncode == 0, proc.stderr
    assert f"removed {len(garbage)} object(s)" in proc.stdout
    assert set(repo.objects.iter_ids()) == set(before) - garbage
    with repo.index.read() as conn:
        assert conn.execute(select(func.count()).select_from(objects_table)).scalar() == len(
            set(before) - garbage
        )
