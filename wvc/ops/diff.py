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
import threading
from collections import deque
from collections.abc import Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from itertools import zip_longest
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
    file: str  # the file holding it (in the commit, or under the path on disk)


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
            loc.path,
        )
    return cid, out


def _elements(dtype: DType, raw: Any) -> np.ndarray:
    if dtype.bits < 8:
        return np.frombuffer(raw, dtype=np.uint8)
    return np.frombuffer(raw, dtype=dtype.numpy())


def _disk_side(path: Path) -> tuple[str, dict[str, _Tensor]]:
    """Tensors of a checkpoint on disk, with digests computed the way a commit would."""
    out: dict[str, _Tensor] = {}
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
                    f"tensor {t.name!r} is in both {out[t.name].file} and {stored}; "
                    "diff one file or directory"
                )
            out[t.name] = _Tensor(
                t.name,
                t.dtype,
                t.shape,
                t.size,
                file_tensor_digest(manifest, t),
                lambda r=real, t=t, m=manifest, o=offsets: _read_disk(r, m, t, o),
                stored,
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
#
# A modified tensor is compared block by block (BLOCK_ELEMENTS elements of each side).
# Each block pair is one task: count the elements whose bits differ (integer views,
# one comparison per element), then, for float dtypes, the partial sums ||d||², ||a||²,
# ||b||², <a, b> and max |d| in float64. diff() reads the two sides on two threads
# (chunks decoded on its pool) and runs the tasks on the same pool (numpy releases the
# GIL), for all modified tensors in one stream with a bounded number in flight. Partial
# results are added up in block order, so the figures do not depend on the scheduling.


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


# Elements converted to float64 at a time inside a block: the three float64 buffers
# (1.5 MiB) stay in the core's cache while the sums run over them.
_SUB_ELEMENTS = 1 << 16
_scratch = threading.local()


def _buffers() -> np.ndarray:
    """This thread's float64 work buffers, (3, _SUB_ELEMENTS), reused from block to block."""
    buf: np.ndarray | None = getattr(_scratch, "buf", None)
    if buf is None:
        buf = _scratch.buf = np.empty((3, _SUB_ELEMENTS), np.float64)
    return buf


@dataclass(frozen=True)
class _Part:
    """What one block pair contributes to a tensor's statistics."""

    changed: int
    sq: float = 0.0  # ||b - a||²
    sa: float = 0.0  # ||a||²
    sb: float = 0.0  # ||b||²
    sab: float = 0.0  # <a, b>
    max_abs: float = 0.0


def _changed(xa: np.ndarray, xb: np.ndarray) -> int:
    """Elements whose bits differ, compared as unsigned integers of the element's width."""
    width = xa.itemsize
    if width in (1, 2, 4, 8):
        u = np.dtype(f"u{width}")
        return int(np.count_nonzero(xa.view(u) != xb.view(u)))
    ua = xa.view(np.uint8).reshape(xa.size, width)
    ub = xb.view(np.uint8).reshape(xb.size, width)
    return int(np.count_nonzero((ua != ub).any(axis=1)))


def _nan_max(x: float, y: float) -> float:
    """The larger of two floats, NaN if either is NaN."""
    return x if x >= y or x != x else y


def _block_stats(
    xa: np.ndarray, xb: np.ndarray, float_mode: bool, delta: np.ndarray | None
) -> _Part:
    """Compare one block pair; ``delta`` (float32, the block's size), if given, gets b - a.

    Float elements are converted to float64 (exactly) a sub-block at a time into
    reused buffers, so the sums are float64 sums of exact float64 values, like
    ``x.astype(np.float64)`` of the whole block would give, without the copies.
    """
    changed = _changed(xa, xb)
    if not float_mode:
        return _Part(changed)
    if xa.dtype.kind == "c":  # complex: real and imaginary parts as components
        xa = xa.view(xa.real.dtype)
        xb = xb.view(xb.real.dtype)
    exact = xa.dtype == np.float64  # no conversion needed
    buf = _buffers()
    sq = sa = sb = sab = 0.0
    max_abs = 0.0
    with np.errstate(all="ignore"):
        for i in range(0, xa.size, _SUB_ELEMENTS):
            j = min(i + _SUB_ELEMENTS, xa.size)
            n = j - i
            fa, fb, d = buf[0, :n], buf[1, :n], buf[2, :n]
            if exact:
                fa, fb = xa[i:j], xb[i:j]
            else:
                np.copyto(fa, xa[i:j], casting="unsafe")
                np.copyto(fb, xb[i:j], casting="unsafe")
            np.subtract(fb, fa, out=d)
            # einsum, not np.dot: a BLAS dot may start its own threads (OpenBLAS does
            # above 10k elements), which fight the pool's threads for the cores.
            sq += float(np.einsum("i,i->", d, d))
            sa += float(np.einsum("i,i->", fa, fa))
            sb += float(np.einsum("i,i->", fb, fb))
            sab += float(np.einsum("i,i->", fa, fb))
            hi, lo = float(d.max()), float(d.min())
            max_abs = _nan_max(max_abs, _nan_max(hi, -lo))
            if delta is not None:
                np.copyto(delta[i:j], d, casting="unsafe")
    return _Part(changed, sq, sa, sb, sab, max_abs)


class _Stats:
    """The statistics of one tensor pair, added up block by block in order."""

    def __init__(self, a: _Tensor, b: _Tensor, rank: bool) -> None:
        self.a, self.b = a, b
        self.numel = math.prod(b.shape)
        self.float_mode = b.dtype.is_float and b.dtype.bits >= 8
        keep = rank and self.float_mode and len(b.shape) == 2 and self.numel > 0
        keep = keep and b.dtype is not DType.C64  # a complex delta is not one real matrix
        # --rank needs the whole delta: one float32 copy of the tensor, filled block by block.
        self.delta = np.empty(self.numel, np.float32) if keep else None
        self.offset = 0  # elements handed out so far (for the delta)
        self.changed = 0
        self.sq = self.sa = self.sb = self.sab = self.max_abs = 0.0

    def pairs(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The block pairs to compare, read as they are asked for (on this thread)."""
        blocks_a = _blocks(self.a.read(), BLOCK_ELEMENTS)
        blocks_b = _blocks(self.b.read(), BLOCK_ELEMENTS)
        for xa, xb in zip_longest(blocks_a, blocks_b):
            if xa is None or xb is None:
                raise _uneven(self.b)
            yield xa, xb

    def task(
        self, xa: np.ndarray, xb: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, bool, np.ndarray | None]:
        """The arguments of :func:`_block_stats` for the next block pair."""
        if xa.size != xb.size:
            raise _uneven(self.b)
        delta = None
        if self.delta is not None:
            delta = self.delta[self.offset : self.offset + xb.size]
            self.offset += xb.size
        return xa, xb, self.float_mode, delta

    def add(self, p: _Part) -> None:
        self.changed += p.changed
        self.sq += p.sq
        self.sa += p.sa
        self.sb += p.sb
        self.sab += p.sab
        self.max_abs = _nan_max(self.max_abs, p.max_abs)

    def result(self) -> TensorStats:
        b = self.b
        # Packed and block-quantized dtypes are compared byte by byte.
        units = self.numel if b.dtype.bits >= 8 else b.size
        fraction = self.changed / units if units else 0.0
        if not self.float_mode:
            return TensorStats(units, self.changed, fraction)
        sq, sa, sb, sab = self.sq, self.sa, self.sb, self.sab
        l2 = math.sqrt(sq)
        norm_a = math.sqrt(sa)
        relative = l2 / norm_a if norm_a > 0 else (0.0 if l2 == 0 else math.inf)
        denom = math.sqrt(sa) * math.sqrt(sb)
        cosine = sab / denom if denom > 0 else (1.0 if sa == sb == 0 else 0.0)
        r90 = r99 = bound = None
        if self.delta is not None:
            matrix, self.delta = self.delta.reshape(b.shape), None
            r90, r99, bound = _energy_ranks(matrix, sq)
        return TensorStats(
            units, self.changed, fraction, l2, relative, self.max_abs, cosine, r90, r99, bound
        )


def _uneven(t: _Tensor) -> InputError:
    return InputError(f"tensor {t.name!r}: one side holds more data than the other")


def _compare_all(
    todo: list[tuple[_Tensor, _Tensor]], rank: bool, pool: ThreadPoolExecutor
) -> list[TensorStats]:
    """The statistics of each tensor pair in ``todo``, block pairs compared on ``pool``.

    Each side is read on a thread of its own (its chunks decoded on ``pool``), a few
    blocks ahead and across tensors, so reading A, reading B and comparing overlap even
    for tensors of one chunk. At most ``2 x workers`` block pairs wait for or are being
    compared at a time, which bounds memory.
    """
    window = 2 * default_workers()
    out: list[TensorStats] = []
    # (tensor, its next block's result, to come or computed); None: the tensor's end
    queue: deque[tuple[_Stats, Future[_Part] | _Part | None]] = deque()
    in_flight = 0

    def settle_oldest() -> None:
        nonlocal in_flight
        st, part = queue.popleft()
        if part is None:
            out.append(st.result())
        elif isinstance(part, _Part):
            st.add(part)
        else:
            st.add(part.result())
            in_flight -= 1

    read_a = _read_ahead([a for a, _b in todo], window, "wvc-diff-a")
    read_b = _read_ahead([b for _a, b in todo], window, "wvc-diff-b")
    with closing(read_a), closing(read_b):
        for a, b in todo:
            st = _Stats(a, b, rank)
            last_a = last_b = False
            while not (last_a or last_b):
                (xa, last_a), (xb, last_b) = next(read_a), next(read_b)
                if xb.size < _SUB_ELEMENTS:  # cheaper here than handing it to a thread
                    queue.append((st, _block_stats(*st.task(xa, xb))))
                    continue
                queue.append((st, pool.submit(_block_stats, *st.task(xa, xb))))
                in_flight += 1
                while in_flight > window:
                    settle_oldest()
            if last_a != last_b:
                raise _uneven(b)
            queue.append((st, None))
        while queue:
            settle_oldest()
    return out


def _read_ahead(
    tensors: list[_Tensor], depth: int, name: str
) -> Generator[tuple[np.ndarray, bool], None, None]:
    """The blocks of each tensor in turn, each with whether it is its tensor's last, read
    on a thread of their own up to ``depth`` blocks ahead of the consumer."""

    def items() -> Iterator[tuple[np.ndarray, bool]]:
        for t in tensors:
            block = _elements(t.dtype, b"")  # what a tensor without elements yields
            for i, nxt in enumerate(_blocks(t.read(), BLOCK_ELEMENTS)):
                if i:
                    yield block, False
                block = nxt
            yield block, True

    it = items()
    with ThreadPoolExecutor(1, thread_name_prefix=name) as reader:
        pending = deque(reader.submit(next, it, None) for _ in range(depth))
        try:
            while (item := pending.popleft().result()) is not None:
                pending.append(reader.submit(next, it, None))
                yield item
        finally:
            for f in pending:
                f.cancel()


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
        sides = [(n, side_a.get(n), side_b.get(n)) for n in names]
        status = [_status(ta, tb) for _n, ta, tb in sides]
        todo = [
            (ta, tb)
            for (_n, ta, tb), s in zip(sides, status, strict=True)
            if s is None and ta is not None and tb is not None
        ]
        compared = iter(_compare_all(todo, rank, pool))
        out = []
        for (name, ta, tb), s in zip(sides, status, strict=True):
            if s is not None:
                out.append(_record(name, ta, tb, s))
            else:
                stats = next(compared)
                s = "unchanged" if stats.changed == 0 else "modified"
                out.append(_record(name, ta, tb, s, stats))
    counts = {s: 0 for s in ("added", "removed", "modified", "reshaped", "retyped", "unchanged")}
    changed_bytes = 0
    for t in out:
        counts[t.status] += 1
        if t.status != "unchanged":
            changed_bytes += max(t.size_a, t.size_b)
    return DiffResult(id_a, id_b, tuple(out), counts, changed_bytes)


def _status(ta: _Tensor | None, tb: _Tensor | None) -> Status | None:
    """A pair's status from its descriptions and digests; None if the data must be compared."""
    if ta is None:
        return "added"
    if tb is None:
        return "removed"
    if ta.dtype is not tb.dtype:
        return "retyped"
    if ta.shape != tb.shape:
        return "reshaped"
    if ta.digest == tb.digest:
        return "unchanged"
    return None


def _record(
    name: str,
    ta: _Tensor | None,
    tb: _Tensor | None,
    status: Status,
    stats: TensorStats | None = None,
) -> TensorDiff:
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
