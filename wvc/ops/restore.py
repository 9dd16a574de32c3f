"""restore and load: reading snapshots back, every chunk verified against its id."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..codecs import Buffer
from ..errors import CorruptObjectError, PathNotFoundError
from ..ingest import Progress, default_workers
from ..manifest import FileManifest, Tree, TreeEntry
from ._read import iter_chunks, read_commit, read_file_manifest, read_tree
from ._staging import staged_directory, write_file
from .tensors import read_tensor, tensor_map

if TYPE_CHECKING:
    from ..repository import Repository


@dataclass(frozen=True)
class RestoreResult:
    commit: str
    to: str
    files: int
    size: int

    def to_json(self) -> dict[str, Any]:
        return {"commit": self.commit, "to": self.to, "files": self.files, "size": self.size}


def snapshot(repo: Repository, rev: str) -> tuple[str, Tree]:
    cid = repo.resolve(rev)
    commit = read_commit(repo.objects, cid)
    return cid, read_tree(repo.objects, commit.tree, f"commit {cid[:12]}")


def select_entries(tree: Tree, paths: Sequence[str] | None) -> list[TreeEntry]:
    if not paths:
        return list(tree.entries)
    chosen = []
    for p in paths:
        p = p.strip("/")
        hits = [e for e in tree.entries if e.path == p or e.path.startswith(p + "/")]
        if not hits:
            raise PathNotFoundError(p, "no such file in the commit")
        chosen.extend(hits)
    unique = {e.path: e for e in chosen}
    return [unique[k] for k in sorted(unique)]


def _file_chunks(manifest: FileManifest) -> list[str]:
    return [c for seg in manifest.segments for c in seg.chunks]


def restore(
    repo: Repository,
    rev: str,
    to: Path,
    paths: Sequence[str] | None,
    progress: Progress | None,
) -> RestoreResult:
    cid, tree = snapshot(repo, rev)
    entries = select_entries(tree, paths)
    files = []
    for e in entries:
        manifest = read_file_manifest(repo.objects, e.manifest, e.path)
        if manifest.size != e.size:
            raise CorruptObjectError(e.manifest, "file size does not match", e.path)
        files.append((e.path, manifest))
    total = restore_files(repo, files, to, progress)
    return RestoreResult(cid, str(to), len(entries), total)


def restore_files(
    repo: Repository,
    files: Sequence[tuple[str, FileManifest]],
    to: Path,
    progress: Progress | None = None,
) -> int:
    """Write files (path, manifest) into the new or empty directory ``to``; bytes written."""
    total = 0
    workers = default_workers()
    with (
        staged_directory(to) as staging,
        ThreadPoolExecutor(workers, thread_name_prefix="wvc-restore") as pool,
    ):
        for path, manifest in files:
            window = 2 * workers + 2
            chunks = iter_chunks(repo.objects, _file_chunks(manifest), path, pool, window)
            written = write_file(staging.file(path), _counted(chunks, progress))
            if written != manifest.size:
                raise CorruptObjectError("-", "file size does not match its manifest", path)
            total += written
    return total


def _counted(pieces: Iterator[Buffer], progress: Progress | None) -> Iterator[Buffer]:
    for p in pieces:
        if progress:
            progress(len(p))
        yield p


def load(repo: Repository, rev: str, file: str | None) -> dict[str, np.ndarray]:
    """Every tensor of ``rev`` (or of one file, directory or shard index) as numpy arrays."""
    _, tree = snapshot(repo, rev)
    locations = tensor_map(repo, tree, file)
    return {name: read_tensor(repo.objects, loc) for name, loc in locations.items()}
