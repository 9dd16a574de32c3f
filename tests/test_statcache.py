"""The stat cache: a file whose size, times, inode and device are unchanged is not read again.

Proving that a commit did *not* read a file needs a file whose content differs from
what the cache says while its stat stays the same, which user space cannot make
(any write changes ctime, which cannot be set back). So the tests that prove a cache
hit edit the cache instead: the row of a file is pointed at the manifest of another
file (a real, stored manifest), and a commit that trusts the row stores that
manifest for the file, one that reads the file stores the file's own. Every test
that changes a file checks the change is seen.

A row is written only for files last changed (mtime and ctime) at least RACY_S
before the commit started, so the files used here are written once, by a
module-scoped fixture that then waits RACY_S.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import FAST_TMP, RunWvc, assert_bit_exact, assert_same_tree, write_checkpoint
from sqlalchemy import select, update

from wvc.index import stat_cache
from wvc.ingest import DEFAULT_CHUNK_SIZE
from wvc.objects import object_key
from wvc.ops._read import read_commit, read_file_manifest, read_tree
from wvc.ops._statcache import RACY_S
from wvc.repository import Repository

# tmpfs when there is one: these tests check content, not durability, and fsync is free there.
STAT_FIELDS = ("size", "mtime_ns", "ctime_ns", "inode", "device")


def model(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "w": rng.standard_normal((64, 64)).astype(np.float32),
        "b": rng.standard_normal((64,)).astype(np.float32),
    }


def _checkpoint(d: Path, seed: int, *names: str) -> None:
    files: dict[str, Any] = {n: model(seed + i) for i, n in enumerate(names)}
    files["config.json"] = json.dumps({"seed": seed})
    write_checkpoint(d, files)


@pytest.fixture(scope="module")
def seasoned() -> Iterator[Path]:
    """Checkpoint directories (one per test) last changed more than RACY_S ago."""
    with tempfile.TemporaryDirectory(dir=FAST_TMP) as tmp:
        root = Path(tmp)
        _checkpoint(root / "unchanged", 1, "a.safetensors", "b.safetensors")
        _checkpoint(root / "fields", 2, "model.safetensors", "other.safetensors")
        _checkpoint(root / "inplace", 3, "model.safetensors")
        _checkpoint(root / "mixed", 4, "old.safetensors")
        _checkpoint(root / "missing-chunk", 5, "model.safetensors")
        _checkpoint(root / "missing-manifest", 6, "model.safetensors")
        _checkpoint(root / "after-gc", 7, "model.safetensors")
        _checkpoint(root / "opaque", 8, "model.safetensors")
        _checkpoint(root / "swap", 9, "a.safetensors", "b.safetensors")
        _checkpoint(root / "cli", 10, "model.safetensors", "other.safetensors")
        # Same size already (same shapes); same mtime too, so only inode and ctime differ.
        same = time.time() - 60
        for name in ("a.safetensors", "b.safetensors"):
            os.utime(root / "swap" / name, (same, same))
        time.sleep(RACY_S + 0.3)
        yield root


# --- helpers ------------------------------------------------------------------------------


def entries(repo: Repository, rev: str) -> dict[str, tuple[str, str]]:
    """Stored path -> (manifest id, format) of ``rev``."""
    tree = read_tree(repo.objects, read_commit(repo.objects, repo.resolve(rev)).tree)
    return {e.path: (e.manifest, e.format) for e in tree.entries}


def cache_rows(repo: Repository) -> dict[tuple[str, int], Any]:
    with repo.index.read() as conn:
        return {(r.path, r.opaque): r for r in conn.execute(select(stat_cache))}


def tamper(repo: Repository, path: Path, opaque: int = 0, **values: Any) -> None:
    """Change the cache row of ``path`` (an edit of the real SQLite index, not a mock)."""
    with repo.index.write() as conn:
        n = conn.execute(
            update(stat_cache)
            .where(stat_cache.c.path == str(path), stat_cache.c.opaque == opaque)
            .values(**values)
        ).rowcount
    assert n == 1


def assert_row_matches(row: Any, path: Path, manifest: str) -> None:
    st = os.stat(path)
    assert (row.size, row.mtime_ns, row.ctime_ns, row.inode, row.device) == (
        st.st_size,
        st.st_mtime_ns,
        st.st_ctime_ns,
        st.st_ino,
        st.st_dev,
    )
    assert row.manifest == manifest
    assert row.chunk_size == DEFAULT_CHUNK_SIZE


# --- tests ---------------------------------------------------------------------------------


def test_unchanged_files_are_not_read_again_until_rehash(seasoned: Path, work: Path) -> None:
    d = seasoned / "unchanged"
    repo = Repository.init(work / "r")
    first = repo.commit(d, "first")
    real = entries(repo, first.id)
    rows = cache_rows(repo)
    assert set(rows) == {(str(d / n), 0) for n in real}
    for name, (manifest, fmt) in real.items():
        assert_row_matches(rows[(str(d / name), 0)], d / name, manifest)
        assert rows[(str(d / name), 0)].format == fmt

    second = repo.commit(d, "second")
    assert read_commit(repo.objects, second.id).tree == read_commit(repo.objects, first.id).tree
    assert second.new_objects == 1  # the commit object alone

    # The row of a.safetensors now names b's manifest: a commit that trusts it (reads
    # nothing) stores that, one that reads the file stores a's own.
    sentinel = real["b.safetensors"][0]
    tamper(repo, d / "a.safetensors", manifest=sentinel)
    trusted = repo.commit(d, "trusted")
    assert entries(repo, trusted.id)["a.safetensors"][0] == sentinel
    assert entries(repo, trusted.id)["config.json"] == real["config.json"]

    rehashed = repo.commit(d, "rehash", rehash=True)
    assert entries(repo, rehashed.id) == real
    assert cache_rows(repo)[(str(d / "a.safetensors"), 0)].manifest == real["a.safetensors"][0]
    assert entries(repo, repo.commit(d, "after").id) == real  # the row was refreshed


def test_every_stat_field_and_the_chunk_size_are_compared(seasoned: Path, work: Path) -> None:
    d = seasoned / "fields"
    path = d / "model.safetensors"
    repo = Repository.init(work / "r")
    real = entries(repo, repo.commit(d).id)
    own, sentinel = real["model.safetensors"][0], real["other.safetensors"][0]
    true_row = cache_rows(repo)[(str(path), 0)]
    for field in (*STAT_FIELDS, "chunk_size"):
        tamper(repo, path, manifest=sentinel, **{field: getattr(true_row, field) + 1})
        got = entries(repo, repo.commit(d, f"{field} differs").id)["model.safetensors"][0]
        assert got == own, f"a row whose {field} differs was trusted"
        assert_row_matches(cache_rows(repo)[(str(path), 0)], path, own)  # and rewritten
    tamper(repo, path, manifest=sentinel)  # the control: nothing differs, the row is trusted
    assert entries(repo, repo.commit(d).id)["model.safetensors"][0] == sentinel


def test_in_place_edit_with_the_old_size_and_mtime_is_seen(seasoned: Path, work: Path) -> None:
    d = seasoned / "inplace"
    path = d / "model.safetensors"
    repo = Repository.init(work / "r")
    first = repo.commit(d)
    row = cache_rows(repo)[(str(path), 0)]
    before = os.stat(path)

    changed = model(333)
    write_checkpoint(work / "new", {"model.safetensors": changed})  # same shapes: same size
    with open(path, "r+b") as f:  # written over the old bytes, on the same inode
        f.write((work / "new" / "model.safetensors").read_bytes())
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (row.size, row.mtime_ns, row.inode)
    # ctime cannot be set back from user space: that is what gives the edit away.
    assert after.st_ctime_ns != row.ctime_ns

    second = repo.commit(d)
    assert (
        entries(repo, second.id)["model.safetensors"]
        != entries(repo, first.id)["model.safetensors"]
    )
    assert_bit_exact(repo.load(second.id, "model.safetensors"), changed)
    assert_bit_exact(repo.load(first.id, "model.safetensors"), model(3))


def test_recently_modified_files_get_no_row(seasoned: Path, work: Path) -> None:
    d = seasoned / "mixed"
    fresh = model(44)
    write_checkpoint(d, {"fresh.safetensors": fresh})  # modified just now
    repo = Repository.init(work / "r")
    first = repo.commit(d)
    paths = {p for p, _ in cache_rows(repo)}
    assert paths == {str(d / "old.safetensors"), str(d / "config.json")}
    second = repo.commit(d)
    assert str(d / "fresh.safetensors") not in {p for p, _ in cache_rows(repo)}
    assert entries(repo, second.id) == entries(repo, first.id)
    assert_bit_exact(repo.load(second.id, "fresh.safetensors"), fresh)


@pytest.mark.parametrize("lost", ["chunk", "manifest"])
def test_a_row_whose_objects_are_gone_is_not_trusted(seasoned: Path, work: Path, lost: str) -> None:
    d = seasoned / f"missing-{lost}"
    repo = Repository.init(work / "r")
    first = repo.commit(d)
    manifest_id = entries(repo, first.id)["model.safetensors"][0]
    manifest = read_file_manifest(repo.objects, manifest_id)
    (chunk,) = next(s.chunks for s in manifest.segments if s.tensor and s.tensor.name == "w")
    victim = chunk if lost == "chunk" else manifest_id
    (repo.dir / "objects" / object_key(victim)).unlink()
    assert not repo.fsck().ok

    second = repo.commit(d)  # must read the file again, storing the lost object afresh
    assert entries(repo, second.id) == entries(repo, first.id)
    assert repo.objects.has(victim)
    check = repo.fsck()
    assert check.ok, check.problems
    repo.restore(first.id, work / "out")
    assert_same_tree(d, work / "out")


def test_a_row_whose_objects_gc_removed_is_not_trusted(seasoned: Path, work: Path) -> None:
    d = seasoned / "after-gc"
    repo = Repository.init(work / "r")
    repo.commit_state_dict(model(0), message="root")
    side = repo.commit(d, "on x", branch="x")
    needed = {m for m, _ in entries(repo, side.id).values()}
    assert cache_rows(repo)
    repo.delete_branch("x")
    removed = set(repo.gc(grace_s=0).removed_ids)
    assert needed <= removed

    again = repo.commit(d, "on main")
    assert {m for m, _ in entries(repo, again.id).values()} == needed
    for m in needed:
        manifest = read_file_manifest(repo.objects, m)
        for seg in manifest.segments:
            for c in seg.chunks:
                repo.objects.get(c)  # present and verified
    repo.restore(again.id, work / "out")
    assert_same_tree(d, work / "out")


def test_opaque_and_parsed_commits_keep_separate_rows(seasoned: Path, work: Path) -> None:
    d = seasoned / "opaque"
    path = str(d / "model.safetensors")
    repo = Repository.init(work / "r")
    parsed = entries(repo, repo.commit(d).id)["model.safetensors"]
    opaque = entries(repo, repo.commit(d, opaque=True).id)["model.safetensors"]
    assert parsed[1] == "safetensors" and opaque[1] == "opaque"
    assert parsed[0] != opaque[0]
    rows = cache_rows(repo)
    assert rows[(path, 0)].manifest == parsed[0] and rows[(path, 0)].format == "safetensors"
    assert rows[(path, 1)].manifest == opaque[0] and rows[(path, 1)].format == "opaque"
    # Each kind of commit finds its own row, never the other's.
    assert entries(repo, repo.commit(d).id)["model.safetensors"] == parsed
    assert entries(repo, repo.commit(d, opaque=True).id)["model.safetensors"] == opaque
    assert entries(repo, repo.commit(d).id)["model.safetensors"] == parsed


def test_a_file_replaced_by_rename_is_read_again(seasoned: Path, work: Path) -> None:
    d = seasoned / "swap"
    a, b = d / "a.safetensors", d / "b.safetensors"
    repo = Repository.init(work / "r")
    first = entries(repo, repo.commit(d).id)
    assert first["a.safetensors"] != first["b.safetensors"]
    old_a, old_b = os.stat(a), os.stat(b)
    assert (old_a.st_size, old_a.st_mtime_ns) == (old_b.st_size, old_b.st_mtime_ns)

    tmp = d / "swap.tmp"
    os.rename(a, tmp)
    os.rename(b, a)
    os.rename(tmp, b)
    assert os.stat(a).st_ino == old_b.st_ino  # same size and mtime at the path, another inode
    swapped = entries(repo, repo.commit(d).id)
    assert swapped["a.safetensors"] == first["b.safetensors"]
    assert swapped["b.safetensors"] == first["a.safetensors"]
    assert_bit_exact(repo.load("HEAD", "a.safetensors"), model(10))


def test_cli_commit_uses_the_cache_and_rehash_reads_everything(
    seasoned: Path, work: Path, run_wvc: RunWvc
) -> None:
    d = seasoned / "cli"
    repo = Repository.init(work / "r")
    real = entries(repo, repo.commit(d).id)
    sentinel = real["other.safetensors"][0]
    tamper(repo, d / "model.safetensors", manifest=sentinel)

    proc = run_wvc("commit", d, "-m", "cached", "--json", cwd=repo.root)
    assert proc.returncode == 0, proc.stderr
    cached = entries(repo, json.loads(proc.stdout)["id"])
    assert cached["model.safetensors"][0] == sentinel  # the CLI trusted the row

    proc = run_wvc("commit", d, "-m", "rehash", "--rehash", "--json", cwd=repo.root)
    assert proc.returncode == 0, proc.stderr
    assert entries(repo, json.loads(proc.stdout)["id"]) == real
    assert (
        cache_rows(repo)[(str(d / "model.safetensors"), 0)].manifest == real["model.safetensors"][0]
    )
