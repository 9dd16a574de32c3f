"""stats: logical bytes against stored bytes, per commit and for the whole repository."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from ..index import commits, objects
from ..objects import ObjectKind
from ..revision import resolve
from .history import ancestors

if TYPE_CHECKING:
    from ..repository import Repository


@dataclass(frozen=True)
class CommitStats:
    id: str
    message: str
    time: float
    logical_size: int
    new_stored_size: int
    new_objects: int
    # How the new chunks were stored; None for commits an earlier wvc indexed.
    new_raw_size: int | None = None
    delta_objects: int | None = None
    delta_raw_size: int | None = None
    delta_stored_size: int | None = None

    @property
    def deduped_size(self) -> int | None:
        """Logical bytes found already stored (no new object for them)."""
        if self.new_raw_size is None:
            return None
        return max(0, self.logical_size - self.new_raw_size)

    @property
    def standalone_size(self) -> int | None:
        """Stored bytes of new objects stored alone (chunks, manifests, tree, commit)."""
        if self.delta_stored_size is None:
            return None
        return self.new_stored_size - self.delta_stored_size

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "message": self.message,
            "time": self.time,
            "logical_size": self.logical_size,
            "new_stored_size": self.new_stored_size,
            "new_objects": self.new_objects,
            "deduped_size": self.deduped_size,
            "delta_objects": self.delta_objects,
            "delta_raw_size": self.delta_raw_size,
            "delta_stored_size": self.delta_stored_size,
            "standalone_objects": (
                None if self.delta_objects is None else self.new_objects - self.delta_objects
            ),
            "standalone_size": self.standalone_size,
        }


@dataclass(frozen=True)
class StatsResult:
    commits: tuple[CommitStats, ...]
    logical_size: int  # sum of every listed commit's file sizes
    unique_size: int  # raw bytes of distinct chunks in the repository
    stored_size: int  # bytes of every object file (chunks, manifests, commits)
    chunk_stored_size: int
    objects: int

    @property
    def dedup_ratio(self) -> float:
        return self.logical_size / self.unique_size if self.unique_size else 1.0

    @property
    def compression_ratio(self) -> float:
        return self.unique_size / self.chunk_stored_size if self.chunk_stored_size else 1.0

    @property
    def total_ratio(self) -> float:
        return self.logical_size / self.stored_size if self.stored_size else 1.0

    def to_json(self) -> dict[str, Any]:
        return {
            "commits": [c.to_json() for c in self.commits],
            "logical_size": self.logical_size,
            "unique_size": self.unique_size,
            "stored_size": self.stored_size,
            "chunk_stored_size": self.chunk_stored_size,
            "objects": self.objects,
            "dedup_ratio": self.dedup_ratio,
            "compression_ratio": self.compression_ratio,
            "total_ratio": self.total_ratio,
        }


def stats(repo: Repository, rev: str | None) -> StatsResult:
    """Per-commit figures for ``rev``'s history (every commit if None) and repository totals."""
    with repo.index.read() as conn:
        query = select(commits).order_by(commits.c.time.desc(), commits.c.seq.desc())
        rows = conn.execute(query).all()
        if rev is not None:
            wanted = set(ancestors(conn, resolve(conn, rev)))
            rows = [r for r in rows if r.id in wanted]
        per = tuple(
            CommitStats(
                r.id,
                r.message,
                r.time,
                r.logical_size,
                r.new_stored_size,
                r.new_objects,
                r.new_raw_size,
                r.delta_objects,
                r.delta_raw_size,
                r.delta_stored_size,
            )
            for r in rows
        )
        chunk = ObjectKind.CHUNK
        unique, chunk_stored = conn.execute(
            select(
                func.coalesce(func.sum(objects.c.raw_size), 0),
                func.coalesce(func.sum(objects.c.stored_size), 0),
            ).where(objects.c.kind == int(chunk))
        ).one()
        stored, count = conn.execute(
            select(func.coalesce(func.sum(objects.c.stored_size), 0), func.count())
        ).one()
    return StatsResult(
        commits=per,
        logical_size=sum(c.logical_size for c in per),
        unique_size=int(unique),
        stored_size=int(stored),
        chunk_stored_size=int(chunk_stored),
        objects=int(count),
    )
