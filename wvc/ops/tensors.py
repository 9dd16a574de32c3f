"""Reading tensors back by name: across files and shards, lazily, verified.

A commit's tensors are found from its file manifests: whole-segment tensors
and views, in any tensor-aware format. :func:`tensor_map` names every tensor
of a selection (the whole commit, one file, a directory, or a Hugging Face
shard index, which selects its shards and the names it lists);
:class:`LazyStateDict` reads a tensor only when it is accessed.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..codecs import Buffer
from ..errors import CorruptObjectError, InputError, PathNotFoundError
from ..formats.hf_index import is_index_path, parse_index, shard_path
from ..ingest import default_workers
from ..manifest import FileManifest, FileTensor, Segment, Tree, TreeEntry, View
from ..objects import ObjectStore
from ._read import iter_chunks, read_file_manifest

if TYPE_CHECKING:
    from ..repository import Repository


@dataclass(frozen=True)
class TensorLocation:
    """Where one named tensor of a commit lives."""

    path: str  # the file in the commit
    manifest: FileManifest
    tensor: FileTensor


def read_segment(objects: ObjectStore, seg: Segment, context: str) -> bytearray:
    buf = bytearray(seg.size)
    pos = 0
    for cid in seg.chunks:
        data = objects.get(cid, context)
        if pos + len(data) > seg.size:
            raise CorruptObjectError(cid, "segment is longer than its manifest says", context)
        buf[pos : pos + len(data)] = data
        pos += len(data)
    if pos != seg.size:
        raise CorruptObjectError(
            seg.chunks[-1] if seg.chunks else "-", "segment size mismatch", context
        )
    return buf


def read_tensor(objects: ObjectStore, loc: TensorLocation) -> np.ndarray:
    """One tensor as a new, writable numpy array.

    Block-quantized (GGML) and packed sub-byte dtypes come back as their raw
    bytes, a 1-D uint8 array, since numpy has no type for them.
    """
    t = loc.tensor
    seg = loc.manifest.segments[t.segment]
    buf = read_segment(objects, seg, f"{loc.path}:{t.name}")
    if t.dtype.bits < 8:
        return np.frombuffer(buf, dtype=np.uint8)
    flat = np.frombuffer(buf, dtype=t.dtype.numpy())
    if t.view is None:
        return flat.reshape(t.shape)
    return apply_view(flat, t.view)


def apply_view(flat: np.ndarray, v: View) -> np.ndarray:
    """A view's elements out of its segment's elements, as a new contiguous array."""
    strided = np.lib.stride_tricks.as_strided(
        flat[v.offset :],
        shape=v.shape,
        strides=tuple(s * flat.itemsize for s in v.stride),
        writeable=False,
    )
    return np.array(strided, copy=True, order="C")


def stream_tensor(
    objects: ObjectStore, loc: TensorLocation, pool: ThreadPoolExecutor
) -> Iterator[Buffer]:
    """A tensor's bytes in order: its segment's chunks decoded ahead on ``pool``, or, for a
    view, its elements gathered into one contiguous buffer."""
    t = loc.tensor
    if t.view is None:
        seg = loc.manifest.segments[t.segment]
        window = 2 * default_workers() + 2
        yield from iter_chunks(objects, seg.chunks, f"{loc.path}:{t.name}", pool, window)
    else:
        yield read_tensor(objects, loc).reshape(-1).view(np.uint8).data


def _manifests(repo: Repository, entries: list[TreeEntry]) -> dict[str, FileManifest]:
    return {e.path: read_file_manifest(repo.objects, e.manifest, e.path) for e in entries}


def select_files(tree: Tree, select: str | None) -> list[TreeEntry]:
    """The files a selection names: all, one file, or every file under a directory."""
    if select is None:
        return list(tree.entries)
    p = select.strip("/")
    hits = [e for e in tree.entries if e.path == p or e.path.startswith(p + "/")]
    if not hits:
        raise PathNotFoundError(select, "no such file or directory in the commit")
    return hits


def tensor_map(repo: Repository, tree: Tree, select: str | None) -> dict[str, TensorLocation]:
    """Every tensor of the selection by name; a name in two files is an error naming both."""
    entries = select_files(tree, select)
    if len(entries) == 1 and is_index_path(entries[0].path):
        return _index_map(repo, tree, entries[0])
    manifests = _manifests(repo, entries)
    out: dict[str, TensorLocation] = {}
    for path, m in manifests.items():
        for t in m.tensors():
            if t.name in out:
                raise InputError(
                    f"tensor {t.name!r} is in both {out[t.name].path} and {path}; "
                    "select one file or directory"
                )
            out[t.name] = TensorLocation(path, m, t)
    return out


def _index_map(repo: Repository, tree: Tree, index: TreeEntry) -> dict[str, TensorLocation]:
    manifest = read_file_manifest(repo.objects, index.manifest, index.path)
    raw = StoredFile(repo.objects, manifest, index.path).read_at(0, manifest.size)
    try:
        weight_map = parse_index(raw)
    except ValueError as e:
        raise InputError(f"{index.path}: {e}") from None
    paths = {e.path: e for e in tree.entries}
    shards = sorted({shard_path(index.path, f) for f in weight_map.values()})
    missing = [s for s in shards if s not in paths]
    if missing:
        raise PathNotFoundError(missing[0], f"shard named in {index.path} is not in the commit")
    manifests = _manifests(repo, [paths[s] for s in shards])
    by_shard = {s: {t.name: t for t in m.tensors()} for s, m in manifests.items()}
    out: dict[str, TensorLocation] = {}
    for name, f in weight_map.items():
        shard = shard_path(index.path, f)
        t = by_shard[shard].get(name)
        if t is None:
            raise InputError(f"{index.path}: tensor {name!r} is not in {shard}")
        out[name] = TensorLocation(shard, manifests[shard], t)
    return out


class LazyStateDict(Mapping[str, Any]):
    """A read-only mapping of tensor name to array that reads each tensor when accessed.

    Nothing is cached: each access reads (and verifies) the tensor again, so
    holding the mapping costs only its index. ``framework="torch"`` returns
    CPU torch tensors (bf16 and float8 included, without a cast).
    """

    def __init__(
        self, objects: ObjectStore, locations: Mapping[str, TensorLocation], framework: str
    ) -> None:
        if framework not in ("numpy", "torch"):
            raise InputError(f"framework must be 'numpy' or 'torch', not {framework!r}")
        self._objects = objects
        self._locations = dict(locations)
        self.framework = framework

    def __getitem__(self, name: str) -> Any:
        loc = self._locations[name]
        arr = read_tensor(self._objects, loc)
        if self.framework == "torch":
            from ..interop.torch import to_torch

            return to_torch(arr, loc.tensor.dtype)
        return arr

    def __iter__(self) -> Iterator[str]:
        return iter(self._locations)

    def __contains__(self, name: object) -> bool:
        return name in self._locations  # no read

    def __len__(self) -> int:
        return len(self._locations)

    def location(self, name: str) -> TensorLocation:
        return self._locations[name]

    def __repr__(self) -> str:
        return f"LazyStateDict({len(self)} tensors, framework={self.framework!r})"


class StoredFile:
    """Random access to a committed file's bytes, chunk by chunk (for re-reading headers)."""

    def __init__(self, objects: ObjectStore, manifest: FileManifest, context: str) -> None:
        self._objects = objects
        self._context = context
        self.size = manifest.size
        self._starts: list[int] = []
        self._ids: list[str] = []
        pos = 0
        for seg in manifest.segments:
            for i, cid in enumerate(seg.chunks):
                self._starts.append(pos + i * manifest.chunk_size)
                self._ids.append(cid)
            pos += seg.size
        self._cache: tuple[int, bytes] | None = None

    def _chunk(self, i: int) -> bytes:
        if self._cache is None or self._cache[0] != i:
            self._cache = (i, bytes(self._objects.get(self._ids[i], self._context)))
        return self._cache[1]

    def read_at(self, offset: int, length: int) -> bytes:
        out = bytearray()
        end = min(offset + length, self.size)
        pos = offset
        while pos < end:
            i = bisect.bisect_right(self._starts, pos) - 1
            data = self._chunk(i)
            rel = pos - self._starts[i]
            piece = data[rel : rel + (end - pos)]
            if not piece:
                raise CorruptObjectError(self._ids[i], "chunk shorter than expected", self._context)
            out += piece
            pos += len(piece)
        return bytes(out)
