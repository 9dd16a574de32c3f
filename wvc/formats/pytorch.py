"""PyTorch zip checkpoints (``torch.save`` since 1.6), read without running the pickle.

A checkpoint is a zip archive: ``<dir>/data.pkl`` (a pickle of the saved
object whose tensors refer to storages by key), one stored entry
``<dir>/data/<key>`` per storage, and small records (``version``,
``byteorder``...). wvc unpickles ``data.pkl`` with a restricted unpickler:
``find_class`` answers only a fixed list of tensor-rebuild globals, each with
a stand-in that records what the tensor is (storage, dtype, offset, shape,
strides) and calls nothing of torch's. Any other global refuses the file.

Each storage becomes one segment: a TENSOR segment when exactly one tensor
covers it contiguously (then it dedups against the same tensor in any other
format), otherwise a STORAGE segment that named views read from (tied
weights, transposed or sliced tensors). Everything else is opaque, so
restore is byte-identical. Files the reader refuses (legacy non-zip pickles,
unknown globals, compressed storages) are stored opaque with a warning.
"""

from __future__ import annotations

import collections
import io
import pickle
from dataclasses import dataclass, field
from typing import Any

from ..dtypes import DType
from ..errors import MalformedFileError
from ..manifest import ManifestError, TensorInfo, View, check_view_bounds, is_contiguous
from . import _zip
from ._base import FileLayout, Format, ReadAt, SegmentSpec, fill_gaps, opaque_layout

MAX_PICKLE = 256 << 20
MAX_VISITS = 1_000_000

TORCH_DTYPES: dict[str, DType] = {
    "float32": DType.F32, "float": DType.F32, "float64": DType.F64, "double": DType.F64,
    "float16": DType.F16, "half": DType.F16, "bfloat16": DType.BF16,
    "int64": DType.I64, "long": DType.I64, "int32": DType.I32, "int": DType.I32,
    "int16": DType.I16, "short": DType.I16, "int8": DType.I8, "uint8": DType.U8,
    "uint16": DType.U16, "uint32": DType.U32, "uint64": DType.U64, "bool": DType.BOOL,
    "complex64": DType.C64, "cfloat": DType.C64, "float8_e4m3fn": DType.F8_E4M3,
    "float8_e5m2": DType.F8_E5M2, "float8_e8m0fnu": DType.F8_E8M0,
}  # fmt: skip

STORAGE_TYPES: dict[str, DType] = {
    "FloatStorage": DType.F32, "DoubleStorage": DType.F64, "HalfStorage": DType.F16,
    "BFloat16Storage": DType.BF16, "LongStorage": DType.I64, "IntStorage": DType.I32,
    "ShortStorage": DType.I16, "CharStorage": DType.I8, "ByteStorage": DType.U8,
    "BoolStorage": DType.BOOL, "ComplexFloatStorage": DType.C64,
}  # fmt: skip


class Refused(ValueError):
    """The pickle uses something the restricted reader does not accept."""


# --- stand-ins for the globals a state dict pickle uses ----------------------


@dataclass(frozen=True)
class _DTypeMarker:
    dtype: DType


@dataclass(frozen=True)
class _StorageType:
    dtype: DType | None  # None: torch.storage.UntypedStorage (bytes)


@dataclass
class _Storage:
    key: str
    dtype: DType | None
    numel: int  # elements for typed storages, bytes for untyped ones


@dataclass
class _Tensor:
    storage: _Storage
    dtype: DType
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    names: list[str] = field(default_factory=list)


class _TensorType:
    """torch.Tensor and torch.nn.Parameter, as the ``new_type`` of _rebuild_from_type_v2."""


class _Opaque:
    """A value we need not understand (numpy scalars in a checkpoint's extra state)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass


def _ints(v: Any, what: str) -> tuple[int, ...]:
    if not isinstance(v, (tuple, list)) or not all(type(x) is int and x >= 0 for x in v):
        raise Refused(f"{what} is not a tuple of non-negative integers")
    return tuple(v)


def _rebuild(storage: Any, offset: Any, size: Any, stride: Any, dtype: DType | None) -> _Tensor:
    if not isinstance(storage, _Storage):
        raise Refused("a tensor's storage is not a checkpoint storage")
    if type(offset) is not int or offset < 0:
        raise Refused("storage offset is not a non-negative integer")
    shape, strides = _ints(size, "tensor size"), _ints(stride, "tensor stride")
    if len(shape) != len(strides):
        raise Refused("tensor size and stride differ in length")
    if dtype is None:
        if storage.dtype is None:
            raise Refused("untyped storage without a dtype")
        dtype = storage.dtype
    return _Tensor(storage, dtype, offset, shape, strides)


def _rebuild_tensor_v2(storage: Any, offset: Any, size: Any, stride: Any, *rest: Any) -> _Tensor:
    return _rebuild(storage, offset, size, stride, None)


def _rebuild_tensor_v3(
    storage: Any, offset: Any, size: Any, stride: Any, _rg: Any, _hooks: Any, dtype: Any, *_: Any
) -> _Tensor:
    if not isinstance(dtype, _DTypeMarker):
        raise Refused("_rebuild_tensor_v3 without a known dtype")
    return _rebuild(storage, offset, size, stride, dtype.dtype)


def _rebuild_parameter(data: Any, *rest: Any) -> Any:
    if not isinstance(data, _Tensor):
        raise Refused("a parameter that is not a tensor")
    return data


def _rebuild_from_type_v2(func: Any, new_type: Any, args: Any, state: Any) -> Any:
    if func not in (_rebuild_tensor_v2, _rebuild_tensor_v3, _rebuild_parameter):
        raise Refused("_rebuild_from_type_v2 with an unknown function")
    if new_type is not _TensorType or not isinstance(args, tuple):
        raise Refused("tensor subclass other than Tensor or Parameter")
    return func(*args)


def _size(*args: Any) -> tuple[int, ...]:
    return tuple(args[0]) if args else ()


def _device(*args: Any) -> str:
    return ":".join(str(a) for a in args)


def _codecs_encode(text: Any, encoding: Any = "utf-8") -> bytes:
    # Protocol-2 pickles write bytes objects as _codecs.encode(str, "latin1").
    if not isinstance(text, str) or encoding != "latin1":
        raise Refused("_codecs.encode used for something other than bytes")
    return text.encode("latin1")


_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    # Protocol 2 (torch.save's default) names builtins as Python 2 did.
    ("__builtin__", "set"): set,
    ("__builtin__", "frozenset"): frozenset,
    ("_codecs", "encode"): _codecs_encode,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("torch", "Tensor"): _TensorType,
    ("torch.nn.parameter", "Parameter"): _TensorType,
    ("torch", "Size"): _size,
    ("torch", "device"): _device,
    ("torch.storage", "UntypedStorage"): _StorageType(None),
    ("numpy.core.multiarray", "scalar"): _Opaque,
    ("numpy._core.multiarray", "scalar"): _Opaque,
    ("numpy", "dtype"): _Opaque,
}
_ALLOWED.update({("torch", k): _StorageType(v) for k, v in STORAGE_TYPES.items()})
_ALLOWED.update({("torch", k): _DTypeMarker(v) for k, v in TORCH_DTYPES.items()})


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes) -> None:
        super().__init__(io.BytesIO(data))
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise Refused(f"refused global {module}.{name}") from None

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise Refused("unknown persistent id")
        _, stype, key, _location, numel = pid
        if not isinstance(stype, _StorageType) or not isinstance(key, str):
            raise Refused("unknown storage type")
        if type(numel) is not int or numel < 0:
            raise Refused(f"storage {key!r} has an invalid size")
        known = self.storages.get(key)
        if known is None:
            known = self.storages[key] = _Storage(key, stype.dtype, numel)
        elif (known.dtype, known.numel) != (stype.dtype, numel):
            raise Refused(f"storage {key!r} is described two ways")
        return known


def unpickle(data: bytes) -> tuple[Any, dict[str, _Storage]]:
    """The saved object with tensors as stand-ins, and its storages; raises Refused."""
    u = _RestrictedUnpickler(data)
    try:
        obj = u.load()
    except Refused:
        raise
    except RecursionError:
        raise Refused("pickle nests too deeply") from None
    except Exception as e:  # any malformed pickle: UnpicklingError, EOFError, TypeError...
        raise Refused(f"unreadable pickle: {type(e).__name__}: {str(e)[:120]}") from None
    return obj, u.storages


def name_tensors(obj: Any) -> list[_Tensor]:
    """Each tensor once, named by its key paths joined with '.' (``model.encoder.weight``)."""
    found: list[_Tensor] = []
    seen_tensors: set[int] = set()
    active: set[int] = set()
    all_names: set[str] = set()
    budget = [MAX_VISITS]

    def visit(v: Any, path: str, depth: int) -> None:
        if depth > 64:
            raise Refused("checkpoint object nests too deeply")
        budget[0] -= 1
        if budget[0] < 0:  # shared sub-objects can multiply paths exponentially
            raise Refused(f"checkpoint object has more than {MAX_VISITS} paths")
        if isinstance(v, _Tensor):
            name = path or "tensor"
            if name in all_names:
                raise Refused(f"two tensors would be named {name!r}")
            all_names.add(name)
            v.names.append(name)
            if id(v) not in seen_tensors:
                seen_tensors.add(id(v))
                found.append(v)
            return
        if isinstance(v, dict):
            items = list(v.items())
        elif isinstance(v, (list, tuple)):
            items = list(enumerate(v))
        else:
            return
        if id(v) in active:
            return  # a cycle
        active.add(id(v))
        for k, child in items:
            key = _key_text(k)
            if key is None:  # its tensors stay unnamed storage segments (still deduplicated)
                continue
            visit(child, f"{path}.{key}" if path else key, depth + 1)
        active.discard(id(v))

    visit(obj, "", 0)
    return found


def _key_text(k: Any) -> str | None:
    """A dict key as part of a tensor name; None for keys with no stable text."""
    if isinstance(k, str | int | float | bool) or k is None:
        return str(k)
    if isinstance(k, tuple) and all(_key_text(x) is not None for x in k):
        return str(k)
    return None


class PyTorchFormat(Format):
    name = "pytorch"
    SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")

    def claims(self, path: str) -> bool:
        return path.endswith(self.SUFFIXES)

    def parse(self, path: str, read_at: ReadAt, size: int) -> FileLayout:
        if not _zip.is_zip(read_at, size):
            head = bytes(read_at(0, 2)) if size >= 2 else b""
            if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
                return opaque_layout(
                    self.name,
                    size,
                    f"{path}: legacy (non-zip) torch.save format; stored opaque, "
                    "re-save with torch >= 1.6 to make its tensors visible",
                )
            return opaque_layout("opaque", size)  # not a PyTorch file at all
        try:
            entries = _zip.read_entries(read_at, size)
        except (_zip.ZipError, UnicodeDecodeError) as e:
            raise MalformedFileError(path, self.name, f"not a valid zip archive: {e}") from None
        try:
            return self._layout(path, read_at, size, entries)
        except Refused as e:
            return opaque_layout(self.name, size, f"{path}: {e}; stored opaque")

    def _layout(
        self, path: str, read_at: ReadAt, size: int, entries: list[_zip.ZipEntry]
    ) -> FileLayout:
        pickles = [e for e in entries if e.name.endswith("data.pkl") and e.name.count("/") <= 1]
        if len(pickles) != 1:
            raise Refused("no single data.pkl: not a torch.save checkpoint")
        prefix = pickles[0].name[: -len("data.pkl")]
        by_name = {e.name: e for e in entries}
        order = by_name.get(prefix + "byteorder")
        if order is not None:
            try:
                if _zip.read_entry(read_at, order, 16) != b"little":
                    raise Refused("big-endian checkpoint")
            except _zip.ZipError as e:
                raise Refused(str(e)) from None
        try:
            data = _zip.read_entry(read_at, pickles[0], MAX_PICKLE)
        except _zip.ZipError as e:
            raise Refused(str(e)) from None
        obj, storages = unpickle(data)
        tensors = name_tensors(obj)
        return _storage_layout(self.name, size, prefix, by_name, storages, tensors)


def _storage_layout(
    format_name: str,
    size: int,
    prefix: str,
    by_name: dict[str, _zip.ZipEntry],
    storages: dict[str, _Storage],
    tensors: list[_Tensor],
) -> FileLayout:
    users: dict[str, list[_Tensor]] = {k: [] for k in storages}
    for t in tensors:
        users[t.storage.key].append(t)
    placed: list[tuple[SegmentSpec, _Storage]] = []
    for key, st in storages.items():
        entry = by_name.get(f"{prefix}data/{key}")
        if entry is None:
            raise Refused(f"storage {key!r} has no data/{key} entry")
        if not entry.stored:
            raise Refused(f"storage {key!r} is compressed")
        dtypes = {t.dtype for t in users[key]} | ({st.dtype} if st.dtype else set())
        if len(dtypes) > 1:
            raise Refused(f"storage {key!r} is viewed as {len(dtypes)} dtypes")
        dtype = dtypes.pop() if dtypes else DType.U8
        nbytes = st.numel * (dtype.itemsize if st.dtype is not None else 1)
        if entry.size != nbytes or nbytes % dtype.itemsize:
            raise Refused(f"storage {key!r}: entry holds {entry.size} bytes, expected {nbytes}")
        numel = nbytes // dtype.itemsize
        whole = [
            t for t in users[key]
            if t.offset == 0 and _numel(t.shape) == numel and is_contiguous(t.shape, t.stride)
        ]  # fmt: skip
        tensor = None
        if whole:
            tensor = TensorInfo(whole[0].names[0], dtype, whole[0].shape)
        placed.append(
            (SegmentSpec(entry.data_offset, nbytes, tensor, None if tensor else dtype), st)
        )
    placed.sort(key=lambda p: p[0].offset)
    try:
        segments = fill_gaps(size, [spec for spec, _ in placed])
    except ValueError:
        raise Refused("storage entries overlap") from None
    at = {spec.offset: i for i, spec in enumerate(segments) if spec.dtype is not None}
    index = {id(st): at[spec.offset] for spec, st in placed}
    views: list[View] = []
    for t in tensors:
        seg_i = index[id(t.storage)]
        seg = segments[seg_i]
        numel = seg.size // t.dtype.itemsize
        for name in t.names:
            if seg.tensor is not None and seg.tensor.name == name:
                continue
            try:
                check_view_bounds(name, t.shape, t.stride, t.offset, numel)
            except ManifestError as e:
                raise Refused(str(e)) from None
            views.append(View(name, seg_i, t.shape, t.stride, t.offset))
    return FileLayout(format_name, size, segments, tuple(views))


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n
