#!/usr/bin/env python3
"""Chain-length benchmark: what the delta chain bound N costs in restore speed and saves in storage.

Usage (from the repository root, with wvc installed, e.g. in its venv)::

    python bench/bench_chain.py                      # 256 MiB bf16, 8 versions, median of 3
    python bench/bench_chain.py --size 1GiB --dtype fp32

One synthetic LLaMA-like model (``_common.model_shapes``; N(0, 0.02)) is
committed in ``--versions`` versions, each adding ``--rel-update`` x N(0, 1)
x |w| to every fp32 master value before the cast (a small update to every
tensor, as in a training run), with ``WVC_MAX_CHAIN`` = the number of
versions, so version *d* is stored at chain depth *d* (its restore reads
d + 1 objects per chunk). Measured, in this process, page cache warm:

* the stored bytes of the keyframe (version 0) and of each delta version
  (``CommitResult.new_stored_size``);
* ``Repository.restore`` of each version into a new directory (files
  fsynced, as always), median of ``--repeats``, checked byte-identical
  against the arrays committed.

From those, for each bound N the long-run storage per version is
(keyframe + (N - 1) x mean delta) / N of raw, and the restore speed a
version gets ranges from the depth-0 figure to the depth N - 1 one.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="256MiB", help="tensor bytes per version (default 256MiB)")
    ap.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    ap.add_argument("--versions", type=int, default=8, help="versions (max chain depth + 1)")
    ap.add_argument("--rel-update", type=float, default=1e-3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workdir", default=None)
    a = ap.parse_args()

    os.environ["WVC_MAX_CHAIN"] = str(a.versions)
    import ml_dtypes

    from wvc import Repository

    size = _common.parse_size(a.size)
    shapes = _common.model_shapes(a.dtype, size)
    rng = np.random.default_rng(0)
    master = {n: rng.normal(0, 0.02, s).astype(np.float32) for n, s in shapes.items()}
    cast = (lambda x: x.astype(ml_dtypes.bfloat16)) if a.dtype == "bf16" else np.copy
    work = Path(tempfile.mkdtemp(prefix="wvc-bench-chain-", dir=a.workdir))
    print(_common.machine_line(_common.machine_info()))
    print(f"other load before start: {_common.sample_load():.2f} of 2 cores busy")
    try:
        repo = Repository.init(work / "repo")
        versions = []
        stored = []
        raw = 0
        for v in range(a.versions):
            if v:
                for arr in master.values():
                    arr += (a.rel_update * rng.standard_normal(arr.shape, np.float32)) * np.abs(arr)
            arrays = {n: cast(x) for n, x in master.items()}
            raw = sum(x.nbytes for x in arrays.values())
            res = repo.commit_state_dict(arrays, message=f"v{v}")
            versions.append((res.id, {n: x.tobytes() for n, x in arrays.items()}))
            stored.append(res.new_stored_size)
        speeds = []
        for d, (cid, expect) in enumerate(versions):
            chain = max(len(repo.objects.read_chain(c)) for c in _chunks(repo, cid)[:4])
            times = []
            for _ in range(a.repeats):
                out = work / f"out-{d}"
                t = time.perf_counter()
                repo.restore(cid, out)
                times.append(time.perf_counter() - t)
                got = repo.load(cid)
                assert all(got[n].tobytes() == b for n, b in expect.items()), "not identical"
                shutil.rmtree(out)
            speeds.append(raw / statistics.median(times) / 1e6)
            print(
                f"version {d}: chain {chain}, stored {stored[d] / raw:.1%}, "
                f"restore {speeds[-1]:.0f} MB/s"
            )
        keyframe = stored[0] / raw
        delta = statistics.mean(stored[1:]) / raw
        print()
        print(
            f"{a.dtype}, {raw / 2**20:.0f} MiB per version, relative update {a.rel_update:g}: "
            f"keyframe {keyframe:.1%} of raw, delta {delta:.1%} (mean of {a.versions - 1})"
        )
        print()
        print("| N | stored per version (long run) | restore MB/s, depth 0 .. N-1 | worst | mean |")
        print("|---:|---:|---|---:|---:|")
        for n in range(1, a.versions + 1):
            per = (keyframe + (n - 1) * delta) / n
            s = speeds[:n]
            print(
                f"| {n} | {per:.1%} | {' '.join(f'{x:.0f}' for x in s)} | {min(s):.0f} | "
                f"{statistics.mean(s):.0f} |"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _chunks(repo: object, cid: str) -> list[str]:
    from wvc.ops._read import read_commit, read_file_manifest, read_tree

    objects = repo.objects  # type: ignore[attr-defined]
    tree = read_tree(objects, read_commit(objects, cid).tree)
    m = read_file_manifest(objects, tree.entries[0].manifest)
    return [c for seg in m.segments if seg.tensor is not None for c in seg.chunks]


if __name__ == "__main__":
    main()
