"""gc: remove objects no ref can reach, keeping every delta base a kept object needs.

Rule (docs/design.md, "Garbage collection"): an object is removed only if

1. no branch, tag, remote-tracking ref or HEAD reaches it (through commits,
   their parents, trees, manifests, chunks, and the delta bases of those
   chunks, read from the objects themselves, not the index);
2. its file was last modified more than ``grace_s`` (one hour) ago: a writer
   renames a new object in, and touches one it reuses, so the objects of a
   commit in progress are recent; and
3. it was last modified before the oldest running writer started (commit,
   apply and fetch announce themselves in ``.wvc/running/``), so a commit
   running for longer than the grace period is safe too.

Marking and sweeping run inside one SQLite write transaction: no ref moves
meanwhile, and a commit that reused an object gc removed notices it in its
own transaction (which runs before or after, never during) and fails
without publishing anything.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select

from ..errors import IntegrityError, WvcError
from ..index import objects as objects_table
from ..index import refs as refs_table
from ..ingest import Progress
from ..objects import object_key
from ..store import LocalStore
from ._read import read_commit, read_file_manifest, read_tree
from ._running import oldest_running

if TYPE_CHECKING:
    from ..repository import Repository

GRACE_S = 3600.0


@dataclass(frozen=True)
class GcResult:
    dry_run: bool
    reachable: int  # objects kept because a ref reaches them (bases included)
    recent: int  # unreachable objects kept because they are recent or a writer is running
    removed: int  # objects removed (or that would be, with dry_run)
    freed: int  # their bytes
    removed_ids: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "reachable": self.reachable,
            "recent": self.recent,
            "removed": self.removed,
            "freed": self.freed,
            "removed_ids": list(self.removed_ids),
        }


class GcError(WvcError):
    """gc refuses to run on a repository it cannot fully read (exit 6)."""

    exit_code = 6


def gc(
    repo: Repository,
    *,
    dry_run: bool = False,
    grace_s: float = GRACE_S,
    progress: Progress | None = None,
) -> GcResult:
    store = repo.objects.store
    if not isinstance(store, LocalStore):  # pragma: no cover - repositories are local
        raise WvcError("gc works on local repositories only")
    with repo.index.write() as conn:
        roots = sorted(
            {r.target for r in conn.execute(select(refs_table.c.target)) if r.target is not None}
        )
        try:
            keep = _mark(repo, roots)
        except IntegrityError as e:
            raise GcError(
                f"gc: cannot read everything the refs reach ({e}); nothing was removed. "
                "Run 'wvc fsck'"
            ) from None
        now = time.time()
        cutoff = now - grace_s
        started = oldest_running(repo.dir)
        if started is not None:
            cutoff = min(cutoff, started - 1.0)  # 1 s: file times may lag the clock
        removed: list[str] = []
        freed = 0
        recent = 0
        for oid in repo.objects.iter_ids():
            if oid in keep:
                continue
            key = object_key(oid)
            try:
                mtime = store.mtime(key)
                size = store.size(key)
            except KeyError:
                continue
            if mtime >= cutoff:
                recent += 1
                continue
            if not dry_run:
                store.delete(key)
                if progress:
                    progress(size)
            removed.append(oid)
            freed += size
        if removed and not dry_run:
            for i in range(0, len(removed), 500):
                conn.execute(
                    delete(objects_table).where(objects_table.c.id.in_(removed[i : i + 500]))
                )
            store.flush()
    return GcResult(dry_run, len(keep), recent, len(removed), freed, tuple(removed))


def _mark(repo: Repository, roots: list[str]) -> set[str]:
    """Every object the commits ``roots`` reach, read from the objects themselves."""
    objects = repo.objects
    keep: set[str] = set()
    todo = list(roots)
    manifests: set[str] = set()
    while todo:
        cid = todo.pop()
        if cid in keep:
            continue
        keep.add(cid)
        commit = read_commit(objects, cid)
        todo.extend(p for p in commit.parents if p not in keep)
        if commit.tree in keep:
            continue
        keep.add(commit.tree)
        for entry in read_tree(objects, commit.tree, f"commit {cid[:12]}").entries:
            manifests.add(entry.manifest)
    chunks: set[str] = set()
    for mid in manifests:
        keep.add(mid)
        manifest = read_file_manifest(objects, mid)
        chunks.update(c for seg in manifest.segments for c in seg.chunks)
    # Chunks present here, and the bases their delta chains need (a partial
    # repository lacks some chunks: nothing to keep there).
    todo = sorted(chunks)
    while todo:
        oid = todo.pop()
        if oid in keep:
            continue
        keep.add(oid)
        if not objects.has(oid):
            continue
        header, _ = objects.read_header(oid)
        if header.base is not None and header.base not in keep:
            todo.append(header.base)
    return keep


def missing_objects(repo: Repository, ids: set[str]) -> list[str]:
    """The ids among ``ids`` whose object files are gone (removed by a concurrent gc)."""
    return sorted(oid for oid in ids if not repo.objects.has(oid))
