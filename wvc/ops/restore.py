"""restore and load: reading snapshots back, every chunk verified against its id."""

from __future__ import annotations

import os
import shutil
import stat
import uuid
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..codecs import Buffer
from ..errors import CorruptObjectError, PathNotFoundError, TargetNotEmptyError
from ..ingest import Progress, default_workers
from ..manifest import FileManifest, Tree, TreeEntry
from ..objects import ObjectStore
from ..store._local import fsync_dir
from ._read import read_commit, read_file_manifest, read_tree
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


def iter_chunks(
    objects: ObjectStore,
    chunk_ids: Sequence[str],
    context: str,
    pool: ThreadPoolExecutor,
    window: int,
) -> Iterator[Buffer]:
    """The decoded, verified bytes of each chunk in order, decoded ahead on ``pool``."""
    pending: deque[Future[Buffer]] = deque()
    it = iter(chunk_ids)
    try:
        for cid in it:
            pending.append(pool.submit(objects.get, cid, context))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for f in pending:
            f.cancel()


def _file_chunks(manifest: FileManifest) -> list[str]:
    return [c for seg in manifest.segments for c in seg.chunks]


def _make_parents(directory: Path) -> Path | None:
    """Create ``directory`` and missing parents; the topmost one created, to undo on failure."""
    missing = [directory, *directory.parents]
    missing = [p for p in missing if not p.exists()]
    for p in [directory, *directory.parents]:
        if p.exists() and not p.is_dir():
            raise PathNotFoundError(str(p), "is not a directory, cannot restore below it")
        if p.exists():
            break
    if not missing:
        return None
    directory.mkdir(parents=True)
    return missing[-1]


def restore(
    repo: Repository,
    rev: str,
    to: Path,
    paths: Sequence[str] | None,
    progress: Progress | None,
) -> RestoreResult:
    cid, tree = snapshot(repo, rev)
    entries = select_entries(tree, paths)
    target = to.absolute()
    if target.is_symlink():
        target = target.resolve()
    mode: int | None = None
    if target.exists():
        if not target.is_dir() or any(target.iterdir()):
            raise TargetNotEmptyError(str(to))
        mode = stat.S_IMODE(target.stat().st_mode)
    created = _make_parents(target.parent)
    # Build the whole restore beside the target, then move it into place, so a
    # failure (e.g. a corrupt object) leaves nothing half-written behind.
    # os.mkdir applies the umask, as creating the target directly would.
    staging = target.parent / f".{target.name}.wvc-restore-{uuid.uuid4().hex[:12]}"
    try:
        os.mkdir(staging, 0o777)
    except BaseException:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        raise
    dirs = [staging]
    total = 0
    try:
        workers = default_workers()
        with ThreadPoolExecutor(workers, thread_name_prefix="wvc-restore") as pool:
            for e in entries:
                manifest = read_file_manifest(repo.objects, e.manifest, e.path)
                out = staging / e.path
                for d in reversed(out.relative_to(staging).parents[:-1]):
                    if not (staging / d).is_dir():
                        os.mkdir(staging / d, 0o777)
                        dirs.append(staging / d)
                written = 0
                with open(out, "wb") as f:
                    for data in iter_chunks(
                        repo.objects, _file_chunks(manifest), e.path, pool, 2 * workers + 2
                    ):
                        f.write(data)
                        written += len(data)
                        if progress:
                            progress(len(data))
                    f.flush()
                    os.fsync(f.fileno())
                if written != manifest.size or written != e.size:
                    raise CorruptObjectError(e.manifest, "file size does not match", e.path)
                total += written
        for d in reversed(dirs):  # children first: every entry durable before the move
            fsync_dir(d)
        if mode is not None:
            os.chmod(staging, mode)
            target.rmdir()
        os.replace(staging, target)
        fsync_dir(target.parent)
    except BaseException:
        shutil.rmtree(created or staging, ignore_errors=True)
        raise
    return RestoreResult(cid, str(to), len(entries), total)


def load(repo: Repository, rev: str, file: str | None) -> dict[str, np.ndarray]:
    """Every tensor of ``rev`` (or of one file, directory or shard index) as numpy arrays."""
    _, tree = snapshot(repo, rev)
    locations = tensor_map(repo, tree, file)
    return {name: read_tensor(repo.objects, loc) for name, loc in locations.items()}
