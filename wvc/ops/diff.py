"""diff: which tensors differ between two model versions, and by how much.

Each side is a revision or a checkpoint on disk (a file or directory not
committed). Tensors are matched by name across files and shards. A tensor is
unchanged when its digest (dtype, shape and chunk ids, see docs/design.md) is
equal on both sides: decided without reading data, so shared tensors cost
nothing. Modified float tensors are then read chunk by chunk (bounded memory)
and compared in float64: fraction of elements whose bits changed, L2 norm of
the delta, relative change, max absolute change, cosine similarity and,
opt-in, the rank that holds 90 % and 99 % of the delta's energy (randomized
SVD). Integer and quantized tensors report changed elements (bytes for
block-quantized types).
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import blake3
import numpy as np

from ..dtypes import DType
from ..errors import InputError, PathNotFoundError, WvcError
from ..formats import detect
from ..index import file_tensor_digest
from ..ingest import DEFAULT_CHUNK_SIZE, FileSource, default_workers
from ..manifest import FileManifest, FileTensor, Segment
from .commit import collect_files
from .restore import snapshot
from .tensors import apply_view, stream_tensor, tensor_map

if TYPE_CHECKING:
    from ..repository import Repository

Status = Literal["added", "removed", "unchanged", "modified", "reshaped", "retyped"]
BLOCK_ELEMENTS = 1 << 20  # elements compared at a time
RANK_SKETCH = 128  # singular values estimated for --rank


@dataclass(frozen=True)
class TensorStats:
    """Numeric change of one modified tensor (float fields are None for non-float dtypes)."""

    numel: int
    changed: int  # elements whose bits differ (bytes for block-quantized dtypes)
    changed_fraction: float
    l2: float | None = None  # ||B - A||
    relative: float | None = None  # ||B - A|| / ||A|| (inf if ||A|| = 0 and B != A)
    max_abs: float | None = None
    cosine: float | None = None
    rank90: int | None = None  # rank holding 90 % of the delta's energy (2-D, with rank=True)
    rank99: int | None = None
    rank_bound: int | None = None  # ranks above this were not estimated

    def to_json(self) -> dict[str, Any]:
        return {
            "numel": self.numel,
            "changed": self.changed,
            "changed_fraction": _num(self.changed_fraction),
            "l2": _num(self.l2),
            "relative": _num(self.relative),
            "max_abs": _num(self.max_abs),
            "cosine": _num(self.cosine),
            "rank90": self.rank90,
            "rank99": self.rank99,
        }


def _num(v: float | None) -> float | str | None:
    """JSON has no NaN or infinity: those become strings."""
    if v is None or math.isfinite(v):
        return v
    return str(v)


@dataclass(frozen=True)
class TensorDiff:
    name: str
    status: Status
    dtype_a: str | None
    dtype_b: str | None
    shape_a: tuple[int, ...] | None
    shape_b: tuple[int, ...] | None
    size_a: int
    size_b: int
    stats: TensorStats | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "dtype": [self.dtype_a, self.dtype_b],
            "shape": [
                list(self.shape_a) if self.shape_a is not None else None,
                list(self.shape_b) if self.shape_b is not None else None,
            ],
            "size": [self.size_a, self.size_b],
            "stats": self.stats.to_json() if self.stats else None,
        }


@dataclass(frozen=True)
class DiffResult:
    a: str  # the commit id, or the path on disk
    b: str
    tensors: tuple[TensorDiff, ...]
    counts: dict[str, int] = field(default_factory=dict)
    bytes_changed: int = 0

    @property
    def differs(self) -> bool:
        return any(t.status != "unchanged" for t in self.tensors)

    def to_json(self) -> dict[str, Any]:
        return {
            "a": self.a,
            "b": self.b,
            "summary": {**self.counts, "bytes_changed": self.bytes_changed},
            "tensors": [t.to_json() for t in self.tensors],
        }


# --- the two sides -------------------------------------------------------------


@dataclass(frozen=True)
class _Tensor:
    """One tensor of a side: its description, digest and a way to read it in blocks."""

    name: str
    dtype: DType
    shape: tuple[int, ...]
    size: int
    digest: str
    read: Any  # () -> Iterator[np.ndarray] of raw elements (uint8 for packed/block dtypes)


def _rev_side(
    repo: Repository, rev: str, select: str | None, pool: ThreadPoolExecutor
) -> tuple[str, dict[str, _Tensor]]:
    cid, tree = snapshot(repo, rev)
    out = {}
    for name, loc in tensor_map(repo, tree, select).items():
        t = loc.tensor
        out[name] = _Tensor(
            name,
            t.dtype,
            t.shape,
            t.size,
            file_tensor_digest(loc.manifest, t),
            lambda loc=loc: (
                _elements(loc.tensor.dtype, b) for b in stream_tensor(repo.objects, loc, pool)
            ),
        )
    return cid, out


def _elements(dtype: DType, raw: Any) -> np.ndarray:
    if dtype.bits < 8:
        return np.frombuffer(raw, dtype=np.uint8)
    return np.frombuffer(raw, dtype=dtype.numpy())


def _disk_side(path: Path) -> tuple[str, dict[str, _Tensor]]:
    """Tensors of a checkpoint on disk, with digests computed the way a commit would."""
    out: dict[str, _Tensor] = {}
    where: dict[str, str] = {}
    for stored, real in collect_files([path]):
        src = FileSource(str(real))
        try:
            layout = detect(stored).parse(str(real), src.read_at, src.size)
            segments = []
            for spec in layout.segments:
                chunks: tuple[str, ...] = ()
                if spec.dtype is not None:
                    chunks = tuple(
                        blake3.blake3(src.read_at(off, n)).hexdigest()
                        for off, n in _ranges(spec.offset, spec.size, DEFAULT_CHUNK_SIZE)
                    )
                segments.append(Segment(spec.kind, spec.size, chunks, spec.tensor, spec.storage))
            manifest = FileManifest(
                layout.format, layout.size, DEFAULT_CHUNK_SIZE, tuple(segments), layout.views
            )
        finally:
            src.close()
        offsets = [s.offset for s in layout.segments]
        for t in manifest.tensors():
            if t.name in out:
                raise InputError(
                    f"tensor {t.name!r} is in both {where[t.name]} and {stored}; "
                    "diff one file or directory"
                )
            where[t.name] = stored
            out[t.name] = _Tensor(
                t.name,
                t.dtype,
                t.shape,
                t.size,
                file_tensor_digest(manifest, t),
                lambda r=real, t=t, m=manifest, o=offsets: _read_disk(r, m, t, o),
            )
    return str(path), out


def _ranges(offset: int, size: int, step: int) -> Iterator[tuple[int, int]]:
    for start in range(0, size, step):
        yield offset + start, min(step, size - start)


def _read_disk(
    real: Path, manifest: FileManifest, t: FileTensor, seg_offsets: list[int]
) -> Iterator[np.ndarray]:
    src = FileSource(str(real))
    try:
        seg = manifest.segments[t.segment]
        start = seg_offsets[t.segment]
        if t.view is not None:
            raw = src.read_at(start, seg.size)
            flat = np.frombuffer(raw, dtype=t.dtype.numpy())
            yield apply_view(flat, t.view).reshape(-1)
            return
        for off, n in _ranges(start, seg.size, DEFAULT_CHUNK_SIZE):
            yield _elements(t.dtype, src.read_at(off, n))
        src.check_unchanged()
    finally:
        src.close()


def _side(
    repo: Repository, spec: str, select: str | None, pool: ThreadPoolExecutor
) -> tuple[str, dict[str, _Tensor]]:
    """A revision, or (if no revision has that name and it exists) a path on disk."""
    p = Path(spec)
    if p.exists() and not _is_revision(repo, spec):
        if select is not None:
            p = p / select
            if not p.exists():
                raise PathNotFoundError(str(p))
        return _disk_side(p)
    return _rev_side(repo, spec, select, pool)


def _is_revision(repo: Repository, spec: str) -> bool:
    try:
        repo.resolve(spec)
    except WvcError:
        return False
    return True


# --- comparing ---------------------------------------------------------------


def _blocks(it: Iterator[np.ndarray], n: int) -> Iterator[np.ndarray]:
    """Re-cut a stream of 1-D arrays into arrays of exactly ``n`` elements (last shorter)."""
    pending: list[np.ndarray] = []
    have = 0
    for a in it:
        pending.append(a)
        have += a.size
        while have >= n:
            joined = np.concatenate(pending) if len(pending) > 1 else pending[0]
            yield joined[:n]
            rest = joined[n:]
            pending = [rest] if rest.size else []
            have = rest.size
    if have:
        yield np.concatenate(pending) if len(pending) > 1 else pending[0]


def _compare(a: _Tensor, b: _Tensor, rank: bool) -> TensorStats:
    numel = math.prod(b.shape)
    dtype = b.dtype
    changed = 0
    float_mode = dtype.is_float and dtype.bits >= 8
    sq = sa = sb = sab = 0.0
    max_abs = 0.0
    keep = rank and float_mode and len(b.shape) == 2 and numel > 0
    deltas: list[np.ndarray] = []
    pairs = zip(_blocks(a.read(), BLOCK_ELEMENTS), _blocks(b.read(), BLOCK_ELEMENTS), strict=True)
    with np.errstate(all="ignore"):
        for xa, xb in pairs:
            ua = xa.view(np.uint8).reshape(xa.size, -1)
            ub = xb.view(np.uint8).reshape(xb.size, -1)
            changed += int(np.count_nonzero((ua != ub).any(axis=1)))
            if float_mode:
                if dtype is DType.C64:  # real and imaginary parts as components
                    xa, xb = xa.view(np.float32), xb.view(np.float32)
                fa = xa.astype(np.float64)
                fb = xb.astype(np.float64)
                d = fb - fa
                sq += float(np.dot(d, d))
                sa += float(np.dot(fa, fa))
                sb += float(np.dot(fb, fb))
                sab += float(np.dot(fa, fb))
                if d.size:
                    max_abs = max(max_abs, float(np.max(np.abs(d))))
                if keep:
                    deltas.append(d.astype(np.float32))
    # Packed and block-quantized dtypes are compared byte by byte.
    units = numel if dtype.bits >= 8 else b.size
    fraction = changed / units if units else 0.0
    if not float_mode:
        return TensorStats(units, changed, fraction)
    l2 = math.sqrt(sq)
    norm_a = math.sqrt(sa)
    relative = l2 / norm_a if norm_a > 0 else (0.0 if l2 == 0 else math.inf)
    denom = math.sqrt(sa) * math.sqrt(sb)
    cosine = sab / denom if denom > 0 else (1.0 if sa == sb == 0 else 0.0)
    r90 = r99 = bound = None
    if keep:
        matrix = np.concatenate(deltas).reshape(b.shape)
        r90, r99, bound = _energy_ranks(matrix, sq)
    return TensorStats(units, changed, fraction, l2, relative, max_abs, cosine, r90, r99, bound)


def _energy_ranks(d: np.ndarray, energy: float) -> tuple[int, int, int]:
    """Ranks holding 90 % and 99 % of ||d||², by randomized SVD (Halko et al.)."""
    m, n = d.shape
    k = min(m, n, RANK_SKETCH)
    if energy == 0:
        return 0, 0, k
    rng = np.random.default_rng(0)
    if k == min(m, n):
        s = np.linalg.svd(d, compute_uv=False)
    else:
        q, _ = np.linalg.qr(d @ rng.standard_normal((n, k + 10), dtype=np.float32))
        for _ in range(2):  # power iterations sharpen the spectrum estimate
            q, _ = np.linalg.qr(d.T @ q)
            q, _ = np.linalg.qr(d @ q)
        s = np.linalg.svd(q.T @ d, compute_uv=False)[:k]
    cum = np.cumsum(s.astype(np.float64) ** 2) / energy

    def need(frac: float) -> int:
        i = int(np.searchsorted(cum, frac - 1e-12))
        return i + 1 if i < len(cum) else k + 1  # k + 1: more than was estimated

    return need(0.90), need(0.99), k


def diff(
    repo: Repository,
    a: str,
    b: str,
    *,
    tensors: str | None = None,
    rank: bool = False,
    path: str | None = None,
) -> DiffResult:
    """Compare the tensors of ``a`` and ``b`` (revisions or paths on disk), matched by name.

    ``tensors`` is a glob over tensor names; ``path`` restricts both sides to
    one file, directory or shard index.
    """
    with ThreadPoolExecutor(default_workers(), thread_name_prefix="wvc-diff") as pool:
        id_a, side_a = _side(repo, a, path, pool)
        id_b, side_b = _side(repo, b, path, pool)
        names = sorted(set(side_a) | set(side_b))
        if tensors is not None:
            names = [n for n in names if fnmatch.fnmatchcase(n, tensors)]
        out = [_diff_one(n, side_a.get(n), side_b.get(n), rank) for n in names]
    counts = {s: 0 for s in ("added", "removed", "modified", "reshaped", "retyped", "unchanged")}
    changed_bytes = 0
    for t in out:
        counts[t.status] += 1
        if t.status != "unchanged":
            changed_bytes += max(t.size_a, t.size_b)
    return DiffResult(id_a, id_b, tuple(out), counts, changed_bytes)


def _diff_one(name: str, ta: _Tensor | None, tb: _Tensor | None, rank: bool) -> TensorDiff:
    def make(status: Status, stats: TensorStats | None = None) -> TensorDiff:
        return TensorDiff(
            name,
            status,
            ta.dtype.name if ta else None,
            tb.dtype.name if tb else None,
            ta.shape if ta else None,
            tb.shape if tb else None,
            ta.size if ta else 0,
            tb.size if tb else 0,
            stats,
        )

    if ta is None:
        return make("added")
    if tb is None:
        return make("removed")
    if ta.dtype is not tb.dtype:
        return make("retyped")
    if ta.shape != tb.shape:
        return make("reshaped")
    if ta.digest == tb.digest:
        return make("unchanged")
    stats = _compare(ta, tb, rank)
    return make("unchanged" if stats.changed == 0 else "modified", stats)
