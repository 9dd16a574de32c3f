"""delta and apply: move the change between two model versions as a file.

``make_delta(A, B)`` writes a delta file (format in :mod:`wvc.delta` and
docs/design.md) holding, per changed tensor, the smallest lossless encoding
(or a low-rank one when asked); ``apply_delta(file, onto=REV)`` checks that
REV's tensors are the delta's base, rebuilds the result tensors, verifies
each against the digest the delta records, and commits them as a child of
REV (or writes the files out).
"""

from __future__ import annotations

import fnmatch
import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ..delta import (
    DeltaEntry,
    DeltaFile,
    DeltaHeader,
    DeltaWriter,
    Encoding,
    Op,
    bits_dtype,
    bits_of,
    content_digest,
    index_dtype,
    lowrank_result,
)
from ..dtypes import DType, raw_bytes
from ..errors import InputError
from ..index import file_tensor_digest
from ..ingest import DEFAULT_CHUNK_SIZE, Progress, default_workers
from ..lowrank import factorize
from ..manifest import MetaValue
from .commit import CommitResult
from .diff import _side, _status, _Tensor
from .restore import snapshot
from .rewrite import NewTensor, commit_edits, new_tensor
from .tensors import TensorLocation, read_tensor, tensor_map

if TYPE_CHECKING:
    from ..repository import Repository

Mode = Literal["auto", "exact", "sparse", "lowrank"]
MODES: tuple[Mode, ...] = ("auto", "exact", "sparse", "lowrank")


class BaseMismatchError(InputError):
    """The revision a delta is applied onto is not the delta's base."""

    def __init__(self, delta: str, rev: str, tensor: str, problem: str) -> None:
        super().__init__(
            f"{delta}: {rev} is not this delta's base: tensor {tensor!r} {problem}", delta
        )
        self.tensor = tensor


@dataclass(frozen=True)
class DeltaTensor:
    """How one tensor is carried."""

    name: str
    op: Op
    encoding: Encoding
    size: int  # bytes of payload
    tensor_size: int  # bytes of the result tensor (0 when removed)
    rank: int | None = None
    residual: Encoding | None = None
    max_error: float | None = None
    energy: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "op": self.op.value,
            "encoding": self.encoding.value,
            "size": self.size,
            "tensor_size": self.tensor_size,
            "rank": self.rank,
            "residual": self.residual.value if self.residual else None,
            "max_error": self.max_error,
            "energy": self.energy,
        }

    @classmethod
    def of(cls, e: DeltaEntry, size: int) -> DeltaTensor:
        tensor_size = e.dtype.nbytes(e.shape) or 0 if e.dtype and e.shape is not None else 0
        return cls(
            e.name, e.op, e.encoding, size, tensor_size, e.rank, e.residual, e.max_error, e.energy
        )


@dataclass(frozen=True)
class DeltaResult:
    path: str
    base: str
    target: str
    lossy: bool
    size: int  # bytes of the delta file
    tensors: tuple[DeltaTensor, ...]
    unchanged: int

    @property
    def changed_size(self) -> int:
        return sum(t.tensor_size for t in self.tensors)

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "base": self.base,
            "target": self.target,
            "lossy": self.lossy,
            "size": self.size,
            "changed_size": self.changed_size,
            "unchanged": self.unchanged,
            "tensors": [t.to_json() for t in self.tensors],
        }


@dataclass(frozen=True)
class ApplyResult:
    delta: str
    onto: str  # commit id
    lossy: bool
    tensors: tuple[DeltaTensor, ...]
    changed_files: tuple[str, ...]
    commit: CommitResult | None = None  # None with --to
    to: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "delta": self.delta,
            "onto": self.onto,
            "lossy": self.lossy,
            "commit": self.commit.to_json() if self.commit else None,
            "to": self.to,
            "changed_files": list(self.changed_files),
            "tensors": [t.to_json() for t in self.tensors],
        }


# --- making a delta --------------------------------------------------------------


def _whole(t: _Tensor) -> np.ndarray:
    """A side's tensor as a flat array of its elements (bytes for packed/block dtypes)."""
    parts = list(t.read())
    if not parts:
        return np.zeros(0, dtype=bits_dtype(t.dtype) if t.dtype.bits < 8 else t.dtype.numpy())
    return np.concatenate(parts) if len(parts) > 1 else parts[0]


def _lowrank_ok(t: _Tensor) -> bool:
    d = t.dtype
    return len(t.shape) == 2 and d.is_float and d.bits >= 16 and not d.name.startswith("C")


def make_delta(
    repo: Repository,
    a: str,
    b: str,
    out: str | os.PathLike[str],
    *,
    mode: Mode = "auto",
    rank: int | None = None,
    energy: float | None = None,
    residual: bool = False,
    tensors: str | None = None,
    path: str | None = None,
    progress: Progress | None = None,
) -> DeltaResult:
    """Write a delta file that turns ``a`` into ``b`` (revisions or checkpoints on disk)."""
    if mode not in MODES:
        raise InputError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    if mode == "lowrank":
        if (rank is None) == (energy is None):
            raise InputError("--mode lowrank needs exactly one of --rank and --energy")
        if rank is not None and rank < 1:
            raise InputError(f"--rank must be at least 1, not {rank}")
        if energy is not None and not 0 < energy <= 1:
            raise InputError(f"--energy must be in (0, 1], not {energy}")
    elif rank is not None or energy is not None or residual:
        raise InputError("--rank, --energy and --residual need --mode lowrank")
    out_path = Path(out)
    with ThreadPoolExecutor(default_workers(), thread_name_prefix="wvc-delta") as pool:
        id_a, side_a = _side(repo, a, path, pool)
        id_b, side_b = _side(repo, b, path, pool)
        names = sorted(set(side_a) | set(side_b))
        unchanged: dict[str, str] = {}
        entries: list[DeltaEntry] = []
        writer = DeltaWriter(out_path)
        try:
            for name in names:
                ta, tb = side_a.get(name), side_b.get(name)
                if tensors is not None and not fnmatch.fnmatchcase(name, tensors):
                    if ta is not None:
                        unchanged[name] = ta.digest  # outside the filter: must still match
                    continue
                e = _encode(writer, name, ta, tb, mode, rank, energy, residual)
                if e is None:
                    assert ta is not None
                    unchanged[name] = ta.digest
                else:
                    entries.append(e)
                if progress and tb is not None:
                    progress(tb.size)
            header = DeltaHeader(id_a, id_b, DEFAULT_CHUNK_SIZE, tuple(entries), unchanged)
            size = writer.finish(header)
        except BaseException:
            writer.close()
            raise
    with DeltaFile(out_path) as f:
        carried = tuple(DeltaTensor.of(e, f.payload_size(e)) for e in f)
    return DeltaResult(str(out_path), id_a, id_b, header.lossy, size, carried, len(unchanged))


def _encode(
    writer: DeltaWriter,
    name: str,
    ta: _Tensor | None,
    tb: _Tensor | None,
    mode: Mode,
    rank: int | None,
    energy: float | None,
    residual: bool,
) -> DeltaEntry | None:
    status = _status(ta, tb)  # as diff decides it: unchanged tensors are not read
    if status == "unchanged":
        return None
    if status == "removed":
        assert ta is not None
        return DeltaEntry(name, Op.REMOVE, Encoding.NONE, None, None, ta.digest, None)
    assert tb is not None
    xb = _whole(tb)
    result = content_digest(tb.dtype, tb.shape, raw_bytes(xb), DEFAULT_CHUNK_SIZE)
    file = tb.file
    if status is not None:  # added, retyped or reshaped: carried whole
        op = Op.ADD if ta is None else Op.REPLACE
        key = writer.add(f"{name}:value", bits_of(tb.dtype, raw_bytes(xb)))
        base = ta.digest if ta is not None else None
        return DeltaEntry(
            name, op, Encoding.WHOLE, tb.dtype, tb.shape, base, result, file, payload={"value": key}
        )
    assert ta is not None
    xa = _whole(ta)
    bits_a, bits_b = bits_of(ta.dtype, raw_bytes(xa)), bits_of(tb.dtype, raw_bytes(xb))
    changed = np.flatnonzero(bits_a != bits_b)
    if changed.size == 0:  # equal bits under different layouts (a strided view)
        return None

    def entry(enc: Encoding, payload: dict[str, str], **kw: Any) -> DeltaEntry:
        return DeltaEntry(
            name, Op.MODIFY, enc, tb.dtype, tb.shape, ta.digest, result, file, payload=payload, **kw
        )

    if mode == "lowrank" and _lowrank_ok(tb):
        e = _encode_lowrank(writer, name, tb, xa, xb, bits_b, rank, energy, residual, entry)
        if e is not None:
            return e
        mode = "auto"  # a change with infinities or NaNs has no low-rank form
    enc = _lossless_choice(mode, changed.size, bits_b.size, bits_b.itemsize)
    return entry(enc, _write_lossless(writer, name, "", enc, bits_a, bits_b, changed))


def _lossless_choice(mode: Mode, changed: int, count: int, itemsize: int) -> Encoding:
    if mode == "exact":
        return Encoding.EXACT
    if mode == "sparse":
        return Encoding.SPARSE
    sparse_size = changed * (index_dtype(count).itemsize + itemsize)
    return Encoding.SPARSE if sparse_size < count * itemsize else Encoding.EXACT


def _write_lossless(
    writer: DeltaWriter,
    name: str,
    prefix: str,
    enc: Encoding,
    before: np.ndarray,
    after: np.ndarray,
    changed: np.ndarray,
) -> dict[str, str]:
    if enc is Encoding.EXACT:
        return {prefix + "xor": writer.add(f"{name}:{prefix}xor", before ^ after)}
    idx = changed.astype(index_dtype(after.size))
    return {
        prefix + "indices": writer.add(f"{name}:{prefix}indices", idx),
        prefix + "values": writer.add(f"{name}:{prefix}values", after[changed]),
    }


def _encode_lowrank(
    writer: DeltaWriter,
    name: str,
    tb: _Tensor,
    xa: np.ndarray,
    xb: np.ndarray,
    bits_b: np.ndarray,
    rank: int | None,
    energy: float | None,
    residual: bool,
    entry: Callable[..., DeltaEntry],
) -> DeltaEntry | None:
    """A low-rank entry, or None when the change is not finite (then it goes lossless)."""
    dtype = tb.dtype
    work = np.float64 if dtype is DType.F64 else np.float32
    a2 = xa.reshape(tb.shape)
    b2 = xb.reshape(tb.shape)
    with np.errstate(all="ignore"):
        d = b2.astype(work) - a2.astype(work)
    if not np.isfinite(d).all():
        return None
    f = factorize(d, rank=rank, energy=energy)
    if not (math.isfinite(f.total_energy) and np.isfinite(f.s).all()):
        return None
    u = (f.u * f.s).astype(work)
    v = f.vt.astype(work)
    with np.errstate(all="ignore"):
        approx = lowrank_result(a2, u, v, dtype)
        err = np.abs(b2.astype(np.float64) - approx.astype(np.float64))
    max_error = float(np.max(err)) if err.size else 0.0
    if not math.isfinite(max_error):
        return None
    payload = {"u": writer.add(f"{name}:u", u), "v": writer.add(f"{name}:v", v)}
    kw: dict[str, Any] = {"rank": f.rank, "energy": f.energy, "max_error": max_error}
    if residual:
        bits_r = bits_of(dtype, raw_bytes(approx))
        changed = np.flatnonzero(bits_r != bits_b)
        enc = _lossless_choice("auto", changed.size, bits_b.size, bits_b.itemsize)
        payload |= _write_lossless(writer, name, "residual.", enc, bits_r, bits_b, changed)
        return entry(Encoding.LOWRANK, payload, residual=enc, **kw)
    e: DeltaEntry = entry(Encoding.LOWRANK, payload, **kw)
    lossy_digest = content_digest(dtype, tb.shape, raw_bytes(approx), DEFAULT_CHUNK_SIZE)
    return replace(e, result_digest=lossy_digest)


# --- applying a delta ----------------------------------------------------------------


def _rev_digest(repo: Repository, loc: TensorLocation, chunk_size: int) -> str:
    """A tensor's wvc digest with chunks of ``chunk_size`` (hashed again if stored otherwise)."""
    if loc.manifest.chunk_size == chunk_size:
        return file_tensor_digest(loc.manifest, loc.tensor)
    arr = read_tensor(repo.objects, loc)
    return content_digest(loc.tensor.dtype, loc.tensor.shape, raw_bytes(arr), chunk_size)


def check_base(
    repo: Repository, f: DeltaFile, rev: str, locations: dict[str, TensorLocation]
) -> None:
    """Raise BaseMismatchError naming the first tensor of ``rev`` the delta does not expect."""
    cs = f.header.chunk_size

    def expect(name: str, digest: str) -> None:
        loc = locations.get(name)
        if loc is None:
            raise BaseMismatchError(f.path, rev, name, "is missing")
        if _rev_digest(repo, loc, cs) != digest:
            raise BaseMismatchError(f.path, rev, name, "has different content")

    for e in f:
        if e.op is Op.ADD:
            if e.name in locations:
                raise BaseMismatchError(f.path, rev, e.name, "already exists (the delta adds it)")
        else:
            assert e.base_digest is not None
            expect(e.name, e.base_digest)
    for name, digest in sorted(f.header.unchanged.items()):
        expect(name, digest)


def _decode(f: DeltaFile, e: DeltaEntry, base: np.ndarray | None) -> np.ndarray:
    """The result tensor's bit patterns (flat)."""
    assert e.dtype is not None and e.shape is not None
    p = e.payload
    if e.encoding is Encoding.WHOLE:
        whole: np.ndarray = f.read(p["value"]).copy()
        return whole
    assert base is not None
    bits: np.ndarray = bits_of(e.dtype, raw_bytes(base)).copy()
    if e.encoding is Encoding.LOWRANK:
        typed = bits.view(e.dtype.numpy()).reshape(e.shape)
        approx = lowrank_result(typed, f.read(p["u"]), f.read(p["v"]), e.dtype)
        bits = bits_of(e.dtype, raw_bytes(approx)).copy()
        if e.residual is None:
            return bits
        return _patch(f, e, bits, e.residual, "residual.")
    return _patch(f, e, bits, e.encoding, "")


def _patch(f: DeltaFile, e: DeltaEntry, bits: np.ndarray, enc: Encoding, prefix: str) -> np.ndarray:
    p = e.payload
    if enc is Encoding.EXACT:
        flipped: np.ndarray = bits ^ f.read(p[prefix + "xor"])
        return flipped
    idx = f.read(p[prefix + "indices"])
    values = f.read(p[prefix + "values"])
    if idx.shape != values.shape:
        raise InputError(f"{f.path}: {e.name}: sparse indices and values differ in length", f.path)
    if idx.size and int(idx.max()) >= bits.size:
        raise InputError(
            f"{f.path}: {e.name}: sparse index {int(idx.max())} is out of range", f.path
        )
    bits[idx.astype(np.intp)] = values
    return bits


def apply_delta(
    repo: Repository,
    delta: str | os.PathLike[str],
    onto: str,
    *,
    message: str | None = None,
    meta: dict[str, MetaValue] | None = None,
    branch: str | None = None,
    to: str | os.PathLike[str] | None = None,
) -> ApplyResult:
    """Apply a delta file onto ``onto`` and commit the result as its child (or write to ``to``)."""
    with DeltaFile(delta) as f:
        cid, tree = snapshot(repo, onto)
        locations = tensor_map(repo, tree, None)
        check_base(repo, f, onto, locations)
        edits: dict[str, NewTensor | None] = {}
        placement: dict[str, str] = {}
        carried = []
        for e in f:
            carried.append(DeltaTensor.of(e, f.payload_size(e)))
            if e.op is Op.REMOVE:
                edits[e.name] = None
                continue
            assert e.dtype is not None and e.shape is not None and e.result_digest is not None
            base = read_tensor(repo.objects, locations[e.name]) if e.op is Op.MODIFY else None
            bits = _decode(f, e, base)
            if content_digest(e.dtype, e.shape, raw_bytes(bits), f.header.chunk_size) != (
                e.result_digest
            ):
                raise InputError(
                    f"{f.path}: tensor {e.name!r} does not come out as the delta records "
                    "(the delta file is damaged)",
                    f.path,
                )
            edits[e.name] = new_tensor(e.dtype, e.shape, bits)
            if e.file is not None:
                placement[e.name] = e.file
            elif e.op is Op.ADD:
                placement[e.name] = "model.safetensors"
        lossy = f.header.lossy
    changed, result = commit_edits(
        repo,
        cid,
        onto,
        tree,
        edits,
        placement,
        message=message or f"Apply delta {Path(delta).name}",
        meta=meta,
        branch=branch,
        to=to,
    )
    return ApplyResult(
        str(delta), cid, lossy, tuple(carried), changed, result, None if to is None else str(to)
    )
