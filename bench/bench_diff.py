#!/usr/bin/env python3
"""Diff benchmark: ``Repository.diff`` between two committed versions of a synthetic model.

Usage (from the repository root, with wvc installed, e.g. in its venv)::

    python bench/bench_diff.py                          # 1 GiB fp32 + 1 GiB bf16, median of 3
    python bench/bench_diff.py --compare-with HEAD      # + the committed wvc, interleaved
    python bench/bench_diff.py --code HEAD              # measure a clean checkout of HEAD
    python bench/bench_diff.py --size 128MiB --runs 1 --rank-runs 0   # quick check

For each dtype (fp32, bf16) one synthetic LLaMA-like model (``_common.model_shapes``:
2-D projection and embedding matrices from N(0, 0.02), 1-D norms near 1) is built in
a child process and written, untimed, as ``model.safetensors`` in three versions:

* ``A``: the model;
* ``B``: every element of every tensor moved by N(0, 1e-3) (a fine-tuning step);
* ``P``: A with ``--changed`` (10 %) of its tensor bytes taken from B: whole
  tensors, picked at random (seeded) until the next one would pass the fraction.

A, P and B are committed in that order to one repository (``HEAD~2``, ``HEAD~1``,
``HEAD``). Then, each in its own child Python, ``Repository.diff`` is timed around
the call, page cache warm (the repository's files read just before):

* **all changed**: ``diff("HEAD~2", "HEAD")``, every tensor read and compared;
* **10 % changed**: ``diff("HEAD~2", "HEAD~1")``: the unchanged 90 % is decided
  from digests, so the time should be about 10 % of the row above;
* **all changed, B on disk**: ``diff("HEAD~2", DIR)`` with B's directory not
  committed (its tensors are hashed first, as a commit would, then read again);
* **all changed, --rank**: as the first row with ``rank=True`` (randomized SVD of
  every 2-D delta), for reference; ``--rank-runs`` (1) runs.

MB/s is 10^6 bytes per second of the tensor bytes compared, counted on one side
(the modified tensors' bytes; for the 10 % row only those 10 %). With
``--compare-with REV`` (a git revision, checked out into a temporary worktree, or a
directory holding a wvc checkout) every measurement is also made with that wvc,
interleaved with this checkout's, and the table shows both and the speed-up; the
statistics of the two are compared tensor by tensor (the largest relative difference
is reported). ``--code REV_OR_DIR`` measures that wvc instead of this checkout's (so
edits made in the checkout during a run do not leak into it); the script also
compares a digest of the measured ``wvc/*.py`` at start and end.

Every figure is the median of ``--runs`` (3). Before each block the script waits
for a quiet 2 s spell and measures the block again (up to ``--retries`` 2) when
other processes kept more than ``--max-other-load`` (0.25) cores busy. Peak RSS
is each child's own (``/usr/bin/time -f %M``). The parent process imports only
the standard library. Needs about ``--size`` x 6 of free disk.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    MB,
    REPO_ROOT,
    Add,
    BenchBase,
    GiB,
    add_run_options,
    child_env,
    git_rev,
    human,
    import_check,
    machine_info,
    machine_line,
    make_workdir,
    median,
    model_shapes,
    parse_size,
    run_caveats,
    run_if_child,
    run_script_child,
    run_session,
    source_hash,
    timed,
    timed_commit,
    warm_up,
)

DTYPES = ("fp32", "bf16")
NOISE = 1e-3  # standard deviation of B - A
VERSIONS = ("A", "P", "B")  # committed in this order: HEAD~2, HEAD~1, HEAD


# ----------------------------------------------------------------------------------------------
# Child side
# ----------------------------------------------------------------------------------------------


def child_gen(a: dict[str, Any]) -> dict[str, Any]:
    """Build A and B in memory, pick P's tensors, write the three versions as safetensors."""
    import zlib

    import numpy as np
    import torch
    from safetensors.torch import save_file

    shapes = model_shapes(a["dtype"], a["size"])
    root = Path(a["root"])
    va: dict[str, Any] = {}
    vb: dict[str, Any] = {}
    for name, shape in shapes.items():
        rng = np.random.default_rng(zlib.crc32(name.encode()))
        x = rng.standard_normal(shape, dtype=np.float32)
        x *= np.float32(0.02)
        if len(shape) == 1:  # norms: near 1
            x += np.float32(1.0)
        y = rng.standard_normal(shape, dtype=np.float32)
        y *= np.float32(NOISE)
        y += x
        ta, tb = torch.from_numpy(x), torch.from_numpy(y)
        if a["dtype"] == "bf16":
            ta, tb = ta.to(torch.bfloat16), tb.to(torch.bfloat16)
        va[name], vb[name] = ta, tb
        del x, y
    nbytes = {n: t.numel() * t.element_size() for n, t in va.items()}
    total = sum(nbytes.values())
    # P: whole tensors of B, in a seeded random order, up to the fraction of the bytes.
    order = list(shapes)
    np.random.default_rng(0).shuffle(order)
    picked: list[str] = []
    acc = 0
    for n in order:
        if acc + nbytes[n] <= a["fraction"] * total:
            picked.append(n)
            acc += nbytes[n]
    vp = {n: (vb[n] if n in picked else t) for n, t in va.items()}
    dirs = {}
    for key, sd in (("A", va), ("P", vp), ("B", vb)):
        d = root / key
        d.mkdir(parents=True, exist_ok=True)
        save_file(sd, d / "model.safetensors", metadata={"format": "pt"})
        dirs[key] = str(d)
    # Bits that differ between A and B (the "all changed" tensors must all be modified).
    same_bits = sum(bool(torch.equal(va[n].view(torch.uint8), vb[n].view(torch.uint8))) for n in va)
    hidden = shapes["model.norm.weight"][0]
    return {
        "dirs": dirs,
        "tensors": len(va),
        "tensor_bytes": total,
        "layers": sum(1 for k in shapes if k.endswith("q_proj.weight")),
        "hidden": hidden,
        "partial_tensors": len(picked),
        "partial_bytes": acc,
        "identical_in_b": same_bits,
    }


def child_commit(a: dict[str, Any]) -> dict[str, Any]:
    res, out = timed_commit(a, a["dir"])
    return {**out, "id": res.id}


def child_diff(a: dict[str, Any]) -> dict[str, Any]:
    """Time ``repo.diff(a, b, rank=...)``; return the figures and every modified tensor's stats."""
    import wvc

    repo = wvc.Repository.open(a["repo"])
    res, t = timed(lambda: repo.diff(a["a"], a["b"], rank=a["rank"]))
    repo.close()
    stats = {x.name: x.stats.to_json() for x in res.tensors if x.status == "modified" and x.stats}
    compared = sum(x.size_b for x in res.tensors if x.status == "modified")
    return {
        **t,
        "counts": res.counts,
        "bytes_changed": res.bytes_changed,
        "compared_bytes": compared,
        "stats": stats,
        "wvc_file": wvc.__file__,
    }


CHILD_OPS = {"gen": child_gen, "commit": child_commit, "diff": child_diff}


# ----------------------------------------------------------------------------------------------
# Parent side
# ----------------------------------------------------------------------------------------------

# (key, label, rev a, rev b or "disk", rank)
CASES: tuple[tuple[str, str, str, str, bool], ...] = (
    ("all", "all changed", "HEAD~2", "HEAD", False),
    ("partial", "{pct} changed", "HEAD~2", "HEAD~1", False),
    ("disk", "all changed, B on disk", "HEAD~2", "disk", False),
    ("rank", "all changed, --rank", "HEAD~2", "HEAD", True),
)


class Bench(BenchBase):
    quiet_before_first = True

    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        super().__init__(args, work)
        self.t_start = time.perf_counter()
        pycache = work / "pycache"
        self.worktrees: list[Path] = []  # made for --code / --compare-with revisions
        # (key, label, PYTHONPATH root); "new" is this checkout unless --code says otherwise.
        self.new_root = REPO_ROOT
        label = "this checkout"
        if args.code:
            self.new_root, rev = self.resolve_variant(args.code, "--code")
            label = f"wvc {rev}"
        self.variants: list[tuple[str, str, Path]] = [("new", label, self.new_root)]
        self.envs = {"new": child_env(pycache, str(self.new_root))}
        self.results = {
            "machine": machine_info(),
            "size_arg": args.size,
            "runs": args.runs,
            "rank_runs": args.rank_runs,
            "dtypes": {},
        }
        if args.compare_with:
            root, rev = self.resolve_variant(args.compare_with, "--compare-with")
            self.variants.insert(0, ("old", f"wvc {rev}", root))
            self.envs["old"] = child_env(pycache, str(root))
            self.results["old"] = {"path": str(root), "rev": rev}
        self.want: dict[str, str] = {}

    def resolve_variant(self, spec: str, option: str) -> tuple[Path, str]:
        """:meth:`resolve_code`, keeping every worktree it makes for close; and its revision."""
        before = self.worktree
        root = self.resolve_code(spec, option)
        if self.worktree is not before and self.worktree is not None:
            self.worktrees.append(self.worktree)
            self.worktree = None
        return root, git_rev(root) or root.name

    def close(self) -> None:
        while self.worktrees:
            self.worktree = self.worktrees.pop()
            super().close()

    def check_code(self) -> None:
        for key, label, root in self.variants:
            out, want = import_check(sys.executable, root, self.envs[key], self.work)
            got = out.stdout.strip()
            if out.returncode != 0 or str(Path(got).resolve()) != str(want):
                raise SystemExit(f"{label}: children import {got or out.stderr[-300:]}, not {want}")
            self.want[key] = str(want)
            self.say(f"{key}: {label}: {want} (git {git_rev(root) or '-'})")
        self.results["wvc_rev"] = git_rev(self.new_root)
        self.results["wvc_source_hash"] = source_hash(self.new_root / "wvc")
        self.results["variants"] = {k: {"label": lb, "root": str(r)} for k, lb, r in self.variants}

    def child(self, op: str, variant: str = "new", **kw: Any) -> dict[str, Any]:
        res = run_script_child(__file__, op, kw, self.log, env=self.envs[variant], cwd=self.work)
        wf = res.get("wvc_file")
        if wf and str(Path(wf).resolve()) != self.want[variant]:
            raise SystemExit(f"a child imported {wf}, not {self.want[variant]}")
        return res

    # --- the measurements ----------------------------------------------------------------

    def setup(self, dtype: str) -> dict[str, Any]:
        """Generate A, P, B and commit them (untimed); return what was made."""
        root = self.work / dtype
        self.say(f"\n== {dtype}: generating A, P, B (~{human(self.args.size)} each) in {root}")
        t0 = time.perf_counter()
        g = self.child(
            "gen", root=str(root), dtype=dtype, size=self.args.size, fraction=self.args.changed
        )
        repo = root / "repo"
        for i, key in enumerate(VERSIONS):
            c = self.child("commit", repo=str(repo), dir=g["dirs"][key], init=i == 0, message=key)
            g.setdefault("commits", {})[key] = c["id"]
        for key in ("A", "P"):  # B stays: the "on disk" case reads it
            shutil.rmtree(g["dirs"][key])
        g["repo"] = str(repo)
        self.say(
            f"   {g['tensors']} tensors ({g['layers']} layers, hidden {g['hidden']}), "
            f"{g['tensor_bytes']:,} tensor bytes; P changes {g['partial_tensors']} tensors, "
            f"{g['partial_bytes']:,} B ({100 * g['partial_bytes'] / g['tensor_bytes']:.1f} %); "
            f"{time.perf_counter() - t0:.0f}s"
        )
        return g

    def measure(
        self, g: dict[str, Any], case: tuple[str, str, str, str, bool], rep: int, add: Add
    ) -> None:
        key, _label, rev_a, rev_b, rank = case
        b = g["dirs"]["B"] if rev_b == "disk" else rev_b
        variants = [v[0] for v in self.variants]
        if rep % 2:
            variants.reverse()  # alternate which variant goes first
        for v in variants:
            warm_up(Path(g["repo"]))
            if rev_b == "disk":
                warm_up(Path(b))
            r = self.child("diff", variant=v, repo=g["repo"], a=rev_a, b=b, rank=rank)
            add(f"{key}:{v}", r)
            self.say(
                f"   [{rep + 1}] {key:8s} {v}: {r['seconds']:.2f}s "
                f"{r['compared_bytes'] / r['seconds'] / MB:,.0f} MB/s, CPU "
                f"{r['user'] + r['sys']:.2f}s, peak RSS {r['rss_mib']:.0f} MiB, "
                f"{r['counts']['modified']} modified, other load {r['other_cores']:.2f}"
            )

    def run(self) -> None:
        for dtype in self.args.dtypes:
            g = self.setup(dtype)
            runs: dict[str, list[dict[str, Any]]] = {}
            self.results["dtypes"][dtype] = {"gen": g, "measurements": runs}
            for case in CASES:
                n = self.args.rank_runs if case[4] else self.args.runs
                for rep in range(n):
                    self.attempt(
                        f"{dtype} {case[0]} [{rep + 1}/{n}]",
                        runs,
                        lambda add, g=g, case=case, rep=rep: self.measure(g, case, rep, add),
                    )
            shutil.rmtree(Path(g["repo"]).parent)
        self.results["total_seconds"] = time.perf_counter() - self.t_start


# ----------------------------------------------------------------------------------------------
# Reporting
# ----------------------------------------------------------------------------------------------


def _stats_gap(xs: list[dict[str, Any]], ys: list[dict[str, Any]]) -> tuple[float, bool]:
    """Largest relative difference of the float stats between two results; exact fields equal?"""
    gap = 0.0
    exact = True
    for x in xs:
        for y in ys:
            if set(x["stats"]) != set(y["stats"]):
                return float("inf"), False
            for name, sx in x["stats"].items():
                sy = y["stats"][name]
                for k in ("l2", "relative", "max_abs", "cosine"):
                    u, v = sx[k], sy[k]
                    if isinstance(u, str) or isinstance(v, str):
                        exact &= u == v
                        continue
                    gap = max(gap, abs(u - v) / max(abs(u), abs(v), 1e-300))
                for k in ("numel", "changed", "rank90", "rank99"):
                    exact &= sx[k] == sy[k]
    return gap, exact


def table(res: dict[str, Any], args: argparse.Namespace) -> str:
    keys = list(res["variants"])
    both = len(keys) == 2
    hdr = ["case", "dtype", "tensors compared", "bytes compared (one side)"]
    for k in keys:
        tag = f" ({k})" if both else ""
        hdr += [f"seconds{tag}", f"MB/s{tag}"]
    if both:
        hdr += ["speed-up"]
    hdr += ["time vs all changed", "CPU s", "peak RSS MiB"]
    lines = ["| " + " | ".join(hdr) + " |", "|---|---" + "|---:" * (len(hdr) - 2) + "|"]
    pct = f"{100 * args.changed:.0f} %"
    for dtype, d in res["dtypes"].items():
        meas = d["measurements"]
        g = d["gen"]
        for key, label, *_ in CASES:
            if f"{key}:new" not in meas:
                continue
            first = meas[f"{key}:new"][0]
            compared = first["compared_bytes"]
            cells = [
                label.format(pct=pct),
                dtype,
                f"{first['counts']['modified']} / {g['tensors']}",
                f"{compared:,}",
            ]
            secs = {k: median([x["seconds"] for x in meas[f"{key}:{k}"]]) for k in keys}
            for k in keys:
                cells += [f"{secs[k]:.2f}", f"{compared / secs[k] / MB:,.0f}"]
            if both:
                cells.append(f"{secs['old'] / secs['new']:.2f}x")
            ratios = []
            if key == "partial":
                for k in keys:
                    base = median([x["seconds"] for x in meas[f"all:{k}"]])
                    ratios.append(f"{secs[k] / base:.3f}")
                ratios_txt = " / ".join(ratios) + f" (bytes {compared / g['tensor_bytes']:.3f})"
            else:
                ratios_txt = ""
            cells.append(ratios_txt)
            cells.append(
                " / ".join(
                    f"{median([x['user'] + x['sys'] for x in meas[f'{key}:{k}']]):.1f}"
                    for k in keys
                )
            )
            cells.append(
                " / ".join(f"{max(x['rss_mib'] for x in meas[f'{key}:{k}']):.0f}" for k in keys)
            )
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def notes(res: dict[str, Any]) -> list[str]:
    out = []
    keys = list(res["variants"])
    for dtype, d in res["dtypes"].items():
        meas = d["measurements"]
        g = d["gen"]
        for key, _label, *_ in CASES:
            xs = meas.get(f"{key}:new")
            if not xs:
                continue
            want = g["partial_tensors"] if key == "partial" else g["tensors"] - g["identical_in_b"]
            got = {x["counts"]["modified"] for k in keys for x in meas[f"{key}:{k}"]}
            if got != {want}:
                out.append(f"- WARNING {dtype} {key}: modified tensors {got}, expected {want}")
        if len(keys) == 2:
            parts = []
            for key, *_ in CASES:
                if f"{key}:old" in meas:
                    gap, exact = _stats_gap(meas[f"{key}:old"], meas[f"{key}:new"])
                    parts.append(
                        f"{key} max rel. difference {gap:.1e}"
                        + ("" if exact else " (counts or ranks DIFFER)")
                    )
            out.append(f"- {dtype}: stats old vs new: " + "; ".join(parts))
    loads = [
        x["other_cores"]
        for d in res["dtypes"].values()
        for xs in d["measurements"].values()
        for x in xs
    ]
    if loads:
        out.append(
            f"- other load on the machine during the measurements: median {median(loads):.2f}, "
            f"max {max(loads):.2f} of {res['machine']['nproc']} cores"
            + (" -- WARNING: the machine was not idle." if median(loads) > 0.25 else ".")
        )
    out += run_caveats(res)
    return out


def report(res: dict[str, Any], args: argparse.Namespace) -> str:
    m = res["machine"]
    gens = [d["gen"] for d in res["dtypes"].values()]
    models = "; ".join(
        f"{dt}: {g['tensors']} tensors ({g['layers']} layers, hidden {g['hidden']}), "
        f"{g['tensor_bytes']:,} tensor bytes"
        for dt, g in zip(res["dtypes"], gens, strict=True)
    )
    variants = ", ".join(f"{k} = {v['label']} ({v['root']})" for k, v in res["variants"].items())
    out = [
        "\n## Results\n",
        f"{machine_line(m)}, wvc {res.get('wvc_rev')}, {m['date']}. {models}. "
        f"`Repository.diff` in a child process per measurement, timed around the call, page "
        f"cache warm; median of {args.runs} run(s) (--rank: {args.rank_runs}); MB/s = 10^6 "
        f"bytes/s of the compared tensors' bytes on one side. Variants: {variants}"
        + ("; columns with x / y give old / new." if len(res["variants"]) == 2 else "."),
        "",
        table(res, args),
        "",
        *notes(res),
        "",
        f"total benchmark time {res['total_seconds']:.0f}s",
    ]
    return "\n".join(out)


def main() -> None:
    if run_if_child(CHILD_OPS, sys.argv):
        return
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--size", type=parse_size, default=GiB, help="tensor bytes (default 1GiB)")
    ap.add_argument(
        "--dtype",
        dest="dtypes",
        action="append",
        choices=DTYPES,
        help="fp32 and/or bf16 (repeatable; default both)",
    )
    ap.add_argument(
        "--changed",
        type=float,
        default=0.1,
        help="fraction of tensor bytes changed in the partial version (default 0.1)",
    )
    ap.add_argument("--runs", type=int, default=3, help="runs of every measurement (median)")
    ap.add_argument("--rank-runs", type=int, default=1, help="runs with --rank (0: skip them)")
    ap.add_argument(
        "--code",
        metavar="REV_OR_DIR",
        help="measure this wvc (a git revision or a checkout directory) instead of the "
        "checkout this script is in",
    )
    ap.add_argument(
        "--compare-with",
        metavar="REV_OR_DIR",
        help="also measure this wvc (a git revision or a checkout directory), interleaved",
    )
    add_run_options(ap)
    args = ap.parse_args()
    args.dtypes = args.dtypes or list(DTYPES)
    if args.runs < 1 or args.rank_runs < 0:
        ap.error("--runs must be >= 1 and --rank-runs >= 0")
    if not 0 < args.changed < 1:
        ap.error("--changed must be between 0 and 1")
    work = make_workdir(args.workdir, "wvc-bench-diff-")
    need = args.size * 6
    free = shutil.disk_usage(work).free
    b = Bench(args, work)
    run_session(
        b,
        args,
        title="wvc diff benchmark",
        need=need,
        free=free,
        leftovers=["fp32", "bf16", "children.log", "rss.txt", "pycache"],
        code_root=b.new_root,
        report=report,
    )


if __name__ == "__main__":
    main()
