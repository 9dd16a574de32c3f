"""Remotes when things go wrong: interrupted and killed pushes, concurrent pushes to one
branch, damaged objects and refs on the remote, foreign formats, and stale or held locks.

Everything runs against real storage: a directory, memory:// and a real S3 endpoint
(moto's server on loopback). Faults are injected by wrapping wvc's own objects.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import (
    RemoteSpot,
    assert_same_tree,
    repo_with_history,
    small_model,
    write_checkpoint,
)
from sqlalchemy import select

import wvc.store._fsspec as fsspec_store_mod
import wvc.store._local as local_store_mod
from wvc.errors import (
    CorruptObjectError,
    PushRejectedError,
    RemoteError,
    StoreConflictError,
    StoreLockedError,
    WvcError,
)
from wvc.index import commits
from wvc.objects import HEADER_SIZE, ObjectHeader, ObjectKind, object_key
from wvc.ops.push import plan_push, update_refs, upload
from wvc.remote.remote import Remote, open_store
from wvc.repository import Repository
from wvc.store import FsspecStore, LocalStore, Store
from wvc.store._lease import LEASE_S, is_stale, lease_lock

MAIN = "refs/heads/main"


# --- helpers ---------------------------------------


def _add(repo: Repository, spot: RemoteSpot, name: str = "origin") -> None:
    repo.add_remote(name, spot.url, spot.options)


def _memory_spot() -> RemoteSpot:
    return RemoteSpot("memory", f"memory://wvc-tests/{uuid.uuid4().hex}", {})


def _remote(spot: RemoteSpot) -> Remote:
    return Remote.open(spot.url, spot.options)


def _clone(spot: RemoteSpot, path: Path, **kwargs: Any) -> Repository:
    return Repository.clone(spot.url, path, options=spot.options, **kwargs)


def _overwrite(spot: RemoteSpot, key: str, data: bytes) -> None:
    """Replace the value under ``key`` on the remote, bypassing wvc (``put`` keeps old values)."""
    store = _remote(spot).store
    if isinstance(store, LocalStore):
        path = store.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            path.chmod(0o644)  # object files are written read-only
        path.write_bytes(data)
    else:
        assert isinstance(store, FsspecStore)
        store.fs.pipe_file(store._path(key), data)
        store.fs.invalidate_cache()


def _remote_objects(spot: RemoteSpot) -> dict[str, ObjectKind]:
    """Every object on the remote: id → kind (from its header)."""
    store = _remote(spot).store
    out = {}
    for key in store.list_prefix("objects/"):
        oid = key.removeprefix("objects/").replace("/", "")
        out[oid] = ObjectHeader.unpack(store.get_prefix(key, HEADER_SIZE), oid).kind
    return out


def _indexed_commits(repo: Repository) -> set[str]:
    with repo.index.read() as conn:
        return {r.id for r in conn.execute(select(commits.c.id))}


def _tracking(repo: Repository) -> dict[str, str]:
    (info,) = repo.remotes()
    return info.branches


@contextlib.contextmanager
def _failing(method: str, after: int) -> Iterator[list[str]]:
    """Every call of ``Remote.<method>`` after the first ``after`` fails like a dropped
    connection (``put_object`` or ``get_object``: their first argument is an object id).

    Yields the ids whose calls went through. The error is raised inside the remote's
    backend guard, as a real backend failure would be.
    """
    real = getattr(Remote, method)
    lock = threading.Lock()
    tickets = iter(range(1 << 30))
    done: list[str] = []

    def flaky(self: Remote, oid: str, *args: Any) -> Any:
        with lock:
            ticket = next(tickets)
        if ticket >= after:
            with self._guard():
                raise ConnectionResetError("injected: connection reset by peer")
        result = real(self, oid, *args)
        with lock:
            done.append(oid)
        return result

    mp = pytest.MonkeyPatch()
    mp.setattr(Remote, method, flaky)
    try:
        yield done
    finally:
        mp.undo()


def _failing_uploads(after: int) -> contextlib.AbstractContextManager[list[str]]:
    return _failing("put_object", after)


# --- 1. interrupted pushes -----------------------------------------------------------------


def test_interrupted_push_moves_no_ref_and_rerun_sends_only_the_rest(
    tmp_path: Path, rng: np.random.Generator, remote_spot: RemoteSpot
) -> None:
    a, ck = repo_with_history(tmp_path, rng)
    _add(a, remote_spot)

    # A first push that dies after 3 objects (chunks go first, commits last).
    with _failing_uploads(after=3) as sent, pytest.raises(RemoteError, match="injected"):
        a.push("origin", jobs=2)
    assert len(sent) == 3
    remote = _remote(remote_spot)
    assert remote.read_ref(MAIN) is None
    assert remote.refs() == {}
    on_remote = _remote_objects(remote_spot)
    assert set(on_remote) == set(sent)
    assert set(on_remote.values()) == {ObjectKind.CHUNK}  # no commit names missing objects
    assert _tracking(a) == {}  # the local remote-tracking ref did not move either

    # Nobody can get a ref to the missing objects: a clone finds no branch at all.
    early = _clone(remote_spot, tmp_path / "early")
    assert early.branches() == []
    assert _indexed_commits(early) == set()
    assert early.fetch("origin").updates == ()

    # Re-run: only what is still missing travels.
    candidates = plan_push(a, "origin").objects
    again = a.push("origin")
    assert again.present == 3
    assert again.objects == len(candidates) - 3
    assert again.commits == 2
    assert remote.read_ref(MAIN) == a.resolve("main")
    assert set(_remote_objects(remote_spot)) == set(candidates)

    b = _clone(remote_spot, tmp_path / "b")
    for rev in ("main", "main~1"):
        a.restore(rev, tmp_path / f"a-{rev}")
        b.restore(rev, tmp_path / f"b-{rev}")
        assert_same_tree(tmp_path / f"a-{rev}", tmp_path / f"b-{rev}")
    assert_same_tree(ck, tmp_path / "b-main")
    assert b.fsck().ok

    # An interrupted incremental push leaves the branch where it was, fully usable.
    old = a.resolve("main")
    write_checkpoint(ck, {"model.safetensors": small_model(rng)})
    c3 = a.commit(ck, "three")
    with _failing_uploads(after=1) as sent, pytest.raises(RemoteError, match="injected"):
        a.push("origin", jobs=1)
    assert len(sent) == 1
    assert remote.read_ref(MAIN) == old
    assert a.resolve("origin/main") == old
    fetched = b.fetch("origin")
    assert fetched.up_to_date and b.resolve("origin/main") == old
    again = a.push("origin")
    assert (again.present, again.objects) == (1, c3.new_objects - 1)
    assert remote.read_ref(MAIN) == c3.id
    b.pull("origin")
    b.restore("main", tmp_path / "b-three")
    assert_same_tree(ck, tmp_path / "b-three")
    assert b.fsck().ok


def test_resumed_first_push_names_the_remote_head(tmp_path: Path, rng: np.random.Generator) -> None:
    # The first push creates the remote (its 'format' file) before uploading; when it is
    # interrupted, the re-run must still name the remote's HEAD, or a clone would check
    # out some other branch ("alpha" below) instead of the one first pushed ("dev").
    spot = RemoteSpot("dir", str(tmp_path / "remote"), {})
    a, _ = repo_with_history(tmp_path, rng)
    a.branch("dev")
    a.switch("dev")
    _add(a, spot)
    with _failing_uploads(after=0), pytest.raises(RemoteError, match="injected"):
        a.push("origin")
    a.push("origin")
    a.branch("alpha")
    a.push("origin", ["alpha"])
    b = _clone(spot, tmp_path / "b")
    assert b.head().branch == "dev"  # what a clone gets after an uninterrupted push
    assert _remote(spot).head_branch() == "dev"


def _poll_until_some_object(objects: Path, proc: Any, timeout: float = 60) -> bool:
    """True once a complete object file exists under ``objects``; False if ``proc`` ended."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        with contextlib.suppress(FileNotFoundError):
            for d in os.scandir(objects):
                if d.is_dir() and any(True for _ in os.scandir(d.path)):
                    return True
        time.sleep(0.001)
    raise AssertionError("push uploaded nothing within the timeout")


def test_killed_push_process_then_rerun(
    tmp_path: Path,
    rng: np.random.Generator,
    run_wvc: Callable[..., Any],
    start_wvc: Callable[..., Any],
) -> None:
    # 48 tensors of 1 MiB: each its own chunk, so the push is many separate uploads.
    ck = tmp_path / "ck"
    tensors = {
        f"layers.{i}.w": rng.standard_normal((512, 512)).astype(np.float32) for i in range(48)
    }
    write_checkpoint(ck, {"model.safetensors": tensors, "config.json": "{}"})
    work = tmp_path / "work"
    with Repository.init(work) as a:
        c = a.commit(ck, "big")
        a.add_remote("origin", str(tmp_path / "remote"))
    remote_dir = tmp_path / "remote"

    proc = start_wvc("push", "origin", "-j", "1", "-q", cwd=work)
    try:
        caught = _poll_until_some_object(remote_dir / "objects", proc)
    finally:
        proc.kill()
        out, err = proc.communicate(timeout=30)
    assert caught, f"the push ended before it could be killed: {out!r} {err!r}"
    assert proc.returncode == -signal.SIGKILL
    assert not (remote_dir / "refs" / "heads" / "main").exists()
    assert not (remote_dir / "refs" / "heads" / "main.lock").exists()
    spot = RemoteSpot("dir", str(remote_dir), {})
    before = set(_remote_objects(spot))
    assert 0 < len(before) < c.new_objects

    res = run_wvc("push", "origin", "--json", cwd=work, check=True)
    report = json.loads(res.stdout)
    assert report["present"] == len(before)
    assert report["objects"] == c.new_objects - len(before)
    assert report["updates"][0]["new"] == c.id

    b = _clone(spot, tmp_path / "b")
    b.restore("main", tmp_path / "out")
    assert_same_tree(ck, tmp_path / "out")


@pytest.mark.parametrize("remote_spot", ["dir", "memory"], indirect=True)
def test_interrupted_fetch_indexes_nothing_and_rerun_downloads_the_rest(
    tmp_path: Path, rng: np.random.Generator, remote_spot: RemoteSpot
) -> None:
    a, ck = repo_with_history(tmp_path, rng)
    _add(a, remote_spot)
    a.push("origin")
    total = len(_remote_objects(remote_spot))
    b = Repository.init(tmp_path / "b")
    _add(b, remote_spot)
    with _failing("get_object", after=6) as got, pytest.raises(RemoteError, match="injected"):
        b.fetch("origin", jobs=1)
    assert len(got) == 6
    assert _indexed_commits(b) == set() and _tracking(b) == {}
    assert set(b.objects.iter_ids()) == set(got)  # kept, verified, for the next run
    res = b.fetch("origin")
    assert (res.objects, res.commits) == (total - 6, 2)
    b.restore("origin/main", tmp_path / "out")
    assert_same_tree(ck, tmp_path / "out")
    assert b.fsck().ok


# --- 2. concurrent pushes to one branch --------------------------------------------------


def test_push_that_lost_the_race_is_rejected_not_lost(
    tmp_path: Path, rng: np.random.Generator, remote_spot: RemoteSpot
) -> None:
    base, _ = repo_with_history(tmp_path, rng)
    _add(base, remote_spot)
    base.push("origin")
    base_id = base.resolve("main")
    a = _clone(remote_spot, tmp_path / "A")
    b = _clone(remote_spot, tmp_path / "B")
    write_checkpoint(tmp_path / "ckA", {"model.safetensors": small_model(rng)})
    write_checkpoint(tmp_path / "ckB", {"model.safetensors": small_model(rng)})
    ca = a.commit(tmp_path / "ckA", "from A")
    cb = b.commit(tmp_path / "ckB", "from B")

    plan_a = plan_push(a, "origin")
    upload(a, plan_a)
    b.push("origin")  # B moves the branch while A is between upload and ref update
    with pytest.raises(PushRejectedError, match="fetch first") as info:
        update_refs(a, plan_a, "origin")
    assert info.value.ref == MAIN
    assert _remote(remote_spot).read_ref(MAIN) == cb.id  # B's update is not lost
    assert a.resolve("origin/main") == base_id  # A's tracking ref did not move

    # A push from scratch is refused the same way; after a fetch it is "not a fast-forward".
    with pytest.raises(PushRejectedError, match="fetch first"):
        a.push("origin")
    a.fetch("origin")
    with pytest.raises(PushRejectedError, match="not a fast-forward"):
        a.push("origin")
    assert _remote(remote_spot).read_ref(MAIN) == cb.id
    c = _clone(remote_spot, tmp_path / "C")
    assert c.resolve("main") == cb.id
    c.restore("main", tmp_path / "out")
    assert_same_tree(tmp_path / "ckB", tmp_path / "out")
    assert ca.id not in _indexed_commits(c)


@pytest.mark.parametrize("remote_spot", ["dir", "memory"], indirect=True)
def test_simultaneous_pushes_to_one_branch(
    tmp_path: Path, rng: np.random.Generator, remote_spot: RemoteSpot
) -> None:
    n = 4
    base, _ = repo_with_history(tmp_path, rng)
    _add(base, remote_spot)
    base.push("origin")
    base_id = base.resolve("main")
    shared = small_model(rng, n=2)  # a new file every pusher uploads at the same time
    repos, cks, ids = [], [], []
    for i in range(n):
        r = _clone(remote_spot, tmp_path / f"r{i}")
        ck = tmp_path / f"ck{i}"
        r.restore("main", ck)
        write_checkpoint(ck, {"model.safetensors": small_model(rng), "shared.safetensors": shared})
        ids.append(r.commit(ck, f"from {i}").id)
        repos.append(r)
        cks.append(ck)

    barrier = threading.Barrier(n)
    outcome: list[Any] = [None] * n

    def push(i: int) -> None:
        barrier.wait()
        try:
            outcome[i] = repos[i].push("origin", jobs=2)
        except BaseException as e:
            outcome[i] = e

    threads = [threading.Thread(target=push, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    winners = [i for i in range(n) if not isinstance(outcome[i], BaseException)]
    losers = [i for i in range(n) if i not in winners]
    assert len(winners) == 1, outcome
    for i in losers:
        assert isinstance(outcome[i], PushRejectedError), outcome[i]
        assert "fetch first" in str(outcome[i])
        assert repos[i].resolve("origin/main") == base_id
    (w,) = winners
    assert _remote(remote_spot).read_ref(MAIN) == ids[w]
    assert not [k for k in _remote(remote_spot).store.list_prefix("refs/") if k.endswith(".lock")]

    check = _clone(remote_spot, tmp_path / "check")
    check.restore("main", tmp_path / "out")
    assert_same_tree(cks[w], tmp_path / "out")
    assert check.fsck().ok
    for r in repos:
        r.close()


def _counter(store: Store, key: str, threads: int = 8, each: int = 25) -> int:
    store.swap(key, None, b"0\n")
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            barrier.wait()
            for _ in range(each):
                while True:
                    current = store.get(key)
                    try:
                        store.swap(key, current, b"%d\n" % (int(current) + 1))
                        break
                    except StoreConflictError:
                        continue
        except BaseException as e:
            errors.append(e)

    ts = [threading.Thread(target=work) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=60)
    assert not errors, errors
    return int(store.get(key))


@pytest.mark.parametrize("kind", ["dir", "memory"])
def test_swap_under_thread_contention_loses_no_increment(tmp_path: Path, kind: str) -> None:
    url = str(tmp_path / "s") if kind == "dir" else _memory_spot().url
    store = open_store(url)
    assert isinstance(store, LocalStore if kind == "dir" else FsspecStore)
    assert _counter(store, "refs/heads/counter") == 200
    assert not [k for k in store.list_prefix("refs/") if k.endswith(".lock")]


# --- 3. damaged objects on the remote ----------------------------------------------------


def _assert_corrupt(excinfo: pytest.ExceptionInfo[CorruptObjectError], oid: str) -> None:
    assert excinfo.value.object_id == oid
    assert oid in str(excinfo.value)


def test_tampered_chunk_is_refused_and_not_kept(
    tmp_path: Path, rng: np.random.Generator, remote_spot: RemoteSpot
) -> None:
    a, ck = repo_with_history(tmp_path, rng)
    _add(a, remote_spot)
    a.push("origin")
    b = _clone(remote_spot, tmp_path / "b")
    old = a.resolve("main")
    before = _remote_objects(remote_spot)
    # Two constant tensors compress to chunk objects of the same length.
    tensors = small_model(rng)
    tensors["norm.a"] = np.full((128, 128), 1.5, np.float32)
    tensors["norm.b"] = np.full((128, 128), -2.5, np.float32)
    write_checkpoint(ck, {"model.safetensors": tensors})
    c3 = a.commit(ck, "three")
    a.push("origin")
    store = _remote(remote_spot).store
    new_chunks = {
        oid: store.get(Remote.object_key(oid))
        for oid, kind in _remote_objects(remote_spot).items()
        if kind is ObjectKind.CHUNK and oid not in before
    }
    assert len(new_chunks) >= 6  # 6 tensors (and the new header)
    # A valid object of the same length under the wrong name: only the hash catches it.
    victim, other = next(
        (x, y)
        for x in sorted(new_chunks)
        for y in sorted(new_chunks)
        if x != y and len(new_chunks[x]) == len(new_chunks[y])
    )
    good, substitute = new_chunks[victim], new_chunks[other]
    _overwrite(remote_spot, Remote.object_key(victim), substitute)

    with pytest.raises(CorruptObjectError) as excinfo:
        b.fetch("origin")
    _assert_corrupt(excinfo, victim)
    assert not b.objects.store.exists(object_key(victim))
    assert b.resolve("origin/main") == old
    assert c3.id not in _indexed_commits(b)
    with pytest.raises(CorruptObjectError) as excinfo:
        b.pull("origin")
    _assert_corrupt(excinfo, victim)
    assert b.resolve("main") == old

    with pytest.raises(CorruptObjectError) as excinfo:
        _clone(remote_spot, tmp_path / "c")
    _assert_corrupt(excinfo, victim)
    assert not (tmp_path / "c").exists()

    # Flipped bits, same length.
    flipped = bytearray(good)
    flipped[-100:] = bytes(x ^ 0x5A for x in flipped[-100:])
    _overwrite(remote_spot, Remote.object_key(victim), bytes(flipped))
    with pytest.raises(CorruptObjectError) as excinfo:
        b.fetch("origin")
    _assert_corrupt(excinfo, victim)
    assert not b.objects.store.exists(object_key(victim))

    # A partial clone does not need the chunk; a restore that does fails the same way.
    p = _clone(remote_spot, tmp_path / "p", files=["config.json"])
    assert p.resolve("main") == c3.id
    with pytest.raises(CorruptObjectError) as excinfo:
        p.restore("main", tmp_path / "p-out")
    _assert_corrupt(excinfo, victim)
    assert not p.objects.store.exists(object_key(victim))

    # Repaired on the remote, everything works again.
    _overwrite(remote_spot, Remote.object_key(victim), good)
    assert b.pull("origin").new == c3.id
    b.restore("main", tmp_path / "b-out")
    assert_same_tree(ck, tmp_path / "b-out")


def test_truncated_objects_are_refused(
    tmp_path: Path, rng: np.random.Generator, remote_spot: RemoteSpot
) -> None:
    a, ck = repo_with_history(tmp_path, rng)
    _add(a, remote_spot)
    a.push("origin")
    objects = _remote_objects(remote_spot)
    chunk = sorted(o for o, k in objects.items() if k is ObjectKind.CHUNK)[0]
    tip = a.resolve("main")
    store = _remote(remote_spot).store
    good_chunk = store.get(Remote.object_key(chunk))
    good_tip = store.get(Remote.object_key(tip))
    fresh = Repository.init(tmp_path / "fresh")
    _add(fresh, remote_spot)

    # The tip commit cut inside its header: refused before anything is indexed.
    _overwrite(remote_spot, Remote.object_key(tip), good_tip[:20])
    with pytest.raises(CorruptObjectError, match="truncated header") as excinfo:
        fresh.fetch("origin")
    _assert_corrupt(excinfo, tip)
    assert not fresh.objects.store.exists(object_key(tip))
    assert _indexed_commits(fresh) == set() and _tracking(fresh) == {}
    _overwrite(remote_spot, Remote.object_key(tip), good_tip)

    # A chunk cut in half.
    _overwrite(remote_spot, Remote.object_key(chunk), good_chunk[: len(good_chunk) // 2])
    with pytest.raises(CorruptObjectError) as excinfo:
        _clone(remote_spot, tmp_path / "c1")
    _assert_corrupt(excinfo, chunk)
    assert not (tmp_path / "c1").exists()
    with pytest.raises(CorruptObjectError) as excinfo:
        fresh.fetch("origin")
    _assert_corrupt(excinfo, chunk)
    assert not fresh.objects.store.exists(object_key(chunk))
    assert _indexed_commits(fresh) == set() and _tracking(fresh) == {}

    _overwrite(remote_spot, Remote.object_key(chunk), good_chunk)
    assert fresh.fetch("origin").commits == 2
    fresh.restore("origin/main", tmp_path / "out")
    assert_same_tree(ck, tmp_path / "out")


# --- 4. remote refs that name nothing usable ---------------------------------------------


def test_remote_ref_to_a_missing_commit(
    tmp_path: Path, rng: np.random.Generator, remote_spot: RemoteSpot
) -> None:
    a, ck = repo_with_history(tmp_path, rng)
    _add(a, remote_spot)
    a.push("origin")
    old = a.resolve("main")
    b = _clone(remote_spot, tmp_path / "b")
    write_checkpoint(ck, {"model.safetensors": small_model(rng)})
    c3 = a.commit(ck, "three", branch="feature")
    a.push("origin", ["feature"])

    missing = "ab" * 32
    store = _remote(remote_spot).store
    store.swap(MAIN, store.get(MAIN), f"{missing}\n".encode())

    with pytest.raises(RemoteError, match="missing") as excinfo:
        b.fetch("origin")
    assert MAIN in str(excinfo.value) and missing in str(excinfo.value)
    assert _tracking(b) == {"main": old}  # no origin/feature, origin/main unmoved
    assert c3.id not in _indexed_commits(b)

    with pytest.raises(RemoteError, match=f"{MAIN}.*missing"):
        _clone(remote_spot, tmp_path / "c")
    assert not (tmp_path / "c").exists()

    fresh = Repository.init(tmp_path / "fresh")
    _add(fresh, remote_spot)
    with pytest.raises(RemoteError, match="missing"):
        fresh.fetch("origin")
    with pytest.raises(RemoteError, match="missing"):
        fresh.pull("origin", "main")
    assert _tracking(fresh) == {} and _indexed_commits(fresh) == set()
    assert fresh.branches() == []

    # Another branch is still fetched on its own.
    assert fresh.fetch("origin", ["feature"]).commits == 3
    assert _tracking(fresh) == {"feature": c3.id}

    # A ref naming an object that is not a commit (a tree) stops the fetch as well.
    tree = next(o for o, k in _remote_objects(remote_spot).items() if k is ObjectKind.TREE)
    store.swap(MAIN, store.get(MAIN), f"{tree}\n".encode())
    other = Repository.init(tmp_path / "other")
    _add(other, remote_spot)
    with pytest.raises(WvcError, match=f"remote ref {MAIN}"):
        other.fetch("origin")
    assert _indexed_commits(other) == set() and _tracking(other) == {}


def test_remote_ref_with_garbage(
    tmp_path: Path, rng: np.random.Generator, remote_spot: RemoteSpot
) -> None:
    a, _ = repo_with_history(tmp_path, rng)
    _add(a, remote_spot)
    a.push("origin")
    old = a.resolve("main")
    b = _clone(remote_spot, tmp_path / "b")
    store = _remote(remote_spot).store
    store.swap(MAIN, store.get(MAIN), b"this is not a commit\n")

    for attempt in (lambda: b.fetch("origin"), lambda: b.pull("origin"), lambda: a.push("origin")):
        with pytest.raises(RemoteError, match=f"ref {MAIN} is not a commit id"):
            attempt()
    with pytest.raises(RemoteError, match=MAIN):
        _clone(remote_spot, tmp_path / "c")
    assert not (tmp_path / "c").exists()
    assert _tracking(b) == {"main": old}
    assert store.get(MAIN) == b"this is not a commit\n"  # push did not "fix" it blindly


# --- 5. the remote's format ---------------------------------------------------------------


def test_remote_format_is_checked(
    tmp_path: Path, rng: np.random.Generator, remote_spot: RemoteSpot
) -> None:
    a, _ = repo_with_history(tmp_path, rng)
    _add(a, remote_spot)

    # An empty location: nothing to fetch or clone, and nothing is created by trying.
    with pytest.raises(RemoteError, match="not a wvc remote"):
        a.fetch("origin")
    with pytest.raises(RemoteError, match="not a wvc remote"):
        _clone(remote_spot, tmp_path / "c")
    assert not (tmp_path / "c").exists()
    assert list(_remote(remote_spot).store.list_prefix("")) == []

    # Objects but no format: something else lives here, push refuses to write into it.
    stray = "objects/" + object_key("cd" * 32)
    _overwrite(remote_spot, stray, b"someone else's data")
    with pytest.raises(RemoteError, match="no 'format' file"):
        a.push("origin")
    assert sorted(_remote(remote_spot).store.list_prefix("")) == [stray]
    assert _tracking(a) == {}

    # A wvc remote from a newer wvc.
    _remote(remote_spot).store.delete(stray)
    a.push("origin")
    _overwrite(remote_spot, "format", json.dumps({"format": "wvc-remote", "version": 2}).encode())
    for attempt in (
        lambda: a.fetch("origin"),
        lambda: a.push("origin"),
        lambda: _clone(remote_spot, tmp_path / "c2"),
    ):
        with pytest.raises(RemoteError, match="version 2 is not supported"):
            attempt()
    assert not (tmp_path / "c2").exists()

    _overwrite(remote_spot, "format", b"<html>not json</html>")
    with pytest.raises(RemoteError, match="not a wvc remote format file"):
        a.fetch("origin")


def test_refs_without_format_are_refused(tmp_path: Path, rng: np.random.Generator) -> None:
    spot = RemoteSpot("dir", str(tmp_path / "remote"), {})
    a, _ = repo_with_history(tmp_path, rng)
    _add(a, spot)
    _overwrite(spot, MAIN, f"{a.resolve('main')}\n".encode())
    with pytest.raises(RemoteError, match="'refs/' folder but no 'format' file"):
        a.push("origin")
    assert not (tmp_path / "remote" / "format").exists()


# --- 6. locks: stale ones are broken, held ones make a swap wait, then give up ------------


def _commit_more(repo: Repository, ck: Path, rng: np.random.Generator) -> str:
    write_checkpoint(ck, {"model.safetensors": small_model(rng)})
    return repo.commit(ck, "more").id


def test_leftover_lock_file_on_a_directory_remote_does_not_block(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    # Directory remotes lock with flock: a lock file nobody holds (a killed push left
    # it) is just a file, whatever its age or content.
    spot = RemoteSpot("dir", str(tmp_path / "remote"), {})
    a, ck = repo_with_history(tmp_path, rng)
    _add(a, spot)
    a.push("origin")
    new = _commit_more(a, ck, rng)
    lock = tmp_path / "remote" / "tmp" / "locks" / "refs%2Fheads%2Fmain.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_bytes(b'{"host": "gone", "pid": 1, "time": 0}')
    start = time.monotonic()
    a.push("origin")
    assert time.monotonic() - start < 10
    assert _remote(spot).read_ref(MAIN) == new


def test_lock_of_a_killed_process_is_released(tmp_path: Path) -> None:
    # A process takes the directory remote's ref lock and is killed while holding it:
    # the kernel releases the flock, so the next writer gets in at once.
    root = tmp_path / "remote"
    store = LocalStore(root, tmp_dir=root / "tmp")
    store.swap(MAIN, None, b"base\n")
    lock = root / "tmp" / "locks" / "refs%2Fheads%2Fmain.lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time\n"
            f"fd = os.open({str(lock)!r}, os.O_RDWR | os.O_CREAT)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\n"
            "print('held', flush=True)\n"
            "time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        fd = os.open(lock, os.O_RDWR)
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # really held
        os.close(fd)
        holder.kill()
        holder.wait(10)
        start = time.monotonic()
        store.swap(MAIN, b"base\n", b"next\n")
        assert time.monotonic() - start < 5
        assert store.get(MAIN) == b"next\n"
    finally:
        holder.kill()
        holder.wait(10)


@pytest.mark.parametrize(
    "payload",
    [
        json.dumps({"host": "gone", "pid": 1, "time": time.time() - 2 * LEASE_S}).encode(),
        b"garbage left by who knows",
    ],
    ids=["expired", "unreadable"],
)
def test_stale_lock_on_a_memory_remote_is_broken(
    tmp_path: Path, rng: np.random.Generator, payload: bytes
) -> None:
    spot = _memory_spot()
    a, ck = repo_with_history(tmp_path, rng)
    _add(a, spot)
    a.push("origin")
    new = _commit_more(a, ck, rng)
    _overwrite(spot, MAIN + ".lock", payload)
    a.push("origin")
    assert _remote(spot).read_ref(MAIN) == new
    assert not _remote(spot).store.exists(MAIN + ".lock")


@pytest.mark.parametrize("kind", ["dir", "memory"])
def test_held_lock_makes_push_wait_then_fail(
    tmp_path: Path, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    spot = RemoteSpot("dir", str(tmp_path / "remote"), {}) if kind == "dir" else _memory_spot()
    a, ck = repo_with_history(tmp_path, rng)
    _add(a, spot)
    a.push("origin")
    old = a.resolve("main")
    new = _commit_more(a, ck, rng)
    held = json.dumps({"host": "alive", "pid": 1, "time": time.time(), "token": "x"}).encode()
    fd = -1
    if kind == "dir":
        monkeypatch.setattr(local_store_mod, "WAIT_S", 0.3)
        lock = tmp_path / "remote" / "tmp" / "locks" / "refs%2Fheads%2Fmain.lock"
        fd = os.open(lock, os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX)  # another writer holds it
    else:
        monkeypatch.setattr(
            fsspec_store_mod, "lease_lock", functools.partial(lease_lock, wait_s=0.3)
        )
        _overwrite(spot, MAIN + ".lock", held)

    start = time.monotonic()
    with pytest.raises(StoreLockedError, match="locked by another writer") as excinfo:
        a.push("origin")
    assert time.monotonic() - start >= 0.3
    assert excinfo.value.key == MAIN
    remote = _remote(spot)
    assert remote.read_ref(MAIN) == old
    assert a.resolve("origin/main") == old

    # The holder finishes; the objects uploaded by the failed attempt are reused.
    if kind == "dir":
        os.close(fd)
    else:
        assert remote.store.get(MAIN + ".lock") == held  # the holder's lock is left alone
        remote.store.delete(MAIN + ".lock")
    res = a.push("origin")
    assert res.objects == 0 and res.present > 0
    assert remote.read_ref(MAIN) == new


def test_lease_lock_gives_up_after_its_wait_limit() -> None:
    removed: list[bytes] = []
    fresh = json.dumps({"time": time.time(), "token": "t"}).encode()
    start = time.monotonic()
    with (
        pytest.raises(StoreLockedError) as excinfo,
        lease_lock("refs/heads/x", lambda _p: False, lambda: fresh, removed.append, wait_s=0.2),
    ):
        pytest.fail("the lock was taken although it is held")
    assert time.monotonic() - start >= 0.2
    assert excinfo.value.key == "refs/heads/x"
    assert removed == []  # a fresh lock is never broken


def _instrumented_lease(
    module: Any,
    monkeypatch: pytest.MonkeyPatch,
    b_paused: threading.Event,
    a_inside: threading.Event,
) -> tuple[list[int], Callable[..., Any]]:
    """Wrap the store module's lease_lock: thread "B", right after it found the lock stale,
    sets ``b_paused`` and waits until thread "A" has broken that lock and taken its own
    (``a_inside``). Returns a list that records how many threads held the lock whenever
    one entered, and the wrapper."""
    real = module.lease_lock
    holders = [0]
    seen: list[int] = []
    lock = threading.Lock()

    @contextlib.contextmanager
    def wrapped(key: str, create: Any, read: Any, remove_if: Any, **kw: Any) -> Iterator[None]:
        if threading.current_thread().name == "B":
            first = [True]
            real_read: Callable[[], bytes | None] = read

            def slow_read() -> bytes | None:
                found = real_read()
                if first[0]:
                    first[0] = False
                    assert found is not None and is_stale(found)
                    b_paused.set()
                    a_inside.wait(5)
                return found

            read = slow_read
        with real(key, create, read, remove_if, **kw):
            with lock:
                holders[0] += 1
                seen.append(holders[0])
            try:
                yield
            finally:
                with lock:
                    holders[0] -= 1

    monkeypatch.setattr(module, "lease_lock", wrapped)
    return seen, wrapped


def test_breaking_a_stale_lock_never_breaks_a_live_one(monkeypatch: pytest.MonkeyPatch) -> None:
    # Two writers find the same stale lock (left by a killed push). A breaks it and
    # takes its own; B, acting on what it read earlier, must not remove A's live lock:
    # lease_lock removes a lock only if it still holds the payload judged stale. Shown
    # for FsspecStore (memory://): A pauses inside the lock after reading the ref.
    url = _memory_spot().url
    store_a, store_b = open_store(url), open_store(url)  # two writers, one location
    assert isinstance(store_a, FsspecStore) and isinstance(store_b, FsspecStore)
    store_a.swap(MAIN, None, b"base\n")
    stale = json.dumps({"host": "gone", "pid": 1, "time": time.time() - 2 * LEASE_S})
    store_a.fs.pipe_file(store_a._path(MAIN + ".lock"), stale.encode())

    a_inside = threading.Event()
    b_done = threading.Event()
    b_paused = threading.Event()
    seen, _ = _instrumented_lease(fsspec_store_mod, monkeypatch, b_paused, a_inside)
    real_read = store_a._read_current

    def a_reads(path: str) -> bytes | None:
        value = real_read(path)
        a_inside.set()  # A holds the lock and has read the ref; B now acts on stale news
        b_done.wait(2)
        return value

    monkeypatch.setattr(store_a, "_read_current", a_reads)
    results: dict[str, Any] = {}

    def run(name: str, store: Store, value: bytes) -> None:
        try:
            store.swap(MAIN, b"base\n", value)
            results[name] = "ok"
        except BaseException as e:
            results[name] = e
        finally:
            if name == "B":
                b_done.set()

    tb = threading.Thread(target=run, args=("B", store_b, b"from B\n"), name="B")
    ta = threading.Thread(target=run, args=("A", store_a, b"from A\n"), name="A")
    tb.start()
    assert b_paused.wait(5)  # B has found the stale lock and acts on it only later
    ta.start()
    ta.join(10)
    tb.join(10)
    final = store_a.get(MAIN)
    assert set(results) == {"A", "B"}
    assert all(r == "ok" or isinstance(r, StoreConflictError) for r in results.values()), results
    assert max(seen) == 1, f"{max(seen)} writers held the lock at once; results {results}"
    assert list(results.values()).count("ok") == 1, (results, final)
