"""restore and load: reading snapshots back, every chunk verified against its id."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import CorruptObjectError, InputError, PathNotFoundError, TargetNotEmptyError
from ..ingest import Progress
from ..manifest import FileManifest, Segment, Tree, TreeEntry
from ..objects import ObjectStore
from ._read import read_commit, read_file_manifest, read_tree

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
) -> Iterator[bytes]:
    """The decoded, verified bytes of each chunk in order, decoded ahead on ``pool``."""
    pending: deque[Future[bytes]] = deque()
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


def _workers() -> int:
    return min(8, os.cpu_count() or 2)


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
    if target.exists():
        if not target.is_dir():
            raise TargetNotEmptyError(str(to))
        if any(target.iterdir()):
            raise TargetNotEmptyError(str(to))
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build the whole restore beside the target, then move it into place, so a
    # failure (e.g. a corrupt object) leaves nothing half-written behind.
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.wvc-restore-", dir=target.parent))
    total = 0
    try:
        workers = _workers()
        with ThreadPoolExecutor(workers, thread_name_prefix="wvc-restore") as pool:
            for e in entries:
                manifest = read_file_manifest(repo.objects, e.manifest, e.path)
                out = staging / e.path
                out.parent.mkdir(parents=True, exist_ok=True)
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
        if target.exists():
            target.rmdir()
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return RestoreResult(cid, str(to), len(entries), total)


def read_segment(objects: ObjectStore, seg: Segment, context: str) -> bytearray:
    buf = bytearray(seg.size)
    pos = 0
    for cid in seg.chunks:
        data = objects.get(cid, context)
        buf[pos : pos + len(data)] = data
        pos += len(data)
    if pos != seg.size:
        raise CorruptObjectError(
            seg.chunks[-1] if seg.chunks else "-", "segment size mismatch", context
        )
    return buf


def segment_array(objects: ObjectStore, seg: Segment, context: str) -> np.ndarray:
    """One tensor segment as a numpy array (packed sub-byte dtypes come back as raw uint8)."""
    t = seg.tensor
    if t is None:
        raise InputError(f"{context}: not a tensor segment")
    buf = read_segment(objects, seg, f"{context}:{t.name}")
    if t.dtype.bits < 8:
        return np.frombuffer(buf, dtype=np.uint8)
    return np.frombuffer(buf, dtype=t.dtype.numpy()).reshape(t.shape)


def load(repo: Repository, rev: str, file: str | None) -> dict[str, np.ndarray]:
    cid, tree = snapshot(repo, rev)
    if file is not None:
        entries = [e for e in tree.entries if e.path == file.strip("/")]
        if not entries:
            raise PathNotFoundError(file, f"no such file in commit {cid[:12]}")
    else:
        entries = list(tree.entries)
    out: dict[str, np.ndarray] = {}
    where: dict[str, str] = {}
    for e in entries:
        manifest = read_file_manifest(repo.objects, e.manifest, e.path)
        for _, seg in manifest.tensors():
            assert seg.tensor is not None
            name = seg.tensor.name
            if name in out:
                raise InputError(
                    f"tensor {name!r} is in both {where[name]} and {e.path}; pass file= to choose"
                )
            out[name] = segment_array(repo.objects, seg, e.path)
            where[name] = e.path
    return out
