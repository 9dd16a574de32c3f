"""NumPy ``.npy`` and ``.npz``: array data as tensor segments, headers opaque.

An ``.npy`` file is a magic string, a version, a header length and a Python
literal dict (``descr``, ``fortran_order``, ``shape``), then the raw array.
The header is parsed with ``ast.literal_eval`` (no code runs) and checked
strictly. Arrays whose bytes are not a plain little-endian, row-major tensor
(big-endian, Fortran order, strings, records, objects) are stored opaque with
a warning; restore is byte-identical either way.

An ``.npz`` file is a zip of ``.npy`` entries: stored entries become tensors
named by the entry name without ``.npy``; compressed entries
(``np.savez_compressed``) are opaque.
"""

from __future__ import annotations

import ast
import posixpath
import re
import struct
from dataclasses import dataclass

import numpy as np

from ..dtypes import DType
from ..errors import InputError, MalformedFileError
from ..manifest import TensorInfo
from . import _zip
from ._base import FileLayout, Format, ReadAt, SegmentSpec, fill_gaps

MAGIC = b"\x93NUMPY"
MAX_HEADER = 1 << 20
_DESCR = re.compile(r"[<>|=]?[a-zA-Z][0-9]*")


@dataclass(frozen=True)
class NpyHeader:
    data_offset: int  # from the start of the .npy bytes
    nbytes: int  # -1: unknown (object arrays)
    tensor: TensorInfo | None  # None: not a plain tensor (see ``why``)
    why: str | None = None


def parse_npy_header(read_at: ReadAt, size: int, name: str) -> NpyHeader:
    """Parse an ``.npy`` header; raises ValueError naming the problem."""
    if size < 10:
        raise ValueError("too small for an .npy header")
    head = read_at(0, 12 if size >= 12 else 10)
    if head[:6] != MAGIC:
        raise ValueError("missing the \\x93NUMPY magic")
    major = head[6]
    if major == 1:
        (hlen,) = struct.unpack_from("<H", head, 8)
        start = 10
    elif major in (2, 3):
        if len(head) < 12:
            raise ValueError("too small for a version 2 header")
        (hlen,) = struct.unpack_from("<I", head, 8)
        start = 12
    else:
        raise ValueError(f"unsupported .npy version {major}.{head[7]}")
    if hlen > MAX_HEADER or start + hlen > size:
        raise ValueError(f"header length {hlen} is out of bounds")
    raw = bytes(read_at(start, hlen))
    try:
        text = raw.decode("utf-8" if major == 3 else "latin1")
        header = ast.literal_eval(text)
    except (UnicodeDecodeError, ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise ValueError("header is not a Python literal dict") from None
    if not isinstance(header, dict) or set(header) != {"descr", "fortran_order", "shape"}:
        raise ValueError("header must have exactly descr, fortran_order and shape")
    shape = header["shape"]
    if not isinstance(shape, tuple) or not all(
        type(d) is int and 0 <= d < (1 << 62) for d in shape
    ):
        raise ValueError("shape must be a tuple of non-negative integers")
    fortran = header["fortran_order"]
    if not isinstance(fortran, bool):
        raise ValueError("fortran_order must be True or False")
    descr = header["descr"]
    data_offset = start + hlen
    if not isinstance(descr, str) or not _DESCR.fullmatch(descr):
        # Record and sub-array dtypes: only their size matters here.
        try:
            np_dtype = np.dtype(descr) if isinstance(descr, (str, list)) else None
        except Exception:  # numpy raises TypeError, ValueError, SyntaxError... on junk
            np_dtype = None
        if np_dtype is None or np_dtype.hasobject:
            raise ValueError(f"descr {str(descr)[:60]!r} is not a data type without objects")
        why: str | None = f"dtype {str(descr)[:60]} is not a tensor element type"
        return NpyHeader(data_offset, _nbytes(np_dtype.itemsize, shape), None, why)
    try:
        np_dtype = np.dtype(descr)
    except Exception:
        raise ValueError(f"unknown descr {descr!r}") from None
    if np_dtype.hasobject:
        # Object arrays are pickles: never a tensor, and never read.
        return NpyHeader(data_offset, -1, None, "object array (a pickle)")
    nbytes = _nbytes(np_dtype.itemsize, shape)
    why = None
    dtype = None
    if np_dtype.byteorder == ">" and np_dtype.itemsize > 1:
        why = f"big-endian dtype {descr}"
    elif fortran and sum(d > 1 for d in shape) > 1:
        why = "Fortran-ordered array"
    else:
        try:
            dtype = DType.from_numpy(np_dtype.newbyteorder("<"))
        except InputError:
            why = f"dtype {descr} is not a tensor element type"
    tensor = TensorInfo(name, dtype, tuple(shape)) if dtype is not None else None
    return NpyHeader(data_offset, nbytes, tensor, why)


def _nbytes(itemsize: int, shape: tuple[int, ...]) -> int:
    n = itemsize
    for d in shape:
        n *= d
        if n > 1 << 64:
            raise ValueError("array size overflows")
    return n


class NpyFormat(Format):
    name = "npy"

    def claims(self, path: str) -> bool:
        return path.endswith(".npy")

    def parse(self, path: str, read_at: ReadAt, size: int) -> FileLayout:
        try:
            h = parse_npy_header(read_at, size, posixpath.basename(path)[: -len(".npy")])
        except ValueError as e:
            raise MalformedFileError(path, self.name, str(e)) from None
        if h.nbytes >= 0 and h.data_offset + h.nbytes != size:
            raise MalformedFileError(
                path,
                self.name,
                f"header says {h.nbytes} data bytes but the file holds {size - h.data_offset}",
            )
        if h.tensor is None:
            warning = f"{path}: {h.why}; stored opaque" if h.why else None
            segments = (SegmentSpec(0, size),) if size else ()
            return FileLayout(self.name, size, segments, (), (warning,) if warning else ())
        spec = SegmentSpec(h.data_offset, h.nbytes, h.tensor)
        return FileLayout(self.name, size, fill_gaps(size, [spec]))


class NpzFormat(Format):
    name = "npz"

    def claims(self, path: str) -> bool:
        return path.endswith(".npz")

    def parse(self, path: str, read_at: ReadAt, size: int) -> FileLayout:
        try:
            entries = _zip.read_entries(read_at, size)
        except (_zip.ZipError, UnicodeDecodeError) as e:
            raise MalformedFileError(path, self.name, f"not a valid zip archive: {e}") from None
        specs: list[SegmentSpec] = []
        skipped: list[str] = []
        for entry in entries:
            if not entry.name.endswith(".npy"):
                continue
            if not entry.stored:
                skipped.append(f"{entry.name} (compressed)")
                continue

            def entry_read(offset: int, length: int, e: _zip.ZipEntry = entry) -> bytes:
                return read_at(e.data_offset + offset, length)

            try:
                h = parse_npy_header(entry_read, entry.size, entry.name[: -len(".npy")])
            except ValueError as e:
                raise MalformedFileError(path, self.name, f"entry {entry.name}: {e}") from None
            if h.tensor is None:
                skipped.append(f"{entry.name} ({h.why})")
                continue
            if h.data_offset + h.nbytes != entry.size:
                raise MalformedFileError(
                    path, self.name, f"entry {entry.name}: data size does not match its header"
                )
            specs.append(SegmentSpec(entry.data_offset + h.data_offset, h.nbytes, h.tensor))
        specs.sort(key=lambda s: s.offset)
        warnings: tuple[str, ...] = ()
        if skipped:
            more = f" and {len(skipped) - 3} more" if len(skipped) > 3 else ""
            warnings = (f"{path}: stored opaque: {', '.join(skipped[:3])}{more}",)
        return FileLayout(self.name, size, fill_gaps(size, specs), (), warnings)
