"""The data model: file manifests, trees and commits, and their canonical form.

These are frozen dataclasses parsed at the edge (from objects read off disk or
a remote) with every field validated, then trusted inside. Each serializes to
canonical JSON (sorted keys, no whitespace, ASCII); the blake3 of that text is
the object's id. The layouts are specified in docs/design.md, "Manifests".
"""

from __future__ import annotations

import enum
import json
import math
import posixpath
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .dtypes import DType
from .errors import InputError, WvcError
from .objects import is_object_id

MANIFEST_VERSION = 1
MetaValue = str | int | float | bool | None


class ManifestError(WvcError, ValueError):
    """A manifest, tree or commit object does not follow the spec."""


class SegmentKind(enum.Enum):
    OPAQUE = "opaque"  # bytes with no tensor meaning (headers, pickles, padding)
    TENSOR = "tensor"  # one named tensor, contiguous, exactly the segment's bytes
    STORAGE = "storage"  # typed elements with no name of their own, read through views


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: DType
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class Segment:
    """A byte range of a file as chunk ids: opaque bytes, one tensor, or a typed storage."""

    kind: SegmentKind
    size: int
    chunks: tuple[str, ...]
    tensor: TensorInfo | None = None  # TENSOR segments
    storage: DType | None = None  # STORAGE segments: the element type

    @property
    def dtype(self) -> DType | None:
        """The element type of the segment's bytes (None for opaque bytes)."""
        return self.tensor.dtype if self.tensor is not None else self.storage

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "kind": self.kind.value,
            "size": self.size,
            "chunks": list(self.chunks),
        }
        if self.tensor is not None:
            d["name"] = self.tensor.name
            d["dtype"] = self.tensor.dtype.name
            d["shape"] = list(self.tensor.shape)
        elif self.storage is not None:
            d["dtype"] = self.storage.name
        return d


@dataclass(frozen=True)
class View:
    """A named tensor read out of a segment by element offset and strides.

    Used where a container lets tensors share or slice storage (PyTorch
    checkpoints: tied weights, transposed or offset tensors). The element type
    is the segment's.
    """

    name: str
    segment: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    offset: int

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "segment": self.segment,
            "shape": list(self.shape),
            "stride": list(self.stride),
            "offset": self.offset,
        }


def contiguous_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    out = []
    acc = 1
    for d in reversed(shape):
        out.append(acc)
        acc *= d
    return tuple(reversed(out))


def is_contiguous(shape: tuple[int, ...], stride: tuple[int, ...]) -> bool:
    """Row-major contiguous, ignoring strides of size-1 dimensions (as torch does)."""
    if 0 in shape:
        return True
    return all(
        d == 1 or s == c for d, s, c in zip(shape, stride, contiguous_strides(shape), strict=True)
    )


@dataclass(frozen=True)
class FileTensor:
    """A named tensor of a file, wherever and however its bytes are stored."""

    name: str
    dtype: DType
    shape: tuple[int, ...]
    segment: int  # index into FileManifest.segments
    offset: int  # byte offset in the file of the tensor's first element
    size: int  # bytes of the tensor's elements
    view: View | None = None  # None: the tensor is exactly its segment's bytes

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def whole_segment(self) -> bool:
        """Whether the tensor's bytes are exactly its segment's, in order."""
        return self.view is None


@dataclass(frozen=True)
class FileManifest:
    """One file: its format and the segments that concatenate to its exact bytes."""

    format: str
    size: int
    chunk_size: int
    segments: tuple[Segment, ...]
    views: tuple[View, ...] = ()

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "type": "wvc.file",
            "version": MANIFEST_VERSION,
            "format": self.format,
            "size": self.size,
            "chunk_size": self.chunk_size,
            "segments": [s.to_json() for s in self.segments],
        }
        if self.views:  # absent when empty, so files without views keep their ids
            d["views"] = [v.to_json() for v in self.views]
        return d

    def segment_offsets(self) -> list[int]:
        out = []
        offset = 0
        for seg in self.segments:
            out.append(offset)
            offset += seg.size
        return out

    def tensors(self) -> list[FileTensor]:
        """Every named tensor: whole TENSOR segments in file order, then views."""
        starts = self.segment_offsets()
        out = []
        for i, seg in enumerate(self.segments):
            if seg.tensor is not None:
                t = seg.tensor
                out.append(FileTensor(t.name, t.dtype, t.shape, i, starts[i], seg.size))
        for v in self.views:
            seg = self.segments[v.segment]
            dtype = seg.dtype
            assert dtype is not None  # checked when parsed or built
            itemsize = dtype.itemsize
            size = math.prod(v.shape) * itemsize
            out.append(
                FileTensor(
                    v.name,
                    dtype,
                    v.shape,
                    v.segment,
                    starts[v.segment] + v.offset * itemsize,
                    size,
                    v,
                )
            )
        return out


@dataclass(frozen=True)
class TreeEntry:
    path: str
    manifest: str
    size: int
    format: str


@dataclass(frozen=True)
class Tree:
    """The files of one snapshot, sorted by path."""

    entries: tuple[TreeEntry, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "wvc.tree",
            "version": MANIFEST_VERSION,
            "files": [
                {"path": e.path, "manifest": e.manifest, "size": e.size, "format": e.format}
                for e in self.entries
            ],
        }

    @property
    def size(self) -> int:
        return sum(e.size for e in self.entries)


@dataclass(frozen=True)
class Commit:
    tree: str
    parents: tuple[str, ...]
    message: str
    author: str
    time: float
    meta: Mapping[str, MetaValue] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "wvc.commit",
            "version": MANIFEST_VERSION,
            "tree": self.tree,
            "parents": list(self.parents),
            "message": self.message,
            "author": self.author,
            "time": self.time,
            "meta": dict(self.meta),
        }


def canonical(obj: FileManifest | Tree | Commit) -> bytes:
    return json.dumps(
        obj.to_json(), sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


# --- parsing (hostile input) -------------------------------------------------


def normalize_path(path: str) -> str:
    """A stored path: relative, '/'-separated, no '.', '..' or empty parts."""
    if not path or "\0" in path or "\\" in path:
        raise InputError(f"invalid path {path!r}", path)
    if path.startswith("/"):
        raise InputError(f"{path}: absolute paths cannot be stored", path)
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts):
        norm = posixpath.normpath(path)
        if norm == ".." or norm.startswith("../") or norm in (".", "") or norm.startswith("/"):
            raise InputError(f"{path}: path leaves the checkpoint root", path)
        parts = norm.split("/")
    return "/".join(parts)


def path_conflict(paths: Iterable[str]) -> str | None:
    """A path that is also used as a directory by another path (``a`` and ``a/b``), if any."""
    files = set(paths)
    for p in sorted(files):
        parts = p.split("/")
        for i in range(1, len(parts)):
            prefix = "/".join(parts[:i])
            if prefix in files:
                return prefix
    return None


def _get(d: Mapping[str, Any], key: str, typ: type | tuple[type, ...]) -> Any:
    if key not in d:
        raise ManifestError(f"missing field {key!r}")
    v = d[key]
    if not isinstance(v, typ) or isinstance(v, bool):
        raise ManifestError(f"field {key!r} has the wrong type")
    return v


def _size(d: Mapping[str, Any], key: str) -> int:
    v = _get(d, key, int)
    if isinstance(v, bool) or v < 0:
        raise ManifestError(f"field {key!r} must be a non-negative integer")
    return int(v)


def _ids(v: Any, what: str) -> tuple[str, ...]:
    if not isinstance(v, list) or not all(isinstance(x, str) and is_object_id(x) for x in v):
        raise ManifestError(f"{what} must be a list of object ids")
    return tuple(v)


def _header(d: Any, type_name: str) -> Mapping[str, Any]:
    if not isinstance(d, dict):
        raise ManifestError("not a JSON object")
    if d.get("type") != type_name:
        raise ManifestError(f"expected type {type_name!r}, found {d.get('type')!r}")
    version = d.get("version")
    if type(version) is not int or version != MANIFEST_VERSION:
        raise ManifestError(f"unsupported {type_name} version {d.get('version')!r}")
    return d


def _refuse_constant(name: str) -> Any:
    raise ManifestError(f"non-finite number {name} is not allowed")


def _load_json(raw: bytes) -> Any:
    try:
        return json.loads(raw, parse_constant=_refuse_constant)
    except ManifestError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        # ValueError covers JSONDecodeError and over-long integer literals.
        raise ManifestError(f"invalid JSON: {str(e)[:200]}") from None


def _finite(v: Any, what: str) -> None:
    if isinstance(v, float) and not math.isfinite(v):
        raise ManifestError(f"{what} must be a finite number")


def parse_file_manifest(raw: bytes) -> FileManifest:
    d = _header(_load_json(raw), "wvc.file")
    size = _size(d, "size")
    chunk_size = _size(d, "chunk_size")
    if chunk_size == 0:
        raise ManifestError("chunk_size must be positive")
    segs = []
    total = 0
    for s in _get(d, "segments", list):
        if not isinstance(s, dict):
            raise ManifestError("segment is not an object")
        try:
            kind = SegmentKind(s.get("kind"))
        except ValueError:
            raise ManifestError(f"unknown segment kind {s.get('kind')!r}") from None
        seg_size = _size(s, "size")
        chunks = _ids(s.get("chunks"), "chunks")
        if len(chunks) != -(-seg_size // chunk_size):
            raise ManifestError("segment chunk count does not match its size")
        tensor = None
        storage = None
        if kind is SegmentKind.STORAGE:
            storage = _dtype(s)
            if storage.bits < 8 or seg_size % storage.itemsize:
                raise ManifestError("storage size is not a whole number of elements")
        if kind is SegmentKind.TENSOR:
            name = _get(s, "name", str)
            dtype = _dtype(s)
            shape_l = _get(s, "shape", list)
            if not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in shape_l):
                raise ManifestError("shape must be a list of non-negative integers")
            shape = tuple(shape_l)
            if dtype.nbytes(shape) != seg_size:
                raise ManifestError(f"tensor {name!r}: dtype x shape does not match its size")
            tensor = TensorInfo(name, dtype, shape)
        segs.append(Segment(kind, seg_size, chunks, tensor, storage))
        total += seg_size
    if total != size:
        raise ManifestError("segment sizes do not add up to the file size")
    raw_views = d.get("views", [])
    if "views" in d and not (isinstance(raw_views, list) and raw_views):
        raise ManifestError("views must be a non-empty list when present")
    views = tuple(_parse_view(v, segs) for v in raw_views)
    names = [s.tensor.name for s in segs if s.tensor is not None] + [v.name for v in views]
    if len(set(names)) != len(names):
        raise ManifestError("tensor names in a file must be unique")
    return FileManifest(_get(d, "format", str), size, chunk_size, tuple(segs), views)


def _dtype(d: Mapping[str, Any]) -> DType:
    try:
        return DType[_get(d, "dtype", str)]
    except KeyError:
        raise ManifestError(f"unknown dtype {d.get('dtype')!r}") from None


def _int_list(v: Any, what: str) -> tuple[int, ...]:
    if not isinstance(v, list) or not all(
        isinstance(x, int) and not isinstance(x, bool) and 0 <= x < (1 << 62) for x in v
    ):
        raise ManifestError(f"{what} must be a list of non-negative integers")
    return tuple(v)


def _parse_view(v: Any, segs: list[Segment]) -> View:
    if not isinstance(v, dict):
        raise ManifestError("view is not an object")
    name = _get(v, "name", str)
    index = _size(v, "segment")
    if index >= len(segs) or segs[index].kind is SegmentKind.OPAQUE:
        raise ManifestError(f"view {name!r}: segment {index} is not a tensor or storage segment")
    dtype = segs[index].dtype
    assert dtype is not None
    if dtype.bits < 8:
        raise ManifestError(f"view {name!r}: {dtype.name} elements cannot be viewed")
    shape = _int_list(v.get("shape"), "view shape")
    stride = _int_list(v.get("stride"), "view stride")
    if len(shape) != len(stride):
        raise ManifestError(f"view {name!r}: shape and stride differ in length")
    offset = _size(v, "offset")
    check_view_bounds(name, shape, stride, offset, segs[index].size // dtype.itemsize)
    return View(name, index, shape, stride, offset)


def check_view_bounds(
    name: str, shape: tuple[int, ...], stride: tuple[int, ...], offset: int, numel: int
) -> None:
    """Raise ManifestError unless every element of the view lies in ``numel`` elements."""
    if 0 in shape:
        if offset > numel:
            raise ManifestError(f"view {name!r}: offset is past the end of its storage")
        return
    last = offset + sum((d - 1) * s for d, s in zip(shape, stride, strict=True))
    if last >= numel:
        raise ManifestError(f"view {name!r}: elements run past the end of its storage")


def parse_tree(raw: bytes) -> Tree:
    d = _header(_load_json(raw), "wvc.tree")
    entries = []
    for e in _get(d, "files", list):
        if not isinstance(e, dict):
            raise ManifestError("tree entry is not an object")
        path = _get(e, "path", str)
        try:
            if normalize_path(path) != path:
                raise ManifestError(f"path {path!r} is not normalized")
        except InputError:
            raise ManifestError(f"invalid path {path!r}") from None
        manifest = _get(e, "manifest", str)
        if not is_object_id(manifest):
            raise ManifestError("manifest must be an object id")
        entries.append(TreeEntry(path, manifest, _size(e, "size"), _get(e, "format", str)))
    paths = [e.path for e in entries]
    if paths != sorted(set(paths)):
        raise ManifestError("tree paths must be unique and sorted")
    if path_conflict(paths):
        raise ManifestError(f"tree path {path_conflict(paths)!r} is both a file and a directory")
    return Tree(tuple(entries))


def parse_commit(raw: bytes) -> Commit:
    d = _header(_load_json(raw), "wvc.commit")
    tree = _get(d, "tree", str)
    if not is_object_id(tree):
        raise ManifestError("tree must be an object id")
    meta = _get(d, "meta", dict)
    for k, v in meta.items():
        if not isinstance(v, str | int | float | bool) and v is not None:
            raise ManifestError(f"meta value for {k!r} must be a scalar")
        _finite(v, f"meta value for {k!r}")
    t = _get(d, "time", (int, float))
    _finite(t, "time")
    if not -1e12 < t < 1e12:  # also keeps float() below from overflowing
        raise ManifestError("time is out of range")
    return Commit(
        tree=tree,
        parents=_ids(d.get("parents"), "parents"),
        message=_get(d, "message", str),
        author=_get(d, "author", str),
        time=float(t),
        meta=meta,
    )


_JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")


def parse_meta_value(text: str) -> MetaValue:
    """``--meta k=v`` values: JSON numbers, true/false/null, else the text itself."""
    if text in ("true", "false", "null"):
        return {"true": True, "false": False, "null": None}[text]
    if len(text) <= 100 and _JSON_NUMBER.fullmatch(text):
        if text.lstrip("-").isdigit():
            return int(text)
        f = float(text)
        if math.isfinite(f):
            return f
    return text
