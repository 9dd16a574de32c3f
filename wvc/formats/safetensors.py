"""safetensors: parsed by wvc itself for exact byte offsets, strictly.

Layout: u64 little-endian header length N, N bytes of UTF-8 JSON, then one
data buffer. Every rule the format states is checked (header cap, valid JSON
with unique keys, known dtypes, dtype x shape = byte length, offsets in
bounds, no overlaps, no holes, buffer ends at end of file); a file that breaks
one is refused with the problem named. See docs/design.md, "Formats".
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..dtypes import DType, plain_array, raw_bytes
from ..errors import InputError, MalformedFileError
from ..manifest import TensorInfo
from ._base import FileLayout, Format, ReadAt, SegmentSpec

# The reference implementation refuses headers above 100 MB; so do we.
MAX_HEADER_SIZE = 100_000_000
METADATA_KEY = "__metadata__"
# Bound on every shape dimension and offset: keeps products and messages small.
MAX_DIM = 1 << 62


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    d: dict[str, Any] = {}
    for k, v in pairs:
        if k in d:
            raise ValueError(f"duplicate key {k!r}")
        d[k] = v
    return d


class SafetensorsFormat(Format):
    name = "safetensors"

    def claims(self, path: str) -> bool:
        return path.endswith(".safetensors")

    def parse(self, path: str, read_at: ReadAt, size: int) -> FileLayout:
        def bad(problem: str) -> MalformedFileError:
            return MalformedFileError(path, self.name, problem)

        if size < 8:
            raise bad(f"file is {size} bytes, too small for the 8-byte header length")
        head = read_at(0, 8)
        if len(head) != 8:
            raise bad("file is shorter than 8 bytes (changed while reading?)")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER_SIZE:
            raise bad(f"header length {n} exceeds the {MAX_HEADER_SIZE}-byte limit")
        if 8 + n > size:
            raise bad(f"header length {n} runs past the end of the {size}-byte file")
        raw = read_at(8, n)
        if len(raw) != n:
            raise bad("file is shorter than its header length (changed while reading?)")
        if not raw.startswith(b"{"):
            raise bad("header does not start with '{'")
        try:
            header = json.loads(raw.decode("utf-8"), object_pairs_hook=_unique_keys)
        except (UnicodeDecodeError, ValueError, RecursionError) as e:
            raise bad(f"header is not valid JSON: {str(e)[:200]}") from None
        if not isinstance(header, dict):
            raise bad("header is not a JSON object")
        data_start = 8 + n
        data_len = size - data_start
        entries: list[tuple[int, int, TensorInfo]] = []
        for name, info in header.items():
            if name == METADATA_KEY:
                self._check_metadata(info, bad)
                continue
            entries.append(self._tensor(name, info, bad))
        entries.sort(key=lambda e: (e[0], e[1]))
        cursor = 0
        segments = [SegmentSpec(0, data_start)]
        for begin, end, tensor in entries:
            if begin < cursor:
                raise bad(f"tensor {tensor.name!r} overlaps the previous tensor")
            if begin > cursor:
                raise bad(f"hole in the data buffer before tensor {tensor.name!r} at {begin}")
            if end > data_len:
                raise bad(f"tensor {tensor.name!r} ends at {end}, past the {data_len}-byte buffer")
            segments.append(SegmentSpec(data_start + begin, end - begin, tensor))
            cursor = end
        if cursor != data_len:
            raise bad(f"data buffer has {data_len - cursor} bytes after the last tensor")
        return FileLayout(self.name, size, tuple(segments))

    def describe(self, path: str, read_at: ReadAt, size: int) -> dict[str, object]:
        try:
            (n,) = struct.unpack("<Q", read_at(0, 8))
            if n > MAX_HEADER_SIZE or 8 + n > size:
                return {}
            header = json.loads(read_at(8, n))
            meta = header.get(METADATA_KEY, {})
        except (ValueError, struct.error, AttributeError):
            return {}
        return dict(meta) if isinstance(meta, dict) else {}

    @staticmethod
    def _check_metadata(info: Any, bad: Any) -> None:
        if not isinstance(info, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in info.items()
        ):
            raise bad("__metadata__ must map strings to strings")

    @staticmethod
    def _tensor(name: str, info: Any, bad: Any) -> tuple[int, int, TensorInfo]:
        if not isinstance(info, dict):
            raise bad(f"tensor {name!r}: entry is not an object")
        dtype_name = info.get("dtype")
        shape = info.get("shape")
        offsets = info.get("data_offsets")
        if not isinstance(dtype_name, str):
            raise bad(f"tensor {name!r}: missing dtype")
        try:
            dtype = DType[dtype_name]
            if dtype.is_quantized:  # GGML block types are not safetensors dtypes
                raise KeyError(dtype_name)
        except KeyError:
            raise bad(f"tensor {name!r}: unknown dtype {dtype_name!r}") from None
        if not isinstance(shape, list) or not all(
            type(d) is int and 0 <= d <= MAX_DIM for d in shape
        ):
            raise bad(f"tensor {name!r}: shape must be a list of non-negative integers up to 2**62")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(type(o) is int and 0 <= o <= MAX_DIM for o in offsets)
            or offsets[0] > offsets[1]
        ):
            raise bad(f"tensor {name!r}: data_offsets must be [begin, end] with begin <= end")
        nbytes = dtype.nbytes(tuple(shape))
        if nbytes is None:
            raise bad(f"tensor {name!r}: {dtype_name} x {shape[:8]} is not a whole number of bytes")
        if nbytes != offsets[1] - offsets[0]:
            raise bad(
                f"tensor {name!r}: {dtype_name} x {shape[:8]} is {nbytes} bytes "
                f"but data_offsets span {offsets[1] - offsets[0]}"
            )
        return offsets[0], offsets[1], TensorInfo(name, dtype, tuple(shape))


def build_header(
    tensors: Mapping[str, tuple[DType, tuple[int, ...], int]],
    metadata: Mapping[str, str] | None = None,
) -> bytes:
    """The 8-byte length and JSON header for tensors laid out in the given order.

    ``tensors`` maps name to (dtype, shape, nbytes). The JSON is padded with
    spaces to a multiple of 8 bytes, as the reference writer does.
    """
    if METADATA_KEY in tensors:
        raise InputError(f"a tensor named {METADATA_KEY!r} cannot be written to safetensors")
    header: dict[str, Any] = {}
    if metadata:
        header[METADATA_KEY] = dict(metadata)
    offset = 0
    for name, (dtype, shape, nbytes) in tensors.items():
        header[name] = {
            "dtype": dtype.name,
            "shape": list(shape),
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text


def array_dtype(array: np.ndarray) -> DType:
    return DType.from_numpy(array.dtype)


def read_file(path: str | os.PathLike[str]) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    """A whole safetensors file, parsed strictly: its ``__metadata__`` and its tensors.

    For small files (adapters); block and sub-byte dtypes are refused.
    """
    label = str(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise InputError(f"{label}: no such file", label) from None
    except OSError as e:
        raise InputError(f"{label}: cannot read: {e.strerror}", label) from None
    fmt = SafetensorsFormat()
    layout = fmt.parse(label, lambda o, n: data[o : o + n], len(data))
    meta = fmt.describe(label, lambda o, n: data[o : o + n], len(data))
    out = {}
    for s in layout.segments:
        if s.tensor is None:
            continue
        t = s.tensor
        if t.dtype.bits < 8:
            raise InputError(f"{label}: tensor {t.name!r} has unsupported dtype {t.dtype.name}")
        raw = data[s.offset : s.offset + s.size]
        out[t.name] = np.frombuffer(raw, dtype=t.dtype.numpy()).reshape(t.shape).copy()
    return {str(k): str(v) for k, v in meta.items()}, out


def encode_file(
    tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None
) -> list[bytes | memoryview]:
    """The bytes of a safetensors file holding ``tensors``, as pieces to write in order."""
    arrays = {name: plain_array(a) for name, a in tensors.items()}
    specs = {n: (array_dtype(a), tuple(a.shape), a.nbytes) for n, a in arrays.items()}
    pieces: list[bytes | memoryview] = [build_header(specs, metadata)]
    pieces += [raw_bytes(a) for a in arrays.values()]
    return pieces
