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

from sqlalchemy import Connection, delete, select

from ..errors import IntegrityError, MissingObjectError, WvcError
from ..index import commit_parents, commits, tensors, tree_files
from ..index import objects as objects_table
from ..index import refs as refs_table
from ..ingest import Progress
from ..objects import ObjectKind, object_key
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
            keep = _Marker(repo)
            keep.commits(roots)
        except IntegrityError as e:
            raise GcError(
                f"gc: cannot read everything the refs reach ({e}); nothing was removed. "
                "Run 'wvc fsck'"
            ) from None
        reachable = len(keep.seen)
        now = time.time()
        cutoff = now - grace_s
        started = oldest_running(repo.dir)
        if started is not None:
            cutoff = min(cutoff, started - 1.0)  # 1 s: file times may lag the clock
        candidates: dict[str, int] = {}  # unreachable id -> size
        recent: list[str] = []
        for oid in repo.objects.iter_ids():
            if oid in keep.seen:
                continue
            key = object_key(oid)
            try:
                mtime = store.mtime(key)
                size = store.size(key)
            except KeyError:
                continue
            if mtime >= cutoff:
                recent.append(oid)
            else:
                candidates[oid] = size
        # What a kept object needs is kept too: the base of a recent delta, the parents,
        # tree, manifests and chunks of a recent commit (what a running commit writes
        # last names what it wrote first).
        keep.anything(recent)
        removed = sorted(oid for oid in candidates if oid not in keep.seen)
        freed = sum(candidates[oid] for oid in removed)
        recent_kept = len(keep.seen) - reachable
        if removed and not dry_run:
            for oid in removed:
                store.delete(object_key(oid))
                if progress:
                    progress(candidates[oid])
            _unindex(conn, removed)
            store.flush()
    return GcResult(dry_run, reachable, recent_kept, len(removed), freed, tuple(removed))


class _Marker:
    """Marks objects and everything they reference, read from the objects themselves."""

    def __init__(self, repo: Repository) -> None:
        self.objects = repo.objects
        self.seen: set[str] = set()

    def commits(self, ids: list[str]) -> None:
        todo = list(ids)
        manifests: list[str] = []
        while todo:
            cid = todo.pop()
            if cid in self.seen:
                continue
            self.seen.add(cid)
            commit = read_commit(self.objects, cid)
            todo.extend(p for p in commit.parents if p not in self.seen)
            manifests += self._tree(commit.tree, f"commit {cid[:12]}")
        self._manifests(manifests)

    def _tree(self, tid: str, context: str | None = None) -> list[str]:
        if tid in self.seen:
            return []
        self.seen.add(tid)
        return [e.manifest for e in read_tree(self.objects, tid, context).entries]

    def _manifests(self, ids: list[str]) -> None:
        chunks: list[str] = []
        for mid in ids:
            if mid in self.seen:
                continue
            self.seen.add(mid)
            manifest = read_file_manifest(self.objects, mid)
            chunks += [c for seg in manifest.segments for c in seg.chunks]
        self.chunks(chunks)

    def chunks(self, ids: list[str]) -> None:
        """Chunks present here and the bases their delta chains need (a partial
        repository lacks some chunks: nothing to keep there)."""
        todo = list(ids)
        while todo:
            oid = todo.pop()
            if oid in self.seen:
                continue
            self.seen.add(oid)
            try:
                header, _ = self.objects.read_header(oid)
            except MissingObjectError:
                continue
            if header.base is not None and header.base not in self.seen:
                todo.append(header.base)

    def anything(self, ids: list[str]) -> None:
        """Objects of any kind (unreachable ones kept for being recent): what each needs.

        The header's kind says how to read it; one that does not parse as that
        kind (kinds are hints) keeps only itself and its base.
        """
        for oid in ids:
            if oid in self.seen:
                continue
            try:
                kind = self.objects.read_header(oid)[0].kind
                if kind is ObjectKind.COMMIT:
                    self.commits([oid])
                elif kind is ObjectKind.TREE:
                    self._manifests(self._tree(oid))
                elif kind is ObjectKind.MANIFEST:
                    self._manifests([oid])
                else:
                    self.chunks([oid])
            except IntegrityError:
                self.seen.add(oid)  # unreadable: keep it for fsck to report


def _unindex(conn: Connection, removed: list[str]) -> None:
    """Delete the index rows describing removed objects (commits, trees, manifests, objects)."""
    for i in range(0, len(removed), 500):
        batch = removed[i : i + 500]
        conn.execute(delete(commit_parents).where(commit_parents.c.commit.in_(batch)))
        conn.execute(delete(commits).where(commits.c.id.in_(batch)))
        conn.execute(delete(tree_files).where(tree_files.c.tree.in_(batch)))
        conn.execute(delete(tensors).where(tensors.c.manifest.in_(batch)))
        conn.execute(delete(objects_table).where(objects_table.c.id.in_(batch)))


def missing_objects(repo: Repository, ids: set[str]) -> list[str]:
    """The ids among ``ids`` whose object files are gone (removed by a concurrent gc)."""
    return sorted(oid for oid in ids if not repo.objects.has(oid))
