"""Low-rank factorisation of a matrix: truncated SVD, exact for small matrices, else randomized.

Used by ``wvc delta --mode lowrank`` and ``wvc lora extract``. The randomized
path is Halko, Martinsson and Tropp (2011): a Gaussian sketch with
oversampling and power iterations; a fixed seed makes results repeatable.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EXACT_BELOW = 1024  # min(m, n) up to which a full SVD is cheap enough
OVERSAMPLE = 10
POWER_ITERATIONS = 3
ENERGY_SKETCH = 256  # singular values estimated when the rank is chosen by energy


@dataclass(frozen=True)
class Factors:
    """``d ≈ u * s @ vt`` with rank ``rank``."""

    u: np.ndarray  # m x rank
    s: np.ndarray  # rank
    vt: np.ndarray  # rank x n
    total_energy: float  # ||d||², exactly

    @property
    def rank(self) -> int:
        return int(self.s.shape[0])

    @property
    def energy(self) -> float:
        """Fraction of ||d||² the factors keep."""
        if self.total_energy == 0:
            return 1.0
        return min(1.0, float(np.sum(self.s.astype(np.float64) ** 2)) / self.total_energy)


def factorize(d: np.ndarray, *, rank: int | None = None, energy: float | None = None) -> Factors:
    """The best rank-``rank`` factors of ``d``, or the fewest that keep ``energy`` of ||d||²."""
    if (rank is None) == (energy is None):
        raise ValueError("give exactly one of rank and energy")
    m, n = d.shape
    total = float(np.sum(np.square(d, dtype=np.float64)))
    limit = min(m, n)
    want = min(rank, limit) if rank is not None else min(ENERGY_SKETCH, limit)
    if limit <= EXACT_BELOW or want + OVERSAMPLE >= limit:
        u, s, vt = np.linalg.svd(d, full_matrices=False)
    else:
        u, s, vt = _randomized(d, want)
    if energy is not None:
        cum = np.cumsum(s.astype(np.float64) ** 2)
        need = int(np.searchsorted(cum, energy * total - 1e-12 * total)) + 1
        want = max(1, min(need, len(s)))
    want = max(1, min(want, len(s)))
    return Factors(u[:, :want], s[:want], vt[:want], total)


def _randomized(d: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = d.shape[1]
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(d @ rng.standard_normal((n, k + OVERSAMPLE)).astype(d.dtype))
    for _ in range(POWER_ITERATIONS):
        q, _ = np.linalg.qr(d.T @ q)
        q, _ = np.linalg.qr(d @ q)
    ub, s, vt = np.linalg.svd(q.T @ d, full_matrices=False)
    return (q @ ub)[:, :k], s[:k], vt[:k]
