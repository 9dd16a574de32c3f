"""Delta bases: which chunk of the parent commit each new chunk may be stored against.

A tensor's chunk *i* has as base chunk *i* of the same tensor in the parent
commit (first parent): the same file path and tensor name, else the same
tensor name in another file of the parent (shards re-cut), with the same
dtype, shape and chunk size. A PyTorch storage segment (no name of its own)
matches the storage at the same segment index of the same path with the same
element type and size. Opaque bytes (headers, pickles) have no base.
docs/design.md, "Delta objects".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .. import refs
from ..errors import IntegrityError
from ..formats import FileLayout
from ..manifest import Segment, SegmentKind
from ._read import read_commit, read_file_manifest, read_tree

if TYPE_CHECKING:
    from ..repository import Repository

ChunkBases = tuple[tuple[str | None, ...], ...]  # per segment, per chunk


@dataclass
class ParentChunks:
    """The tensor and storage segments of one commit, to look bases up in."""

    by_path: dict[tuple[str, str], Segment] = field(default_factory=dict)
    by_name: dict[str, Segment | None] = field(default_factory=dict)  # None: ambiguous
    storages: dict[tuple[str, int], Segment] = field(default_factory=dict)
    chunk_size: dict[int, int] = field(default_factory=dict)  # id(segment) -> chunk size

    def bases(self, path: str, layout: FileLayout, chunk_size: int) -> ChunkBases:
        """For each segment of ``layout``, the base chunk id of each of its chunks (or None)."""
        out: list[tuple[str | None, ...]] = []
        for index, spec in enumerate(layout.segments):
            n = -(-spec.size // chunk_size)
            cand: Segment | None = None
            if spec.tensor is not None:
                t = spec.tensor
                cand = self.by_path.get((path, t.name)) or self.by_name.get(t.name)
                if cand is not None and (
                    cand.tensor is None
                    or cand.tensor.dtype != t.dtype
                    or cand.tensor.shape != t.shape
                ):
                    cand = None
            elif spec.storage is not None:
                cand = self.storages.get((path, index))
                if cand is not None and cand.storage != spec.storage:
                    cand = None
            if (
                cand is None
                or cand.size != spec.size
                or self.chunk_size.get(id(cand)) != chunk_size
                or len(cand.chunks) != n
            ):
                out.append((None,) * n)
            else:
                out.append(tuple(cand.chunks))
        return tuple(out)


def parent_chunks(repo: Repository, parent: str | None) -> ParentChunks:
    """Index the segments of commit ``parent`` (empty if None or unreadable).

    Bases are only an encoding choice: a parent that cannot be read (a partial
    repository that lacks a manifest, damage) just means no deltas.
    """
    found = ParentChunks()
    if parent is None:
        return found
    try:
        tree = read_tree(repo.objects, read_commit(repo.objects, parent).tree)
        for entry in tree.entries:
            manifest = read_file_manifest(repo.objects, entry.manifest, entry.path)
            for index, seg in enumerate(manifest.segments):
                if seg.kind is SegmentKind.OPAQUE:
                    continue
                found.chunk_size[id(seg)] = manifest.chunk_size
                if seg.tensor is not None:
                    found.by_path[(entry.path, seg.tensor.name)] = seg
                    name = seg.tensor.name
                    found.by_name[name] = None if name in found.by_name else seg
                else:
                    found.storages[(entry.path, index)] = seg
    except IntegrityError:
        return ParentChunks()
    return found


def head_parent(repo: Repository, branch: str | None) -> str | None:
    """The commit a commit onto ``branch`` (or HEAD) will most likely have as its parent."""
    with repo.index.read() as conn:
        if branch is not None:
            tip = refs.get_ref(conn, refs.BRANCH_PREFIX + branch)
            if tip is not None:
                return tip
        return refs.head(conn).target
