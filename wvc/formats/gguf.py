"""GGUF (llama.cpp, ggml): every tensor a segment with its ggml type and shape.

Parsed by wvc itself rather than with the ``gguf`` package: a strict reader
is about 200 lines, needs only ``read_at`` (no memory map of a multi-GB
file), bounds every count and length by the bytes that remain, and keeps the
``gguf`` package (and its dependencies) out of wvc's core install. The tests
write files with the ``gguf`` package and check this reader against it.

Layout (little-endian, versions 2 and 3): magic ``GGUF``, u32 version, u64
tensor count, u64 key/value count, the key/values, the tensor infos (name,
u32 n_dims, u64 dims innermost first, u32 ggml type, u64 offset), padding to
``general.alignment`` (default 32), then the tensor data. Shapes are stored
in wvc outermost first (reversed dims), as numpy and torch order them.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any

from ..dtypes import DType
from ..errors import MalformedFileError
from ..manifest import TensorInfo
from ._base import FileLayout, Format, ReadAt, SegmentSpec, fill_gaps, opaque_layout

MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_STRING = 1 << 30
MAX_NESTING = 8

# ggml type ids (ggml.h, enum ggml_type) -> wvc dtype; unknown ids are refused.
GGML_TYPES: dict[int, DType] = {
    0: DType.F32, 1: DType.F16, 2: DType.Q4_0, 3: DType.Q4_1, 6: DType.Q5_0, 7: DType.Q5_1,
    8: DType.Q8_0, 9: DType.Q8_1, 10: DType.Q2_K, 11: DType.Q3_K, 12: DType.Q4_K,
    13: DType.Q5_K, 14: DType.Q6_K, 15: DType.Q8_K, 16: DType.IQ2_XXS, 17: DType.IQ2_XS,
    18: DType.IQ3_XXS, 19: DType.IQ1_S, 20: DType.IQ4_NL, 21: DType.IQ3_S, 22: DType.IQ2_S,
    23: DType.IQ4_XS, 24: DType.I8, 25: DType.I16, 26: DType.I32, 27: DType.I64,
    28: DType.F64, 29: DType.IQ1_M, 30: DType.BF16, 34: DType.TQ1_0, 35: DType.TQ2_0,
    39: DType.MXFP4, 40: DType.NVFP4, 41: DType.Q1_0,
}  # fmt: skip

# GGUF metadata value types: id -> (struct code or None, name)
_SCALARS: dict[int, tuple[str, str]] = {
    0: ("<B", "u8"), 1: ("<b", "i8"), 2: ("<H", "u16"), 3: ("<h", "i16"), 4: ("<I", "u32"),
    5: ("<i", "i32"), 6: ("<f", "f32"), 7: ("<?", "bool"), 10: ("<Q", "u64"),
    11: ("<q", "i64"), 12: ("<d", "f64"),
}  # fmt: skip
_STRING = 8
_ARRAY = 9


class _Bad(ValueError):
    pass


class _Reader:
    """Sequential reads over ``read_at`` in 1 MiB blocks, bounded by the file size."""

    BLOCK = 1 << 20

    def __init__(self, read_at: ReadAt, size: int) -> None:
        self._read_at = read_at
        self.size = size
        self.pos = 0
        self._buf = b""
        self._buf_at = 0

    def take(self, n: int) -> bytes:
        if n > self.size - self.pos:
            raise _Bad(f"runs past the end of the file at offset {self.pos}")
        rel = self.pos - self._buf_at
        if rel + n > len(self._buf):
            want = max(n, self.BLOCK)
            self._buf = bytes(self._read_at(self.pos, min(want, self.size - self.pos)))
            self._buf_at = self.pos
            rel = 0
            if len(self._buf) < n:
                raise _Bad("file is shorter than expected (changed while reading?)")
        out = self._buf[rel : rel + n]
        self.pos += n
        return out

    def unpack(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        n = self.unpack("<Q")
        if n > MAX_STRING:
            raise _Bad(f"string of {n} bytes at offset {self.pos}")
        try:
            return self.take(n).decode("utf-8")
        except UnicodeDecodeError:
            raise _Bad(f"string at offset {self.pos - n} is not UTF-8") from None

    def value(self, vtype: int, depth: int = 0) -> Any:
        if vtype in _SCALARS:
            v = self.unpack(_SCALARS[vtype][0])
            if vtype == 7 and self._buf[self.pos - self._buf_at - 1] > 1:
                raise _Bad(f"bool value at offset {self.pos - 1} is not 0 or 1")
            return v
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            if depth >= MAX_NESTING:
                raise _Bad("arrays nested too deeply")
            item_type = self.unpack("<I")
            count = self.unpack("<Q")
            if item_type not in _SCALARS and item_type not in (_STRING, _ARRAY):
                raise _Bad(f"unknown array item type {item_type}")
            if count > self.size - self.pos:  # every item takes at least one byte
                raise _Bad(f"array of {count} items cannot fit in the file")
            if item_type in _SCALARS and item_type != 7:
                code = _SCALARS[item_type][0]
                width = struct.calcsize(code)
                raw = self.take(count * width)
                return list(struct.unpack(f"<{count}{code[1]}", raw))
            return [self.value(item_type, depth + 1) for _ in range(count)]
        raise _Bad(f"unknown metadata value type {vtype}")


@dataclass(frozen=True)
class GgufHeader:
    version: int
    metadata: dict[str, Any]
    tensors: list[tuple[int, TensorInfo]]  # (absolute data offset, tensor), file order
    data_start: int


def parse_header(read_at: ReadAt, size: int) -> GgufHeader:
    r = _Reader(read_at, size)
    if r.take(4) != MAGIC:
        raise _Bad("missing the GGUF magic")
    version = r.unpack("<I")
    if version not in (2, 3):
        raise _Bad(f"unsupported GGUF version {version} (wvc reads 2 and 3)")
    n_tensors = r.unpack("<Q")
    n_kv = r.unpack("<Q")
    if n_tensors > size or n_kv > size:
        raise _Bad(f"{n_tensors} tensors and {n_kv} key/values cannot fit in the file")
    metadata: dict[str, Any] = {}
    for _ in range(n_kv):
        key = r.string()
        vtype = r.unpack("<I")
        if key in metadata:
            raise _Bad(f"metadata key {key!r} appears twice")
        metadata[key] = r.value(vtype)
    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if type(alignment) is not int or alignment <= 0 or alignment & (alignment - 1):
        raise _Bad(f"general.alignment {alignment!r} is not a power of two")
    infos: list[tuple[int, TensorInfo]] = []
    names: set[str] = set()
    for _ in range(n_tensors):
        name = r.string()
        if name in names:
            raise _Bad(f"tensor {name!r} appears twice")
        names.add(name)
        n_dims = r.unpack("<I")
        if not 1 <= n_dims <= MAX_DIMS:
            raise _Bad(f"tensor {name!r}: {n_dims} dimensions (1 to {MAX_DIMS} allowed)")
        dims = [r.unpack("<Q") for _ in range(n_dims)]
        type_id = r.unpack("<I")
        offset = r.unpack("<Q")
        dtype = GGML_TYPES.get(type_id)
        if dtype is None:
            raise _Bad(f"tensor {name!r}: unknown ggml type {type_id}")
        if any(d >= 1 << 62 for d in dims):
            raise _Bad(f"tensor {name!r}: dimension out of range")
        if offset % alignment:
            raise _Bad(f"tensor {name!r}: offset {offset} is not aligned to {alignment}")
        infos.append((offset, TensorInfo(name, dtype, tuple(reversed(dims)))))
    data_start = -(-r.pos // alignment) * alignment
    if n_tensors and data_start > size:
        raise _Bad("tensor data starts past the end of the file")
    tensors = []
    for offset, t in infos:
        nbytes = t.dtype.nbytes(t.shape)
        if nbytes is None:
            raise _Bad(
                f"tensor {t.name!r}: innermost dimension {t.shape[-1]} is not a whole number "
                f"of {t.dtype.name} blocks"
            )
        if data_start + offset + nbytes > size:
            raise _Bad(f"tensor {t.name!r} runs past the end of the file")
        tensors.append((data_start + offset, t))
    return GgufHeader(version, metadata, tensors, data_start)


class GgufFormat(Format):
    name = "gguf"

    def claims(self, path: str) -> bool:
        return path.endswith(".gguf")

    def parse(self, path: str, read_at: ReadAt, size: int) -> FileLayout:
        head = bytes(read_at(0, 8)) if size >= 8 else b""
        if head[:4] == MAGIC:
            (version,) = struct.unpack("<I", head[4:8])
            if version & 0xFFFF == 0 and version >> 24 in (2, 3):  # as llama.cpp tells
                return opaque_layout(self.name, size, f"{path}: big-endian GGUF; stored opaque")
        try:
            header = parse_header(read_at, size)
        except _Bad as e:
            raise MalformedFileError(path, self.name, str(e)) from None
        specs = []
        for offset, t in sorted(header.tensors, key=lambda x: x[0]):
            nbytes = t.dtype.nbytes(t.shape)
            assert nbytes is not None
            specs.append(SegmentSpec(offset, nbytes, t))
        try:
            segments = fill_gaps(size, specs)
        except ValueError:
            raise MalformedFileError(path, self.name, "tensors overlap") from None
        return FileLayout(self.name, size, segments)

    def describe(self, path: str, read_at: ReadAt, size: int) -> dict[str, object]:
        try:
            header = parse_header(read_at, size)
        except _Bad:
            return {}
        return {"gguf.version": header.version} | {
            k: summarize(v) for k, v in header.metadata.items()
        }


def summarize(value: Any) -> object:
    """A metadata value short enough to show: long arrays and strings are abbreviated."""
    if isinstance(value, list):
        if len(value) <= 16 and all(not isinstance(v, list) for v in value):
            return [summarize(v) for v in value]
        kinds = sorted({type(v).__name__ for v in value})
        return f"[{len(value)} x {'/'.join(kinds) or 'empty'}]"
    if isinstance(value, str) and len(value) > 200:
        return value[:200] + f"... ({len(value)} chars)"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN or infinity
    return value
