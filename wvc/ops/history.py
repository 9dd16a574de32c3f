"""log and show: what was committed, read from the index (and manifests for ``show``)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, select

from .. import refs, revision
from ..formats import by_name
from ..index import commit_parents, commits, objects
from ..manifest import FileManifest, MetaValue, TreeEntry
from ..query import matches_all, parse_where, sort_key
from ..revision import resolve
from ._read import read_commit, read_file_manifest, read_tree
from .tensors import StoredFile

if TYPE_CHECKING:
    from ..repository import Repository


@dataclass(frozen=True)
class LogEntry:
    id: str
    parents: tuple[str, ...]
    time: float
    author: str
    message: str
    meta: dict[str, MetaValue]
    logical_size: int
    new_stored_size: int
    refs: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "parents": list(self.parents),
            "time": self.time,
            "author": self.author,
            "message": self.message,
            "meta": self.meta,
            "logical_size": self.logical_size,
            "new_stored_size": self.new_stored_size,
            "refs": list(self.refs),
        }


@dataclass(frozen=True)
class TensorRow:
    name: str
    dtype: str
    shape: tuple[int, ...]
    offset: int
    size: int

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dtype": self.dtype,
            "shape": list(self.shape),
            "offset": self.offset,
            "size": self.size,
        }


@dataclass(frozen=True)
class FileInfo:
    path: str
    format: str
    size: int
    stored_size: int
    tensors: tuple[TensorRow, ...]
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "format": self.format,
            "size": self.size,
            "stored_size": self.stored_size,
            "tensors": [t.to_json() for t in self.tensors],
            "metadata": self.metadata,
        }


@dataclass(frozen=True)
class ShowResult:
    commit: LogEntry
    files: tuple[FileInfo, ...]
    logical_size: int
    stored_size: int

    def to_json(self) -> dict[str, Any]:
        return {
            "commit": self.commit.to_json(),
            "files": [f.to_json() for f in self.files],
            "logical_size": self.logical_size,
            "stored_size": self.stored_size,
        }


def _entries(conn: Connection, ids: list[str]) -> dict[str, LogEntry]:
    decorations = refs.all_targets(conn)
    out: dict[str, LogEntry] = {}
    for batch in _batches(ids):
        rows = conn.execute(select(commits).where(commits.c.id.in_(batch))).all()
        parent_rows = conn.execute(
            select(commit_parents)
            .where(commit_parents.c.commit.in_(batch))
            .order_by(commit_parents.c.position)
        ).all()
        parents: dict[str, list[str]] = {}
        for p in parent_rows:
            parents.setdefault(p.commit, []).append(p.parent)
        for r in rows:
            out[r.id] = LogEntry(
                id=r.id,
                parents=tuple(parents.get(r.id, ())),
                time=r.time,
                author=r.author,
                message=r.message,
                meta=json.loads(r.meta),
                logical_size=r.logical_size,
                new_stored_size=r.new_stored_size,
                refs=tuple(decorations.get(r.id, ())),
            )
    return out


def _batches(items: list[str], size: int = 500) -> Iterable[list[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def ancestors(conn: Connection, start: str) -> list[str]:
    """``start`` and every commit reachable through parents."""
    return list(revision.ancestors(conn, [start]))


def log(
    repo: Repository,
    rev: str,
    limit: int | None,
    where: str | None = None,
    sort: str | None = None,
    reverse: bool = False,
) -> list[LogEntry]:
    """Commits reachable from ``rev``, newest first, or ordered by a meta key.

    ``where`` keeps commits whose meta matches (see :mod:`wvc.query`);
    ``sort`` orders by a meta key, ascending (commits without it last);
    ``reverse`` flips the order. ``limit`` applies last.
    """
    clauses = parse_where(where) if where is not None else None
    with repo.index.read() as conn:
        start = resolve(conn, rev)
        ids = ancestors(conn, start)
        entries = _entries(conn, ids)
        seq = {
            r.id: r.seq
            for b in _batches(ids)
            for r in conn.execute(select(commits.c.id, commits.c.seq).where(commits.c.id.in_(b)))
        }
    # Newest first; commits made in the same instant keep the order they were made in.
    ordered = sorted(entries.values(), key=lambda e: (e.time, seq[e.id]), reverse=True)
    if clauses is not None:
        ordered = [e for e in ordered if matches_all(clauses, e.meta)]
    if sort is not None:
        key = sort_key(sort)
        ordered.sort(key=lambda e: key(e.meta))  # stable: ties stay newest first
    if reverse:
        ordered.reverse()
    return ordered[:limit] if limit is not None else ordered


def stored_sizes(conn: Connection, ids: Iterable[str]) -> dict[str, int]:
    unique = list(set(ids))
    out: dict[str, int] = {}
    for batch in _batches(unique):
        for r in conn.execute(
            select(objects.c.id, objects.c.stored_size).where(objects.c.id.in_(batch))
        ):
            out[r.id] = r.stored_size
    return out


def _metadata(repo: Repository, entry: TreeEntry, manifest: FileManifest) -> dict[str, Any]:
    """What the file's format says about itself (GGUF key/values, safetensors metadata)."""
    try:
        fmt = by_name(entry.format)
    except KeyError:
        return {}
    stored = StoredFile(repo.objects, manifest, entry.path)
    return dict(fmt.describe(entry.path, stored.read_at, manifest.size))


def show(repo: Repository, rev: str) -> ShowResult:
    with repo.index.read() as conn:
        cid = resolve(conn, rev)
        entry = _entries(conn, [cid])[cid]
    commit = read_commit(repo.objects, cid)
    tree = read_tree(repo.objects, commit.tree, f"commit {cid[:12]}")
    files = []
    all_chunks: set[str] = set()
    manifests = [(e, read_file_manifest(repo.objects, e.manifest, e.path)) for e in tree.entries]
    with repo.index.read() as conn:
        sizes = stored_sizes(conn, (c for _, m in manifests for s in m.segments for c in s.chunks))
    for e, m in manifests:
        chunk_ids = {c for s in m.segments for c in s.chunks}
        all_chunks |= chunk_ids
        rows = tuple(
            TensorRow(t.name, t.dtype.name, t.shape, t.offset, t.size) for t in m.tensors()
        )
        stored = sum(sizes.get(c, 0) for c in chunk_ids)
        files.append(FileInfo(e.path, e.format, e.size, stored, rows, _metadata(repo, e, m)))
    return ShowResult(
        commit=entry,
        files=tuple(files),
        logical_size=tree.size,
        stored_size=sum(sizes.get(c, 0) for c in all_chunks),
    )
