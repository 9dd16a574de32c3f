"""Integrity: corrupt and missing objects are caught, malformed inputs change
nothing, a killed commit leaves a consistent repository, and concurrent
committers all land on one linear history."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import signal
import stat
import struct
import time
from collections.abc import Callable
from pathlib import Path

import blake3
import ml_dtypes
import numpy as np
import pytest

from wvc.demo import write_safetensors
from wvc.errors import CorruptObjectError, MalformedFileError, MissingObjectError
from wvc.ingest import DEFAULT_CHUNK_SIZE
from wvc.objects import HEADER_SIZE
from wvc.ops._read import read_commit, read_tree
from wvc.ops.fsck import ProblemKind
from wvc.repository import Repository

# --- helpers -----------------------------------------------------------------------


def object_path(repo: Repository, oid: str) -> Path:
    return repo.dir / "objects" / oid[:2] / oid[2:]


def object_files(repo: Repository) -> set[str]:
    root = repo.dir / "objects"
    return {p.parent.name + p.name for p in root.glob("*/*") if p.is_file()}


def flip_byte(path: Path, offset: int) -> None:
    os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x5A
    path.write_bytes(bytes(data))


def chunk_id(data: bytes) -> str:
    return blake3.blake3(data).hexdigest()


def repo_state(repo: Repository) -> tuple[object, ...]:
    return (
        repo.head(),
        [(b.name, b.target) for b in repo.branches()],
        [(t.name, t.target) for t in repo.tags()],
        [e.id for e in repo.log()] if repo.head().target else [],
        repo.stats().objects,
    )


@pytest.fixture
def corrupt_setup(repo: Repository, tmp_path: Path) -> tuple[Repository, Path, str]:
    """A commit of a small file and a 10 MiB random file; returns the id of the
    random file's second chunk (which is not shared with anything else)."""
    rng = np.random.default_rng(7)
    ck = tmp_path / "ck"
    ck.mkdir()
    (ck / "a.txt").write_text("small file restored before the big one\n")
    big = rng.bytes(2 * DEFAULT_CHUNK_SIZE + 2 * 1024 * 1024)
    (ck / "big.bin").write_bytes(big)
    repo.commit(ck, "with big file")
    oid = chunk_id(big[DEFAULT_CHUNK_SIZE : 2 * DEFAULT_CHUNK_SIZE])
    assert object_path(repo, oid).is_file()
    assert repo.fsck().ok
    return repo, ck, oid


# --- corrupt and missing objects ---------------------------------------------------


@pytest.mark.parametrize("where", ["payload", "header-magic", "header-length", "truncate"])
def test_corrupt_chunk_detected_everywhere(
    corrupt_setup: tuple[Repository, Path, str], tmp_path: Path, where: str, run_wvc
) -> None:
    repo, _ck, oid = corrupt_setup
    path = object_path(repo, oid)
    if where == "payload":
        flip_byte(path, HEADER_SIZE + 123_456)
    elif where == "header-magic":
        flip_byte(path, 0)
    elif where == "header-length":
        flip_byte(path, 8)  # raw length field
    else:
        os.chmod(path, stat.S_IRUSR | stat.S_IWUSR)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])

    res = repo.fsck()
    assert not res.ok
    hits = [p for p in res.problems if p.object == oid]
    assert hits, res.problems
    assert any(p.kind is ProblemKind.CORRUPT_OBJECT for p in hits)
    assert all(oid in p.message for p in hits)
    # Only the damaged object is blamed.
    assert {p.object for p in res.problems} == {oid}

    before = sorted(os.listdir(tmp_path))
    target = tmp_path / "restored"
    with pytest.raises(CorruptObjectError) as ei:
        repo.restore("HEAD", target)
    assert ei.value.object_id == oid
    assert oid in str(ei.value)
    assert "big.bin" in str(ei.value)  # the file that needed it
    assert "\n" not in str(ei.value)
    assert not target.exists()
    assert sorted(os.listdir(tmp_path)) == before  # no staging directory left behind

    # Into an existing empty directory: it stays empty.
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CorruptObjectError):
        repo.restore("HEAD", empty)
    assert os.listdir(empty) == []
    assert sorted(os.listdir(tmp_path)) == sorted([*before, "empty"])

    # Files that do not need the damaged chunk still restore.
    repo.restore("HEAD", tmp_path / "partial", paths=["a.txt"])
    assert (tmp_path / "partial" / "a.txt").is_file()

    proc = run_wvc("fsck", cwd=repo.root)
    assert proc.returncode == 6, proc
    assert oid in proc.stdout
    proc = run_wvc("restore", "HEAD", "--to", tmp_path / "cli-out", cwd=repo.root)
    assert proc.returncode == 6, proc
    assert proc.stderr.startswith("wvc: error: corrupt object " + oid)
    assert proc.stderr.count("\n") == 1
    assert not (tmp_path / "cli-out").exists()


def test_corrupt_tensor_chunk_fails_load(repo: Repository, tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    w = rng.standard_normal((512, 1024), dtype=np.float32)  # 2 MiB: one chunk
    ck = tmp_path / "ck"
    ck.mkdir()
    write_safetensors(ck / "m.safetensors", {"w": w, "b": np.ones(3, np.float32)})
    repo.commit(ck)
    oid = chunk_id(w.tobytes())
    flip_byte(object_path(repo, oid), HEADER_SIZE + 10)
    with pytest.raises(CorruptObjectError) as ei:
        repo.load()
    assert ei.value.object_id == oid
    assert "m.safetensors" in str(ei.value)
    assert not repo.fsck().ok


def test_corrupt_tree_and_commit_objects(repo: Repository, tmp_path: Path) -> None:
    cid = repo.commit_tensors({"x": np.arange(10, dtype=np.int32)}).id
    tree = read_commit(repo.objects, cid).tree
    flip_byte(object_path(repo, tree), HEADER_SIZE + 2)
    with pytest.raises(CorruptObjectError) as ei:
        repo.restore("HEAD", tmp_path / "out")
    assert ei.value.object_id == tree
    assert not (tmp_path / "out").exists()
    with pytest.raises(CorruptObjectError):
        repo.show()
    flip_byte(object_path(repo, cid), HEADER_SIZE + 2)
    with pytest.raises(CorruptObjectError) as ei:
        repo.load()
    assert ei.value.object_id == cid
    problems = {p.object for p in repo.fsck().problems}
    assert {tree, cid} <= problems
    # log reads only the index and keeps working, so the user can find other commits.
    assert [e.id for e in repo.log()] == [cid]


def test_missing_chunk(
    corrupt_setup: tuple[Repository, Path, str], tmp_path: Path, run_wvc
) -> None:
    repo, _ck, oid = corrupt_setup
    object_path(repo, oid).unlink()
    with pytest.raises(MissingObjectError) as ei:
        repo.restore("HEAD", tmp_path / "out")
    assert ei.value.object_id == oid
    assert oid in str(ei.value)
    assert isinstance(ei.value, CorruptObjectError.__mro__[1])  # an IntegrityError
    assert not (tmp_path / "out").exists()
    res = repo.fsck()
    kinds = {(p.kind, p.object) for p in res.problems}
    assert (ProblemKind.MISSING_OBJECT, oid) in kinds
    proc = run_wvc("fsck", "--json", cwd=repo.root)
    assert proc.returncode == 6
    report = json.loads(proc.stdout)
    assert report["ok"] is False
    assert any(p["object"] == oid and p["kind"] == "missing-object" for p in report["problems"])


def test_missing_tensor_chunk_fails_load(repo: Repository) -> None:
    w = np.random.default_rng(5).standard_normal(1000, dtype=np.float32)
    repo.commit_tensors({"w": w})
    oid = chunk_id(w.tobytes())
    object_path(repo, oid).unlink()
    with pytest.raises(MissingObjectError) as ei:
        repo.load()
    assert ei.value.object_id == oid


def test_fsck_clean_repository_counts(repo: Repository, tmp_path: Path) -> None:
    ck = tmp_path / "ck"
    ck.mkdir()
    (ck / "x.bin").write_bytes(b"x" * 100)
    repo.commit(ck)
    repo.commit(ck)
    res = repo.fsck()
    assert res.ok
    assert res.commits_checked == 2
    assert res.objects_checked == len(object_files(repo))
    assert res.dangling == 0
    # An unreferenced (but valid) object is allowed and counted.
    from wvc.codecs import CodecId, get_codec
    from wvc.objects import ObjectKind

    repo.objects.put(b"orphan bytes", ObjectKind.CHUNK, get_codec(CodecId.ZSTD))
    res2 = repo.fsck()
    assert res2.ok
    assert res2.dangling == 1


# --- malformed safetensors -----------------------------------------------------------


def st_file(
    header: bytes | dict[str, object], data: bytes = b"", length: int | None = None
) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    n = len(raw) if length is None else length
    return struct.pack("<Q", n) + raw + data


GOOD_ENTRY = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}

MALFORMED = {
    "too-small": b"\x01\x02\x03",
    "empty": b"",
    "length-past-end": st_file({"w": GOOD_ENTRY}, b"\0" * 8, length=10_000),
    "length-over-limit": struct.pack("<Q", 2**40) + b"{}",
    "not-json": st_file(b"{this is not json}"),
    "not-utf8": st_file(b'{"\xff\xfe": 1}'),
    "not-object": st_file(b"[1, 2, 3]"),
    "unknown-dtype": st_file(
        {"w": {"dtype": "F128", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8
    ),
    "shape-mismatch": st_file(
        {"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8
    ),
    "negative-shape": st_file(
        {"w": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, b"\0" * 8
    ),
    "bad-offsets": st_file(
        {"w": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}}, b"\0" * 8
    ),
    "missing-dtype": st_file({"w": {"shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8),
    "overlap": st_file(
        {"a": GOOD_ENTRY, "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, b"\0" * 12
    ),
    "hole": st_file(
        {"a": GOOD_ENTRY, "b": {"dtype": "F32", "shape": [1], "data_offsets": [12, 16]}}, b"\0" * 16
    ),
    "trailing-bytes": st_file({"w": GOOD_ENTRY}, b"\0" * 9),
    "data-past-end": st_file({"w": GOOD_ENTRY}, b"\0" * 4),
    "duplicate-key": st_file(
        b'{"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, '
        b'"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}',
        b"\0" * 8,
    ),
    "bad-metadata": st_file({"__metadata__": {"k": 1}, "w": GOOD_ENTRY}, b"\0" * 8),
    "entry-not-object": st_file({"w": [1, 2]}, b"\0" * 8),
}


@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_malformed_safetensors_refused_and_repo_unchanged(
    repo: Repository, tmp_path: Path, kind: str
) -> None:
    base = tmp_path / "base"
    base.mkdir()
    write_safetensors(base / "ok.safetensors", {"w": np.arange(4, dtype=np.float32)})
    repo.commit(base, "base")
    repo.tag("t0")
    before_state = repo_state(repo)
    before_objects = object_files(repo)

    ck = tmp_path / "ck"
    ck.mkdir()
    big = np.random.default_rng(1).standard_normal(300_000, dtype=np.float32)
    write_safetensors(ck / "a_good.safetensors", {"big": big})
    bad = ck / "model.safetensors"
    bad.write_bytes(MALFORMED[kind])
    with pytest.raises(MalformedFileError) as ei:
        repo.commit(ck, "should fail")
    msg = str(ei.value)
    assert "\n" not in msg
    assert str(bad) in msg
    assert "malformed safetensors" in msg
    assert ei.value.path == str(bad)

    assert repo_state(repo) == before_state
    res = repo.fsck()
    assert res.ok
    new_objects = object_files(repo) - before_objects
    assert res.dangling == len(new_objects)  # anything new is unreferenced

    # --opaque stores it as plain bytes.
    r = repo.commit(ck, "opaque", opaque=True)
    assert r.tensors == 0
    assert {f.path: f.format for f in repo.show().files} == {
        "a_good.safetensors": "opaque",
        "model.safetensors": "opaque",
    }
    repo.restore("HEAD", tmp_path / "out")
    assert (tmp_path / "out" / "model.safetensors").read_bytes() == MALFORMED[kind]
    assert repo.fsck().ok


def test_malformed_single_file_commit_names_file(repo: Repository, tmp_path: Path) -> None:
    bad = tmp_path / "weights.safetensors"
    bad.write_bytes(MALFORMED["trailing-bytes"])
    with pytest.raises(MalformedFileError) as ei:
        repo.commit([bad])
    assert str(bad) in str(ei.value)
    assert "after the last tensor" in str(ei.value)
    assert repo.head().target is None
    assert object_files(repo) == set()


# --- interrupted commit -------------------------------------------------------------

BIG_TENSORS = 50
BIG_TENSOR_BYTES = 4 * 1024 * 1024  # 50 x 4 MiB = 200 MiB


def write_big_checkpoint(directory: Path, seed: int) -> int:
    """~200 MiB of random bf16 tensors plus an opaque file; returns its total size."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {
        f"layers.{i}.weight": np.frombuffer(
            rng.bytes(BIG_TENSOR_BYTES), dtype=ml_dtypes.bfloat16
        ).reshape(1024, -1)
        for i in range(BIG_TENSORS)
    }
    write_safetensors(directory / "model.safetensors", tensors)
    (directory / "optimizer.bin").write_bytes(rng.bytes(1_000_003))
    return sum(p.stat().st_size for p in directory.iterdir())


def dir_bytes(path: Path) -> int:
    total = 0
    for dirpath, _dirs, names in os.walk(path):
        for n in names:
            with contextlib.suppress(FileNotFoundError):  # renamed away meanwhile
                total += os.lstat(os.path.join(dirpath, n)).st_size
    return total


def kill_when(proc, trigger: Callable[[], bool], timeout: float = 60) -> bool:
    """SIGKILL ``proc`` as soon as ``trigger()`` holds; False if it exited first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if trigger():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.005)
    proc.kill()
    proc.wait()
    raise AssertionError("commit neither finished nor reached the kill point")


def test_interrupted_commit_leaves_consistent_repository(
    tmp_path: Path, start_wvc, run_wvc, same_tree
) -> None:
    root = tmp_path / "repo"
    with Repository.init(root) as repo:
        earlier = []
        for i in range(2):
            ck = tmp_path / f"early{i}"
            ck.mkdir()
            rng = np.random.default_rng(100 + i)
            write_safetensors(
                ck / "model.safetensors",
                {"w": rng.standard_normal((256, 256), dtype=np.float32), "step": np.array(i)},
            )
            (ck / "notes.txt").write_text(f"early commit {i}\n")
            earlier.append((repo.commit(ck, f"early {i}").id, ck))

    rnd = random.Random(2024)
    objects_dir = root / ".wvc"
    # (kind, value): "delay" kills after that many seconds; "stored" kills once
    # that fraction of the checkpoint has been written into the repository.
    plan = [
        ("delay", 0.0),
        ("delay", rnd.uniform(0.25, 0.6)),
        ("stored", 0.3),
        ("stored", 0.97),
        ("delay", rnd.uniform(0.5, 1.5)),
    ]
    big = tmp_path / "big"
    completed: list[tuple[str, int]] = []
    for it, (kind, value) in enumerate(plan):
        size = write_big_checkpoint(big, seed=it)
        start_bytes = dir_bytes(objects_dir)
        t0 = time.monotonic()
        proc = start_wvc("commit", big, "-m", f"big {it}", "-q", cwd=root)
        if kind == "delay":
            killed = kill_when(proc, lambda v=value, t=t0: time.monotonic() - t >= v)
        else:
            killed = kill_when(
                proc, lambda v=value, s=start_bytes, n=size: dir_bytes(objects_dir) - s >= v * n
            )
        if not killed:
            assert proc.returncode == 0, proc.stderr.read()

        with Repository.open(root) as repo:
            res = repo.fsck()
            assert res.ok, (it, kind, value, res.problems)
            ids = [e.id for e in repo.log()]
            known = [c for c, _ in completed[::-1]] + [c for c, _ in earlier[::-1]]
            # Either the commit landed completely (and is HEAD) or not at all.
            if ids != known:
                assert ids[1:] == known, (it, kind, value)
                assert repo.log()[0].message == f"big {it}"
                completed.append((ids[0], it))
                out = tmp_path / f"restored-big-{it}"
                repo.restore(ids[0], out)
                same_tree(big, out)
            for cid, ck in earlier:
                out = tmp_path / f"restored-{cid[:8]}-{it}"
                repo.restore(cid, out)
                same_tree(ck, out)
    # Most plans must really have interrupted the commit.
    assert len(completed) <= 2, completed

    # A new commit of the last checkpoint works and restores byte for byte.
    proc = run_wvc("commit", big, "-m", "after crashes", "--json", cwd=root, check=True)
    new = json.loads(proc.stdout)
    with Repository.open(root) as repo:
        assert repo.resolve("HEAD") == new["id"]
        assert repo.log()[1].id == (completed[-1][0] if completed else earlier[-1][0])
        repo.restore("HEAD", tmp_path / "final")
        same_tree(big, tmp_path / "final")
        assert repo.fsck().ok


# --- concurrent commits -------------------------------------------------------------


def test_concurrent_commits_all_land_linearly(tmp_path: Path, start_wvc, same_tree) -> None:
    root = tmp_path / "repo"
    rng = np.random.default_rng(11)
    shared = rng.standard_normal(4 * 1024 * 1024, dtype=np.float32)  # 16 MiB, in every ckpt
    with Repository.init(root) as repo:
        base = tmp_path / "base"
        base.mkdir()
        (base / "x.txt").write_text("base")
        base_id = repo.commit(base, "base").id

    n = 4
    cks = []
    for i in range(n):
        ck = tmp_path / f"ck{i}"
        ck.mkdir()
        write_safetensors(
            ck / "model.safetensors",
            {"shared": shared, "own": rng.standard_normal(2 * 1024 * 1024, dtype=np.float32)},
        )
        (ck / "id.txt").write_text(f"writer {i}\n")
        cks.append(ck)
    procs = [
        start_wvc("commit", ck, "-m", f"writer {i}", "--json", cwd=root) for i, ck in enumerate(cks)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (_out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err.decode()
    results = [json.loads(out) for out, _ in outs]

    with Repository.open(root) as repo:
        log = repo.log()
        assert len(log) == n + 1
        assert {e.message for e in log} == {f"writer {i}" for i in range(n)} | {"base"}
        assert log[-1].id == base_id
        for newer, older in itertools.pairwise(log):
            assert newer.parents == (older.id,)  # linear: nobody's commit was lost
        assert {r["id"] for r in results} == {e.id for e in log[:-1]}
        assert repo.resolve("main") == log[0].id
        for r in results:
            assert len(r["parents"]) == 1
        assert repo.fsck().ok
        by_msg = {e.message: e.id for e in log}
        for i, ck in enumerate(cks):
            out = tmp_path / f"out{i}"
            repo.restore(by_msg[f"writer {i}"], out)
            same_tree(ck, out)
        # The shared tensor is stored once.
        st = repo.stats()
        assert st.unique_size < shared.nbytes + n * 8 * 1024 * 1024 + 1024 * 1024


# --- files that change while they are committed ------------------------------------


def changing_checkpoint(ck: Path) -> None:
    """a.safetensors has 40 tensors (40+ chunks, so many progress callbacks) and is
    read before b.bin."""
    ck.mkdir()
    write_safetensors(
        ck / "a.safetensors", {f"t{i}": np.full(256, i, np.float32) for i in range(40)}
    )
    (ck / "b.bin").write_bytes(b"b" * 1000)


def _overwrite_tail(ck: Path) -> None:
    with open(ck / "a.safetensors", "r+b") as f:
        f.seek(-4, os.SEEK_END)
        f.write(b"XXXX")


def _append(ck: Path) -> None:
    with open(ck / "a.safetensors", "ab") as f:
        f.write(b"more")


def _replace(ck: Path) -> None:
    os.replace(ck / "b.bin", ck / "old-b.bin")
    (ck / "b.bin").write_bytes(b"c" * 1000)


def _delete(ck: Path) -> None:
    (ck / "b.bin").unlink()


def _truncate(ck: Path) -> None:
    os.truncate(ck / "a.safetensors", 100)


CHANGES = {
    "overwrite-in-place": (_overwrite_tail, "a.safetensors"),
    "append": (_append, "a.safetensors"),
    "replace-other-file": (_replace, "b.bin"),
    "delete-other-file": (_delete, "b.bin"),
    "truncate": (_truncate, "a.safetensors"),
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_file_changed_during_commit_is_refused(
    repo: Repository, tmp_path: Path, change: str
) -> None:
    """docs/design.md: a file whose size, mtime or inode changes while wvc reads it
    fails the commit (a WvcError naming the file) and nothing is published."""
    from wvc.errors import WvcError

    ck = tmp_path / "ck"
    changing_checkpoint(ck)
    mutate, culprit = CHANGES[change]
    calls: list[int] = []

    def progress(n: int) -> None:
        calls.append(n)
        if len(calls) == 1:
            mutate(ck)

    with pytest.raises(WvcError) as ei:
        repo.commit(ck, "changing", progress=progress)
    assert calls, "progress was never called"
    assert culprit in str(ei.value)
    assert "\n" not in str(ei.value)
    assert repo.head().target is None
    assert repo.fsck().ok


def test_stale_temp_files_swept_by_commit(repo: Repository, tmp_path: Path) -> None:
    """docs/design.md: each commit deletes files in tmp/ older than one hour."""
    old = repo.tmp_dir / "killed-writer.tmp"
    fresh = repo.tmp_dir / "live-writer.tmp"
    old.write_bytes(b"x" * 100)
    fresh.write_bytes(b"y")
    two_hours_ago = time.time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))
    ck = tmp_path / "ck"
    ck.mkdir()
    (ck / "f.bin").write_bytes(b"data")
    repo.commit(ck)
    assert not old.exists()
    assert fresh.exists()


def test_stale_temp_files_swept_by_commit_tensors(repo: Repository) -> None:
    old = repo.tmp_dir / "killed-writer.tmp"
    old.write_bytes(b"x" * 100)
    two_hours_ago = time.time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))
    repo.commit_tensors({"w": np.zeros(4, np.float32)})
    assert not old.exists()


# --- fsck checks the index against the objects ---------------------------------------


def _sql(repo: Repository, statement: str, *params: object) -> None:
    import sqlite3

    repo.index.close()  # no pooled connection holds anything
    con = sqlite3.connect(repo.dir / "wvc.db")
    try:
        with con:
            con.execute(statement, params)
    finally:
        con.close()


@pytest.mark.parametrize(
    "tamper, kind",
    [
        ("message", ProblemKind.INDEX_MISMATCH),
        ("meta", ProblemKind.INDEX_MISMATCH),
        ("tree-row", ProblemKind.INDEX_MISMATCH),
        ("stored-size", ProblemKind.INDEX_MISMATCH),
        ("branch-target", ProblemKind.BAD_REF),
        ("tag-target", ProblemKind.BAD_REF),
        ("parent", ProblemKind.INDEX_MISMATCH),
        ("tensor-shape", ProblemKind.INDEX_MISMATCH),
        ("tree-row-size", ProblemKind.INDEX_MISMATCH),
    ],
)
def test_fsck_detects_index_tampering(
    repo: Repository, tmp_path: Path, tamper: str, kind: ProblemKind, run_wvc
) -> None:
    repo.commit_tensors({"w": np.arange(8, dtype=np.float32)}, message="one")
    cid = repo.commit_tensors(
        {"w": np.arange(9, dtype=np.float32)}, message="two", meta={"a": 1}
    ).id
    repo.tag("t", cid)
    assert repo.fsck().ok
    bogus = "ab" * 32
    tree = read_commit(repo.objects, cid).tree
    blamed = cid
    if tamper == "message":
        _sql(repo, "UPDATE commits SET message = 'rewritten' WHERE id = ?", cid)
    elif tamper == "meta":
        _sql(repo, """UPDATE commits SET meta = '{"a":2}' WHERE id = ?""", cid)
    elif tamper == "tree-row":
        _sql(repo, "DELETE FROM tree_files WHERE tree = ?", tree)
        blamed = tree
    elif tamper == "stored-size":
        _sql(repo, "UPDATE objects SET stored_size = stored_size + 1 WHERE id = ?", cid)
    elif tamper == "branch-target":
        _sql(repo, "UPDATE refs SET target = ? WHERE name = 'refs/heads/main'", bogus)
        blamed = bogus
    elif tamper == "tag-target":
        _sql(repo, "UPDATE refs SET target = ? WHERE name = 'refs/tags/t'", bogus)
        blamed = bogus
    elif tamper == "parent":
        _sql(repo, 'DELETE FROM commit_parents WHERE "commit" = ?', cid)
    elif tamper == "tensor-shape":
        manifest = read_tree(repo.objects, tree).entries[0].manifest
        _sql(repo, "UPDATE tensors SET shape = '[3, 3]' WHERE manifest = ?", manifest)
        blamed = manifest
    elif tamper == "tree-row-size":
        _sql(repo, "UPDATE tree_files SET size = size + 1 WHERE tree = ?", tree)
        blamed = tree
    res = repo.fsck()
    assert not res.ok
    assert (kind, blamed) in {(p.kind, p.object) for p in res.problems}, res.problems
    assert run_wvc("fsck", cwd=repo.root).returncode == 6


def test_schema_version_checked(tmp_path: Path) -> None:
    from wvc.errors import UnsupportedFormatVersionError

    with Repository.init(tmp_path) as r:
        _sql(r, "UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    with pytest.raises(UnsupportedFormatVersionError) as ei:
        Repository.open(tmp_path)
    assert "wvc.db" in str(ei.value)
    assert "3" in str(ei.value)


def test_schema_1_is_upgraded_in_place(tmp_path: Path) -> None:
    """A database from before delta objects opens, gains the new columns, and keeps working."""
    weights = {"w": np.arange(4096, dtype=np.float32)}
    with Repository.init(tmp_path) as r:
        first = r.commit_state_dict(weights, message="old").id
        for statement in (
            "ALTER TABLE objects DROP COLUMN base",
            "ALTER TABLE commits DROP COLUMN new_raw_size",
            "ALTER TABLE commits DROP COLUMN delta_objects",
            "ALTER TABLE commits DROP COLUMN delta_raw_size",
            "ALTER TABLE commits DROP COLUMN delta_stored_size",
            "DROP TABLE stat_cache",
            "UPDATE meta SET value = '1' WHERE key = 'schema_version'",
        ):
            _sql(r, statement)
    with Repository.open(tmp_path) as r:
        assert r.index.schema_version() == 2
        weights["w"][7] += 1
        second = r.commit_state_dict(weights, message="new")
        assert second.parents == (first,)
        old, new = {c.id: c for c in r.stats().commits}[first], r.stats().commits[0]
        assert old.delta_objects is None and old.deduped_size is None  # unknown, not zero
        assert new.id == second.id and new.delta_objects == 1
        assert r.load(second.id)["w"].tobytes() == weights["w"].tobytes()
        assert r.fsck().ok


# --- readers, writers and interrupts -------------------------------------------------


def test_open_reader_does_not_block_a_writer(tmp_path: Path, run_wvc) -> None:
    """WAL: a long read transaction in one process does not block a commit in another."""
    from sqlalchemy import text

    root = tmp_path / "repo"
    ck = tmp_path / "ck"
    ck.mkdir()
    (ck / "a.bin").write_bytes(b"a")
    with Repository.init(root) as repo:
        first = repo.commit(ck, "first").id
        with repo.index.read() as conn:
            assert conn.execute(text("SELECT count(*) FROM commits")).scalar() == 1
            (ck / "a.bin").write_bytes(b"b")
            r = run_wvc("commit", ck, "-m", "second", cwd=root, timeout=30)
            assert r.returncode == 0, r.stderr
            # The reader's snapshot is unchanged inside its transaction.
            assert conn.execute(text("SELECT count(*) FROM commits")).scalar() == 1
        assert [e.message for e in repo.log()] == ["second", "first"]
        assert repo.log()[0].parents == (first,)


def test_sigint_during_commit_publishes_nothing(tmp_path: Path, start_wvc, run_wvc) -> None:
    root = tmp_path / "repo"
    small = tmp_path / "small"
    small.mkdir()
    (small / "s.bin").write_bytes(b"small")
    with Repository.init(root) as repo:
        first = repo.commit(small, "small").id
    big = tmp_path / "big"
    size = write_big_checkpoint(big, seed=99)
    objects_dir = root / ".wvc"
    start = dir_bytes(objects_dir)
    # A shell that runs pytest in the background leaves SIGINT ignored, and children
    # inherit that; give the child the default disposition so Python handles it.
    proc = start_wvc(
        "commit",
        big,
        "-m",
        "interrupted",
        cwd=root,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 60
    while dir_bytes(objects_dir) - start < 0.2 * size:
        assert proc.poll() is None, "commit finished before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err.decode()
    assert err.decode().strip().endswith("wvc: interrupted")
    with Repository.open(root) as repo:
        assert [e.id for e in repo.log()] == [first]
        assert repo.fsck().ok
    r = run_wvc("commit", big, "-m", "again", cwd=root)
    assert r.returncode == 0, r.stderr


def test_fsck_repair_then_recommit_heals_a_corrupt_chunk(repo: Repository, tmp_path: Path) -> None:
    ck = tmp_path / "ck"
    ck.mkdir()
    (ck / "data.bin").write_bytes(np.random.default_rng(3).bytes(100_000))
    repo.commit(ck, "one")
    chunk = next(
        oid for oid in repo.objects.iter_ids() if repo.objects.read_header(oid)[0].kind == 0
    )
    path = repo.dir / "objects" / chunk[:2] / chunk[2:]
    path.chmod(0o644)
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF
    path.write_bytes(raw)
    # Re-committing the same files does not heal it: the corrupt object looks present.
    repo.commit(ck, "two")
    assert not repo.fsck().ok
    res = repo.fsck(repair=True)
    assert res.removed == [chunk]
    assert not path.exists()
    repo.commit(ck, "three")  # writes the chunk afresh
    assert repo.fsck().ok
    out = tmp_path / "out"
    repo.restore("HEAD~2", out)  # the first commit restores again
    assert (out / "data.bin").read_bytes() == (ck / "data.bin").read_bytes()
