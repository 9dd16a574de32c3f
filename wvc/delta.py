"""Delta files: a safetensors file of payload tensors whose header says how they turn A into B.

The spec is docs/design.md, "Delta files". In short: the safetensors
``__metadata__`` holds one key, ``wvc.delta``, a JSON document listing every
tensor the delta changes (its operation, encoding, base and result digests)
and the digests of the base tensors it leaves alone. Payload tensors are
named ``<tensor>:<role>``; raw bit patterns are stored as unsigned integers
of the element's width (or bytes), low-rank factors as F32/F64.

This module reads and writes the file and does the bit-level encodings; it
knows nothing of repositories (see :mod:`wvc.ops.delta`).
"""

from __future__ import annotations

import enum
import json
import math
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import blake3
import numpy as np

from .dtypes import DType, plain_array, raw_bytes
from .errors import InputError, MalformedFileError
from .formats.safetensors import SafetensorsFormat, build_header

FORMAT_NAME = "wvc.delta"
FORMAT_VERSION = 1
HEADER_KEY = "wvc.delta"
_DIGEST = re.compile(r"^[0-9a-f]{64}$")


class Op(enum.Enum):
    MODIFY = "modify"  # same dtype and shape: encoded against the base tensor
    ADD = "add"  # not in the base: carried whole
    REMOVE = "remove"  # in the base, not in the result
    REPLACE = "replace"  # dtype or shape changed: carried whole


class Encoding(enum.Enum):
    EXACT = "exact"  # XOR of the bit patterns
    SPARSE = "sparse"  # indices and new bit patterns of the changed elements
    LOWRANK = "lowrank"  # U (m x r) @ V (r x n) added in float64; lossy unless residual
    WHOLE = "whole"  # the result's bit patterns
    NONE = "none"  # removal


# Payload roles each encoding uses (``residual`` adds its own, prefixed "residual.").
ROLES: dict[Encoding, tuple[str, ...]] = {
    Encoding.EXACT: ("xor",),
    Encoding.SPARSE: ("indices", "values"),
    Encoding.LOWRANK: ("u", "v"),
    Encoding.WHOLE: ("value",),
    Encoding.NONE: (),
}


@dataclass(frozen=True)
class DeltaEntry:
    """One tensor the delta changes."""

    name: str
    op: Op
    encoding: Encoding
    dtype: DType | None  # the result's (None when removed)
    shape: tuple[int, ...] | None
    base_digest: str | None  # wvc tensor digest the base must have (None when added)
    result_digest: str | None  # digest of what apply produces (None when removed)
    file: str | None = None  # the file holding the tensor in the delta's target
    rank: int | None = None
    residual: Encoding | None = None  # EXACT or SPARSE: makes a low-rank entry lossless
    max_error: float | None = None  # max |B - result| (lossy entries)
    energy: float | None = None  # fraction of ||B - A||² a low-rank entry keeps
    payload: dict[str, str] = field(default_factory=dict)  # role -> payload tensor name

    @property
    def lossy(self) -> bool:
        return self.encoding is Encoding.LOWRANK and self.residual is None

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": self.name,
            "op": self.op.value,
            "encoding": self.encoding.value,
            "dtype": self.dtype.name if self.dtype else None,
            "shape": list(self.shape) if self.shape is not None else None,
            "base": self.base_digest,
            "result": self.result_digest,
            "file": self.file,
            "payload": dict(self.payload),
        }
        if self.encoding is Encoding.LOWRANK:
            d["rank"] = self.rank
            d["residual"] = self.residual.value if self.residual else None
            d["max_error"] = self.max_error
            d["energy"] = self.energy
        return d


@dataclass(frozen=True)
class DeltaHeader:
    base: str  # what the delta was made from (commit id or path), for people
    target: str
    chunk_size: int  # digests name chunks of this size
    entries: tuple[DeltaEntry, ...]
    unchanged: Mapping[str, str]  # tensor -> digest the base must have

    @property
    def lossy(self) -> bool:
        return any(e.lossy for e in self.entries)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "base": self.base,
            "target": self.target,
            "chunk_size": self.chunk_size,
            "lossy": self.lossy,
            "tensors": [e.to_json() for e in self.entries],
            "unchanged": dict(sorted(self.unchanged.items())),
        }


# --- bit patterns --------------------------------------------------------------


def bits_dtype(dtype: DType) -> np.dtype[Any]:
    """The unsigned integer type holding one element's bits (bytes for odd widths)."""
    if dtype.bits >= 8 and dtype.itemsize in (1, 2, 4, 8):
        return np.dtype(f"<u{dtype.itemsize}")
    return np.dtype(np.uint8)


def bits_of(dtype: DType, raw: Any) -> np.ndarray:
    """A tensor's bytes as a flat array of bit patterns."""
    return np.frombuffer(raw, dtype=bits_dtype(dtype))


def index_dtype(n: int) -> np.dtype[Any]:
    return np.dtype("<u4") if n <= 1 << 32 else np.dtype("<u8")


def content_digest(dtype: DType, shape: tuple[int, ...], raw: Any, chunk_size: int) -> str:
    """The wvc tensor digest (docs/design.md) of a plain tensor with these bytes."""
    view = memoryview(raw).cast("B")
    h = blake3.blake3(f"{dtype.name}:{list(shape)}:".encode())
    for start in range(0, view.nbytes, chunk_size):
        h.update(blake3.blake3(view[start : start + chunk_size]).digest())
    return h.hexdigest()


def lowrank_result(base: np.ndarray, u: np.ndarray, v: np.ndarray, dtype: DType) -> np.ndarray:
    """``base + u @ v`` rounded to ``dtype``, the same on every machine.

    The product is summed term by term in float64 (elementwise operations
    are exactly rounded; a BLAS matmul's summation order is not fixed), so a
    digest of the result can be recorded and checked.
    """
    m, n = base.shape
    out = np.empty((m, n), dtype=dtype.numpy())
    u64 = u.astype(np.float64)
    v64 = v.astype(np.float64)
    rows = max(1, (1 << 20) // max(n, 1))
    with np.errstate(over="ignore", invalid="ignore"):
        _accumulate(base, u64, v64, out, rows, dtype)
    return out


def _accumulate(
    base: np.ndarray, u64: np.ndarray, v64: np.ndarray, out: np.ndarray, rows: int, dtype: DType
) -> None:
    for start in range(0, base.shape[0], rows):
        acc = base[start : start + rows].astype(np.float64)
        for k in range(u64.shape[1]):
            acc += np.multiply.outer(u64[start : start + rows, k], v64[k])
        out[start : start + rows] = acc.astype(dtype.numpy())


# --- writing ---------------------------------------------------------------------


class DeltaWriter:
    """Spools payload tensors to a temporary file, then writes the delta file atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._dir = path.parent if str(path.parent) else Path(".")
        if not self._dir.is_dir():
            raise InputError(f"{path}: directory {self._dir} does not exist", str(path))
        if path.is_dir():
            raise InputError(f"{path}: is a directory; give a file name for the delta", str(path))
        self._spool: BinaryIO = tempfile.TemporaryFile(dir=self._dir)  # noqa: SIM115
        self._specs: dict[str, tuple[DType, tuple[int, ...], int]] = {}

    def add(self, name: str, array: np.ndarray) -> str:
        a = plain_array(array)
        self._specs[name] = (DType.from_numpy(a.dtype), tuple(a.shape), a.nbytes)
        self._spool.write(raw_bytes(a))
        return name

    def finish(self, header: DeltaHeader) -> int:
        """Write the file (temp, fsync, rename); its size."""
        text = json.dumps(header.to_json(), separators=(",", ":"), allow_nan=False)
        head = build_header(self._specs, {HEADER_KEY: text})
        tmp = self._dir / f".{self.path.name}.wvc-{uuid.uuid4().hex[:12]}"
        try:
            # 0o666 less the umask, as any new file: the result is meant to be shared.
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            with os.fdopen(fd, "wb") as out:
                out.write(head)
                self._spool.seek(0)
                shutil.copyfileobj(self._spool, out, 1 << 20)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        finally:
            self._spool.close()
        return self.path.stat().st_size

    def close(self) -> None:
        self._spool.close()


# --- reading ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Payload:
    dtype: DType
    shape: tuple[int, ...]
    offset: int
    size: int


class DeltaFile:
    """A delta file, parsed and checked; payload tensors are read on demand."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = str(path)
        try:
            self._f = open(path, "rb")  # noqa: SIM115 - closed by close()
        except FileNotFoundError:
            raise InputError(f"{path}: no such delta file", self.path) from None
        except OSError as e:
            raise InputError(f"{path}: cannot read: {e.strerror}", self.path) from None
        try:
            self.header, self._payloads = self._parse()
        except BaseException:
            self._f.close()
            raise

    def _bad(self, problem: str) -> MalformedFileError:
        return MalformedFileError(self.path, FORMAT_NAME, problem)

    def _read_at(self, offset: int, n: int) -> bytes:
        self._f.seek(offset)
        return self._f.read(n)

    def _parse(self) -> tuple[DeltaHeader, dict[str, _Payload]]:
        size = os.fstat(self._f.fileno()).st_size
        try:
            fmt = SafetensorsFormat()
            layout = fmt.parse(self.path, self._read_at, size)
        except MalformedFileError as e:
            raise self._bad(f"not a safetensors file ({e.problem})") from None
        meta = fmt.describe(self.path, self._read_at, size)  # the header's __metadata__
        if HEADER_KEY not in meta:
            raise self._bad(f"no {HEADER_KEY!r} entry in the safetensors metadata")
        try:
            doc = json.loads(str(meta[HEADER_KEY]), parse_constant=_refuse)
        except ValueError as e:
            raise self._bad(f"{HEADER_KEY} metadata is not valid JSON: {e}") from None
        payloads = {
            s.tensor.name: _Payload(s.tensor.dtype, s.tensor.shape, s.offset, s.size)
            for s in layout.segments
            if s.tensor is not None
        }
        try:
            header = _parse_header(doc)
        except (KeyError, TypeError, ValueError) as e:
            raise self._bad(f"bad {HEADER_KEY} header: {e}") from None
        used: set[str] = set()
        for entry in header.entries:
            self._check_payload(entry, payloads)
            used.update(entry.payload.values())
        extra = sorted(set(payloads) - used)
        if extra:
            raise self._bad(f"payload tensor {extra[0]!r} is not used by any entry")
        return header, payloads

    def _check_payload(self, e: DeltaEntry, payloads: Mapping[str, _Payload]) -> None:
        roles = set(ROLES[e.encoding])
        if e.residual is not None:
            roles |= {"residual." + r for r in ROLES[e.residual]}
        if set(e.payload) != roles:
            raise self._bad(f"{e.name}: payload roles {sorted(e.payload)} != {sorted(roles)}")
        for role, key in e.payload.items():
            if key not in payloads:
                raise self._bad(f"{e.name}: payload tensor {key!r} is missing")
            self._check_role(e, role.removeprefix("residual."), payloads[key], key)

    def _check_role(self, e: DeltaEntry, role: str, p: _Payload, key: str) -> None:
        def bad(problem: str) -> MalformedFileError:
            return self._bad(f"{e.name}: payload {key!r} {problem}")

        assert e.dtype is not None and e.shape is not None
        nbytes = e.dtype.nbytes(e.shape)
        assert nbytes is not None
        elem = bits_dtype(e.dtype)
        count = nbytes // elem.itemsize
        if role in ("xor", "value"):
            if p.dtype.numpy() != elem or p.shape != (count,):
                raise bad(f"must be {elem} x {count}, is {p.dtype.name}{list(p.shape)}")
        elif role == "indices":
            if p.dtype.numpy() not in (np.dtype("<u4"), np.dtype("<u8")) or len(p.shape) != 1:
                raise bad("must be a 1-D U32 or U64 array")
        elif role == "values":
            if p.dtype.numpy() != elem or len(p.shape) != 1:
                raise bad(f"must be a 1-D {elem} array")
        elif role in ("u", "v"):
            if len(e.shape) != 2 or p.dtype not in (DType.F32, DType.F64):
                raise bad("must be an F32 or F64 factor of a 2-D tensor")
            m, n = e.shape
            r = e.rank
            want = (m, r) if role == "u" else (r, n)
            if p.shape != want:
                raise bad(f"has shape {list(p.shape)}, expected {list(want)}")

    def read(self, key: str) -> np.ndarray:
        p = self._payloads[key]
        raw = self._read_at(p.offset, p.size)
        if len(raw) != p.size:
            raise self._bad(f"payload {key!r} is truncated (file changed while reading?)")
        return np.frombuffer(raw, dtype=p.dtype.numpy()).reshape(p.shape)

    def payload_size(self, entry: DeltaEntry) -> int:
        return sum(self._payloads[k].size for k in entry.payload.values())

    def __iter__(self) -> Iterator[DeltaEntry]:
        return iter(self.header.entries)

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> DeltaFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _refuse(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _digest(v: Any, what: str, optional: bool) -> str | None:
    if v is None and optional:
        return None
    if not isinstance(v, str) or not _DIGEST.match(v):
        raise ValueError(f"{what} must be a 64-digit hex digest")
    return v


def _shape(v: Any, what: str) -> tuple[int, ...]:
    if not isinstance(v, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 1 << 62 for d in v
    ):
        raise ValueError(f"{what} must be a list of non-negative integers")
    return tuple(v)


def _parse_header(doc: Any) -> DeltaHeader:
    if not isinstance(doc, dict):
        raise TypeError("not a JSON object")
    if doc.get("format") != FORMAT_NAME:
        raise ValueError(f"format is {doc.get('format')!r}, not {FORMAT_NAME!r}")
    if doc.get("version") != FORMAT_VERSION:
        raise ValueError(
            f"version {doc.get('version')!r} is not supported (this wvc reads {FORMAT_VERSION})"
        )
    chunk_size = doc["chunk_size"]
    if not isinstance(chunk_size, int) or chunk_size <= 0:
        raise ValueError("chunk_size must be a positive integer")
    unchanged = doc["unchanged"]
    if not isinstance(unchanged, dict):
        raise TypeError("unchanged must be an object")
    for name, d in unchanged.items():
        _digest(d, f"unchanged {name!r}", False)
    entries = []
    seen: set[str] = set()
    for raw in doc["tensors"]:
        e = _parse_entry(raw)
        if e.name in seen or e.name in unchanged:
            raise ValueError(f"tensor {e.name!r} is listed twice")
        seen.add(e.name)
        entries.append(e)
    return DeltaHeader(
        str(doc["base"]), str(doc["target"]), chunk_size, tuple(entries), dict(unchanged)
    )


_ENCODINGS = {
    Op.MODIFY: {Encoding.EXACT, Encoding.SPARSE, Encoding.LOWRANK},
    Op.ADD: {Encoding.WHOLE},
    Op.REPLACE: {Encoding.WHOLE},
    Op.REMOVE: {Encoding.NONE},
}


def _parse_entry(d: Any) -> DeltaEntry:
    if not isinstance(d, dict):
        raise TypeError("each tensor entry must be an object")
    name = d["name"]
    if not isinstance(name, str) or not name:
        raise ValueError("tensor name must be a non-empty string")
    op = Op(d["op"])
    enc = Encoding(d["encoding"])
    if enc not in _ENCODINGS[op]:
        raise ValueError(f"{name}: encoding {enc.value} cannot carry a {op.value}")
    removed = op is Op.REMOVE
    dtype = None if removed else DType.parse(str(d["dtype"]))
    shape = None if removed else _shape(d["shape"], f"{name}: shape")
    if dtype is not None and shape is not None and dtype.nbytes(shape) is None:
        raise ValueError(f"{name}: shape {list(shape)} does not fit dtype {dtype.name}")
    payload = d["payload"]
    if not isinstance(payload, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in payload.items()
    ):
        raise TypeError(f"{name}: payload must map roles to tensor names")
    rank = residual = max_error = energy = None
    if enc is Encoding.LOWRANK:
        if shape is None or len(shape) != 2:
            raise ValueError(f"{name}: a low-rank entry needs a 2-D tensor")
        assert dtype is not None
        if not dtype.is_float or dtype.bits < 16 or dtype.name.startswith("C"):
            raise ValueError(f"{name}: a low-rank entry needs a real float dtype")
        rank = d["rank"]
        if not isinstance(rank, int) or isinstance(rank, bool) or not 0 < rank <= min(shape):
            raise ValueError(f"{name}: rank must be an integer in 1..{min(shape)}")
        if d.get("residual") is not None:
            residual = Encoding(d["residual"])
            if residual not in (Encoding.EXACT, Encoding.SPARSE):
                raise ValueError(f"{name}: residual must be exact or sparse")
        max_error = _float(d.get("max_error"), f"{name}: max_error")
        energy = _float(d.get("energy"), f"{name}: energy")
    file = d.get("file")
    return DeltaEntry(
        name=name,
        op=op,
        encoding=enc,
        dtype=dtype,
        shape=shape,
        base_digest=_digest(d.get("base"), f"{name}: base", op is Op.ADD),
        result_digest=_digest(d.get("result"), f"{name}: result", removed),
        file=file if isinstance(file, str) else None,
        rank=rank,
        residual=residual,
        max_error=max_error,
        energy=energy,
        payload=dict(payload),
    )


def _float(v: Any, what: str) -> float | None:
    if v is None:
        return None
    if not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v):
        raise ValueError(f"{what} must be a finite number")
    return float(v)
