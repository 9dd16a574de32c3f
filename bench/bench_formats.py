#!/usr/bin/env python3
"""Formats benchmark: the same weights as safetensors, PyTorch, npz, GGUF and a sharded checkpoint.

Usage (from the repository root, with wvc installed, e.g. in its venv)::

    python bench/bench_formats.py                     # 1 GiB fp32, median of 3 runs
    python bench/bench_formats.py --dtype bf16
    python bench/bench_formats.py --size 256MiB --runs 1   # quick check
    python bench/bench_formats.py --cold              # also with the page cache dropped
    python bench/bench_formats.py --code HEAD         # measure a clean checkout of HEAD

One synthetic LLaMA-like model (``_common.model_shapes``: 2-D projection
and embedding matrices drawn from N(0, 0.02), 1-D norms near 1; fp32, or bf16
with ``--dtype bf16``) is written, untimed, in five containers, each in its
own directory:

* ``model.safetensors``: ``safetensors.torch.save_file``;
* ``pytorch_model.bin``: ``torch.save`` of the state dict (zip format);
* ``model.npz``: ``np.savez`` (fp32 only: npy has no bf16);
* ``model.gguf``: ``gguf.GGUFWriter``, F32 tensors (BF16 with ``--dtype bf16``);
* ``sharded/``: three safetensors shards and ``model.safetensors.index.json``.

For each container, with the Python API (``wvc.Repository``) in a fresh
repository, each operation in its own child Python, timed around the call:

* parse: ``wvc.formats.detect(path).parse(path, read_at, size)`` alone, with
  an ``os.pread``-based ``read_at`` (first call in a fresh process; all files of
  the directory for the sharded checkpoint);
* first commit of the directory (MB/s of file bytes);
* re-commit of the unchanged directory (seconds);
* restore of HEAD (MB/s of file bytes; checked byte-identical, untimed);
* load of every tensor through ``repo.load_state_dict("HEAD")`` (MB/s of
  tensor bytes; in the first run every tensor's crc32 is checked, untimed);
* stored bytes: ``stats().chunk_stored_size`` as % of the file bytes.

Cross-format deduplication: in one repository, commit ``model.safetensors``
first, then the other container, and report what the second commit added
(``CommitResult.new_stored_size``, and the growth of ``chunk_stored_size``)
next to that container's non-tensor bytes. Export: ``wvc export HEAD --format
safetensors`` from the repository holding the PyTorch commit, timed as the
whole process (start-up included), MB/s of output bytes.

Every figure is the median of ``--runs`` (default 3); the container order
rotates between runs. "warm" means the input (files, or the repository's
objects) is in the page cache; ``--cold`` also measures every operation right
after ``sync`` + ``drop_caches`` (needs root). MB/s means 10^6 bytes per
second. The parent process imports only the standard library (and the
stdlib helpers in ``_common``), so peak RSS of each child is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
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
    child_restore,
    dir_bytes,
    dirs_identical,
    drop_caches,
    files_identical,
    find_wvc_command,
    fsync_path,
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
    run_measured,
    run_script_child,
    run_session,
    source_hash,
    timed,
    timed_commit,
    warm_up,
)

FORMATS: tuple[tuple[str, str], ...] = (
    ("safetensors", "model.safetensors"),
    ("pytorch", "pytorch_model.bin"),
    ("npz", "model.npz"),
    ("gguf", "model.gguf"),
    ("sharded", "3 x safetensors + index.json"),
)
SHARDS = 3
INDEX_NAME = "model.safetensors.index.json"


# ----------------------------------------------------------------------------------------------
# Child side
# ----------------------------------------------------------------------------------------------


def child_gen(a: dict[str, Any]) -> dict[str, Any]:
    """Build the state dict in memory (one copy, ~--size) and write it in every container."""
    import zlib

    import gguf
    import numpy as np
    import torch
    from safetensors.torch import save_file

    dtype = a["dtype"]
    shapes = model_shapes(dtype, a["size"])
    root = Path(a["root"])
    sd: dict[str, Any] = {}
    crcs: dict[str, int] = {}
    desc: list[list[Any]] = []
    for name, shape in shapes.items():
        rng = np.random.default_rng(zlib.crc32(name.encode()))
        x = rng.standard_normal(shape, dtype=np.float32)
        x *= np.float32(0.02)
        if len(shape) == 1:  # norms: near 1, each one distinct
            x += np.float32(1.0)
        t = torch.from_numpy(x)
        if dtype == "bf16":
            t = t.to(torch.bfloat16)
        del x
        sd[name] = t
        raw = t.view(torch.int16).numpy() if dtype == "bf16" else t.numpy()
        crcs[name] = zlib.crc32(raw)
        desc.append([name, list(shape)])
    tensor_bytes = sum(t.numel() * t.element_size() for t in sd.values())

    dirs: dict[str, str] = {}

    def fmt_dir(key: str) -> Path:
        d = root / key
        d.mkdir(parents=True, exist_ok=True)
        dirs[key] = str(d)
        return d

    t0 = time.perf_counter()
    save_file(sd, fmt_dir("safetensors") / "model.safetensors", metadata={"format": "pt"})
    torch.save(sd, fmt_dir("pytorch") / "pytorch_model.bin")
    if dtype == "fp32":
        np.savez(fmt_dir("npz") / "model.npz", **{n: t.numpy() for n, t in sd.items()})
    hidden = shapes["model.norm.weight"][0]
    layers = sum(1 for k in shapes if k.endswith("q_proj.weight"))
    w = gguf.GGUFWriter(fmt_dir("gguf") / "model.gguf", arch="llama")
    w.add_name("wvc-bench-formats")
    w.add_block_count(layers)
    w.add_context_length(4096)
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(shapes["model.layers.0.mlp.up_proj.weight"][0])
    w.add_head_count(max(1, hidden // 128))
    for n, t in sd.items():
        if dtype == "bf16":
            bits = t.view(torch.int16).numpy().view(np.uint16)
            w.add_tensor(n, bits, raw_dtype=gguf.GGMLQuantizationType.BF16)
        else:
            w.add_tensor(n, t.numpy())
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    # Three shards of about equal bytes, tensors in order, plus the HF index.
    d = fmt_dir("sharded")
    names = list(sd)
    groups: list[list[str]] = [[] for _ in range(SHARDS)]
    acc = 0
    for n in names:
        nb = sd[n].numel() * sd[n].element_size()
        groups[min(SHARDS - 1, acc * SHARDS // tensor_bytes)].append(n)
        acc += nb
    weight_map = {}
    for i, g in enumerate(groups):
        fname = f"model-{i + 1:05d}-of-{SHARDS:05d}.safetensors"
        save_file({n: sd[n] for n in g}, d / fname, metadata={"format": "pt"})
        weight_map.update({n: fname for n in g})
    (d / INDEX_NAME).write_text(
        json.dumps({"metadata": {"total_size": tensor_bytes}, "weight_map": weight_map}, indent=2)
        + "\n"
    )
    for key in dirs:
        for p in Path(dirs[key]).iterdir():
            fsync_path(p)
    write_s = time.perf_counter() - t0
    return {
        "dirs": dirs,
        "tensor_bytes": tensor_bytes,
        "tensors": len(sd),
        "layers": layers,
        "hidden": hidden,
        "crcs": crcs,
        "desc": desc,
        "write_seconds": write_s,
    }


def _files(d: str) -> list[Path]:
    return sorted(p for p in Path(d).iterdir() if p.is_file())


def child_parse(a: dict[str, Any]) -> dict[str, Any]:
    """Time ``detect(path).parse(path, read_at, size)`` of every file in the directory."""
    from wvc.formats import detect

    first = 0.0
    hot: list[float] = []
    files = []
    for p in _files(a["dir"]):
        fd = os.open(p, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            reads = [0, 0]

            def read_at(offset: int, length: int, fd: int = fd, reads: list[int] = reads) -> bytes:
                data = os.pread(fd, length, offset)
                reads[0] += 1
                reads[1] += len(data)
                return data

            fmt = detect(str(p))
            t0 = time.perf_counter()
            layout = fmt.parse(str(p), read_at, size)
            first += time.perf_counter() - t0
            n_reads, n_bytes = reads
            again = []
            for _ in range(a.get("repeat", 5)):
                t0 = time.perf_counter()
                fmt.parse(str(p), read_at, size)
                again.append(time.perf_counter() - t0)
            hot.append(min(again) if again else 0.0)
        finally:
            os.close(fd)
        tensor_bytes = sum(s.size for s in layout.segments if s.tensor is not None)
        files.append(
            {
                "file": p.name,
                "format": layout.format,
                "size": size,
                "segments": len(layout.segments),
                "tensors": len(layout.tensor_names()),
                "tensor_bytes": tensor_bytes,
                "views": len(layout.views),
                "warnings": list(layout.warnings),
                "reads": n_reads,
                "bytes_read": n_bytes,
            }
        )
    return {"seconds": first, "hot_seconds": sum(hot), "files": files}


def child_commit(a: dict[str, Any]) -> dict[str, Any]:
    res, out = timed_commit(a, a["dir"])
    return {**out, "files": res.files, "tensors": res.tensors, "warnings": list(res.warnings)}


def child_load(a: dict[str, Any]) -> dict[str, Any]:
    """Read every tensor via ``load_state_dict`` (timed); optionally check crc32s (untimed)."""
    import zlib

    import numpy as np

    import wvc

    repo = wvc.Repository.open(a["repo"])

    def op() -> tuple[int, int]:
        sd = repo.load_state_dict("HEAD")
        n = nbytes = 0
        for name in sd:
            arr = sd[name]
            nbytes += arr.nbytes
            n += 1
            del arr
        return n, nbytes

    (n, nbytes), t = timed(op)
    out: dict[str, Any] = {**t, "tensors": n, "bytes": nbytes, "wvc_file": wvc.__file__}
    if a.get("verify"):
        sd = repo.load_state_dict("HEAD")
        crcs, desc = {}, []
        for name in sd:
            arr = np.ascontiguousarray(sd[name])
            crcs[name] = zlib.crc32(arr.view(np.uint8).reshape(-1).data)
            desc.append([name, list(arr.shape)])
            del arr  # else two tensors are alive at the next assignment
        out["crcs"] = crcs
        out["desc"] = desc
    repo.close()
    return out


CHILD_OPS = {
    "gen": child_gen,
    "parse": child_parse,
    "commit": child_commit,
    "restore": child_restore,
    "load": child_load,
}


# ----------------------------------------------------------------------------------------------
# Parent side
# ----------------------------------------------------------------------------------------------


class Bench(BenchBase):
    quiet_before_first = True

    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        super().__init__(args, work)
        self.t_start = time.perf_counter()
        self.code_root = REPO_ROOT
        pythonpath = None
        if args.code:
            self.code_root = self.add_worktree(
                args.code, "wvc-code-", f"--code {args.code}: cannot check it out"
            )
            pythonpath = str(self.code_root)
        self.env = child_env(work / "pycache", pythonpath)
        if args.code:
            self.wvc_cmd = [sys.executable, "-m", "wvc"]
        else:
            self.wvc_cmd = [find_wvc_command(args.wvc)]
        self.can_drop, self.drop_note = drop_caches()
        self.modes = ["warm"] + (["cold"] if args.cold and self.can_drop else [])
        self.results = {
            "machine": machine_info(),
            "drop_caches": self.drop_note,
            "modes": self.modes,
            "size_arg": args.size,
            "dtype": args.dtype,
            "runs": args.runs,
            "code_root": str(self.code_root),
            "wvc_cmd": self.wvc_cmd,
        }

    # --- set-up ---------------------------------------------------------------------------

    def check_code(self) -> None:
        out, want = import_check(sys.executable, self.code_root, self.env, self.work)
        self.want = str(want)
        got = out.stdout.strip()
        if out.returncode != 0 or str(Path(got).resolve()) != self.want:
            raise SystemExit(f"children import {got or out.stderr[-300:]}, not {self.want}")
        self.results["wvc_rev"] = git_rev(self.code_root)
        self.results["wvc_source_hash"] = source_hash(self.code_root / "wvc")
        self.say(
            f"wvc measured: {self.want} (git {self.results['wvc_rev']}, source digest "
            f"{self.results['wvc_source_hash']}); CLI: {' '.join(self.wvc_cmd)}"
        )

    def child(self, op: str, **kw: Any) -> dict[str, Any]:
        res = run_script_child(__file__, op, kw, self.log, env=self.env, cwd=self.work)
        wf = res.get("wvc_file")
        if wf and str(Path(wf).resolve()) != self.want:
            raise SystemExit(f"a child imported {wf}, not {self.want}")
        return res

    def prepare(self, mode: str, warm_dir: Path | None = None) -> None:
        if mode == "cold":
            drop_caches()
        else:
            os.sync()
            if warm_dir is not None:
                warm_up(warm_dir)

    # --- the measurements ----------------------------------------------------------------

    def generate(self) -> dict[str, Any]:
        root = self.work / "files"
        self.say(
            f"\n== generating a ~{human(self.args.size)} {self.args.dtype} model in every "
            f"container under {root} (not timed)"
        )
        t0 = time.perf_counter()
        g = self.child("gen", root=str(root), dtype=self.args.dtype, size=self.args.size)
        g["formats"] = {}
        for key, label in FORMATS:
            if key not in g["dirs"]:
                continue
            d = Path(g["dirs"][key])
            g["formats"][key] = {
                "label": label,
                "dir": str(d),
                "bytes": dir_bytes(d),
                "files": len(list(d.iterdir())),
            }
        self.say(
            f"   {g['tensors']} tensors ({g['layers']} layers, hidden {g['hidden']}), "
            f"{g['tensor_bytes']:,} tensor bytes; "
            + ", ".join(f"{k} {v['bytes']:,} B" for k, v in g["formats"].items())
            + f"; {time.perf_counter() - t0:.1f}s, generator peak RSS {g['rss_mib']:.0f} MiB"
        )
        return g

    def bench_format(self, key: str, g: dict[str, Any], mode: str, rep: int, add: Add) -> None:
        f = g["formats"][key]
        d = Path(f["dir"])
        raw = f["bytes"]
        tb = g["tensor_bytes"]
        tag = f"[{rep + 1}/{self.args.runs}] {key} ({mode})"

        def add_op(what: str, x: dict[str, Any]) -> dict[str, Any]:
            return add(f"{key}:{what}:{mode}", x)

        self.prepare(mode, d)
        p = add_op("parse", self.child("parse", dir=str(d)))
        repo = self.work / f"repo-{key}-{mode}"
        self.prepare(mode, d)
        c = add_op("commit", self.child("commit", repo=str(repo), dir=str(d), init=True))
        if rep == 0 and c["warnings"]:
            self.say(f"   {tag} commit warnings: {c['warnings']}")
        self.prepare(mode, d)
        rc = add_op("recommit", self.child("commit", repo=str(repo), dir=str(d)))
        objects_dir = repo / ".wvc"
        out = self.work / f"restored-{key}"
        self.prepare(mode, objects_dir)
        rs = add_op("restore", self.child("restore", repo=str(repo), out=str(out)))
        if rep == 0:
            rs["identical"] = dirs_identical(d, out)
        shutil.rmtree(out)
        self.prepare(mode, objects_dir)
        ld = add_op("load", self.child("load", repo=str(repo), verify=rep == 0 and mode == "warm"))
        if "crcs" in ld:
            ld["crcs_ok"] = ld.pop("crcs") == g["crcs"]
            ld["desc_ok"] = sorted(ld.pop("desc")) == sorted(g["desc"])
        self.say(
            f"   {tag}: parse {1000 * p['seconds']:.1f} ms; commit {c['seconds']:.2f}s "
            f"{raw / c['seconds'] / MB:.0f} MB/s (stored "
            f"{100 * c['stats']['chunk_stored_size'] / raw:.2f}%, "
            f"{c['tensors']} tensors); re-commit {rc['seconds']:.2f}s "
            f"(+{rc['new_chunk_stored']} chunk B); restore {rs['seconds']:.2f}s "
            f"{raw / rs['seconds'] / MB:.0f} MB/s"
            + (f" identical={rs['identical']}" if "identical" in rs else "")
            + f"; load {ld['seconds']:.2f}s {tb / ld['seconds'] / MB:.0f} MB/s "
            f"({ld['tensors']} tensors"
            + (
                f", crc ok={ld['crcs_ok']}, names/shapes ok={ld['desc_ok']}"
                if "crcs_ok" in ld
                else ""
            )
            + f"); peak RSS MiB commit {c['rss_mib']:.0f} restore {rs['rss_mib']:.0f} "
            f"load {ld['rss_mib']:.0f}; other load "
            f"{max(x['other_cores'] for x in (p, c, rc, rs, ld)):.2f} cores"
        )
        if key == "pytorch":
            exp = self.work / "exported"
            self.prepare(mode, objects_dir)
            m = run_measured(
                [
                    *self.wvc_cmd,
                    "export",
                    "HEAD",
                    "--format",
                    "safetensors",
                    "--to",
                    str(exp),
                    "-q",
                ],
                self.log,
                env=self.env,
                cwd=repo,
            )
            m.pop("stdout")
            m["seconds"] = m["wall"]
            m["rss_mib"] = m["rss_kib"] / 1024
            m["size"] = dir_bytes(exp)
            m["files"] = sorted(p.name for p in exp.iterdir())
            if rep == 0:
                st = Path(g["formats"]["safetensors"]["dir"]) / "model.safetensors"
                m["identical_to_safetensors"] = files_identical(st, exp / "model.safetensors")
            add_op("export", m)
            self.say(
                f"   {tag}: `wvc export HEAD --format safetensors` {m['seconds']:.2f}s "
                f"{m['size'] / m['seconds'] / MB:.0f} MB/s ({m['size']:,} B, {m['files']})"
                + (
                    f", byte-identical to model.safetensors: {m['identical_to_safetensors']}"
                    if "identical_to_safetensors" in m
                    else ""
                )
            )
            shutil.rmtree(exp)
        shutil.rmtree(repo)

    def bench_dedup(self, key: str, g: dict[str, Any], rep: int, add: Add) -> None:
        """One repository: model.safetensors first, then ``key``'s container (warm)."""
        repo = self.work / f"repo-dedup-{key}"
        st = Path(g["formats"]["safetensors"]["dir"])
        d = Path(g["formats"][key]["dir"])
        self.prepare("warm", st)
        first = self.child("commit", repo=str(repo), dir=str(st), init=True, message="st")
        self.prepare("warm", d)
        second = self.child("commit", repo=str(repo), dir=str(d), message=key)
        second["other_cores"] = max(first["other_cores"], second["other_cores"])
        add(f"dedup:{key}", {"first": first, **second})
        self.say(
            f"   [{rep + 1}/{self.args.runs}] dedup safetensors -> {key}: second commit "
            f"{second['seconds']:.2f}s, new stored {second['new_stored_size']:,} B reported "
            f"({second['new_chunk_stored']:,} chunk B, {second['new_objects']} objects)"
        )
        shutil.rmtree(repo)

    def run(self) -> None:
        g = self.generate()
        self.results["gen"] = {k: v for k, v in g.items() if k not in ("crcs", "desc")}
        runs: dict[str, list[dict[str, Any]]] = {}
        self.results["measurements"] = runs
        keys = list(g["formats"])
        dedup_keys = [k for k in keys if k != "safetensors"]
        for rep in range(self.args.runs):
            k = rep % len(keys)
            for key in keys[k:] + keys[:k]:
                for mode in reversed(self.modes):  # cold first: warm re-reads its input
                    self.attempt(
                        f"[{rep + 1}/{self.args.runs}] {key} ({mode})",
                        runs,
                        lambda add, key=key, mode=mode, rep=rep: self.bench_format(
                            key, g, mode, rep, add
                        ),
                    )
            for key in dedup_keys:
                self.attempt(
                    f"[{rep + 1}/{self.args.runs}] dedup {key}",
                    runs,
                    lambda add, key=key, rep=rep: self.bench_dedup(key, g, rep, add),
                )
        self.results["total_seconds"] = time.perf_counter() - self.t_start


# ----------------------------------------------------------------------------------------------
# Reporting
# ----------------------------------------------------------------------------------------------


def _med(xs: list[dict[str, Any]], fn: Any, fmt: str = "{:,.0f}") -> str:
    return fmt.format(median([fn(x) for x in xs]))


def _range(xs: list[dict[str, Any]], fn: Any, fmt: str = "{:,.0f}") -> str:
    v = [fn(x) for x in xs]
    return fmt.format(min(v)) + "-" + fmt.format(max(v)) if len(v) > 1 else fmt.format(v[0])


def _seconds(x: dict[str, Any]) -> float:
    return float(x["seconds"])


def _mbps(nbytes: int) -> Callable[[dict[str, Any]], float]:
    """MB/s of ``nbytes`` in one measurement."""
    return lambda x: nbytes / x["seconds"] / MB


def _cpu_per_gib(nbytes: int) -> Callable[[dict[str, Any]], float]:
    """CPU seconds (user + sys) per GiB of ``nbytes`` in one measurement."""
    return lambda x: (x["user"] + x["sys"]) * GiB / nbytes


def _format_label(key: str, f: dict[str, Any]) -> str:
    return f"{key} ({f['label']})" if key == "sharded" else f"{key} (`{f['label']}`)"


def format_table(res: dict[str, Any], mode: str) -> str:
    g = res["gen"]
    meas = res["measurements"]
    tb = g["tensor_bytes"]
    hdr = [
        "format",
        "file bytes",
        "parse ms",
        "commit MB/s",
        "re-commit s",
        "restore MB/s",
        "load MB/s",
        "stored % of raw",
        "peak RSS MiB commit / restore / load",
    ]
    lines = ["| " + " | ".join(hdr) + " |", "|---|---:" + "|---:" * (len(hdr) - 2) + "|"]
    for key, f in g["formats"].items():
        m = {
            w: meas[f"{key}:{w}:{mode}"] for w in ("parse", "commit", "recommit", "restore", "load")
        }
        raw = f["bytes"]
        stored = m["commit"][0]["stats"]["chunk_stored_size"]
        cells = [
            _format_label(key, f),
            f"{raw:,}",
            _med(m["parse"], lambda x: 1000 * x["seconds"], "{:,.1f}"),
            _med(m["commit"], _mbps(raw)),
            _med(m["recommit"], _seconds, "{:.2f}"),
            _med(m["restore"], _mbps(raw)),
            _med(m["load"], _mbps(tb)),
            f"{100 * stored / raw:.2f}",
            " / ".join(
                f"{max(x['rss_mib'] for x in m[w]):.0f}" for w in ("commit", "restore", "load")
            ),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def detail_table(res: dict[str, Any]) -> str:
    g = res["gen"]
    meas = res["measurements"]
    tb = g["tensor_bytes"]
    lines = [
        "| format | cache | parse ms first / repeated | parse reads (KiB read) "
        "| commit MB/s min-max | commit CPU s/GiB | re-commit s min-max "
        "| restore MB/s min-max | load MB/s min-max | load CPU s/GiB | other load (cores, max) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for mode in res["modes"]:
        for key, f in g["formats"].items():
            m = {
                w: meas[f"{key}:{w}:{mode}"]
                for w in ("parse", "commit", "recommit", "restore", "load")
            }
            raw = f["bytes"]
            pf = m["parse"][0]["files"]
            cells = [
                key,
                mode,
                _med(m["parse"], lambda x: 1000 * x["seconds"], "{:.1f}")
                + " / "
                + _med(m["parse"], lambda x: 1000 * x["hot_seconds"], "{:.1f}"),
                f"{sum(x['reads'] for x in pf)} ({sum(x['bytes_read'] for x in pf) / 1024:,.1f})",
                _range(m["commit"], _mbps(raw)),
                _med(m["commit"], _cpu_per_gib(raw), "{:.2f}"),
                _range(m["recommit"], _seconds, "{:.2f}"),
                _range(m["restore"], _mbps(raw)),
                _range(m["load"], _mbps(tb)),
                _med(m["load"], _cpu_per_gib(tb), "{:.2f}"),
                f"{max(x['other_cores'] for w in m.values() for x in w):.2f}",
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def dedup_table(res: dict[str, Any]) -> str:
    g = res["gen"]
    meas = res["measurements"]
    lines = [
        "| second commit (after model.safetensors, same repo) | file bytes | non-tensor bytes "
        "in it | new stored B (reported) | new chunk B | new objects | second commit s | "
        "second commit MB/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, f in g["formats"].items():
        xs = meas.get(f"dedup:{key}")
        if not xs:
            continue
        pf = meas[f"{key}:parse:warm"][0]["files"]
        non_tensor = sum(x["size"] - x["tensor_bytes"] for x in pf)
        raw = f["bytes"]
        cells = [_format_label(key, f), f"{raw:,}", f"{non_tensor:,}"]
        cells += [
            _med(xs, lambda x, k=k: x[k])
            for k in ("new_stored_size", "new_chunk_stored", "new_objects")
        ]
        cells += [_med(xs, _seconds, "{:.2f}"), _med(xs, _mbps(raw))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def export_table(res: dict[str, Any]) -> str:
    meas = res["measurements"]
    lines = [
        "| `wvc export HEAD --format safetensors` from the pytorch commit | cache | output bytes "
        "| seconds (whole process) | MB/s | min-max MB/s | peak RSS MiB | byte-identical to "
        "model.safetensors |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for mode in res["modes"]:
        xs = meas.get(f"pytorch:export:{mode}")
        if not xs:
            continue
        size = xs[0]["size"]
        ident = next(
            (x["identical_to_safetensors"] for x in xs if "identical_to_safetensors" in x), None
        )
        cmd = "wvc" if len(res["wvc_cmd"]) == 1 else "python -m wvc"
        secs = _med(xs, _seconds, "{:.2f}")
        lines.append(
            f"| `{cmd} export HEAD --format safetensors --to OUT -q` "
            f"| {mode} | {size:,} | {secs} | {_med(xs, _mbps(size))} | {_range(xs, _mbps(size))} "
            f"| {max(x['rss_mib'] for x in xs):.0f} "
            f"| {'-' if ident is None else ('yes' if ident else 'no')} |"
        )
    return "\n".join(lines)


def checks(res: dict[str, Any]) -> list[str]:
    out = []
    meas = res["measurements"]
    for key in res["gen"]["formats"]:
        rs = [x for m in res["modes"] for x in meas[f"{key}:restore:{m}"] if "identical" in x]
        ld = [x for x in meas[f"{key}:load:warm"] if "crcs_ok" in x]
        rc = [x for m in res["modes"] for x in meas[f"{key}:recommit:{m}"]]
        cm = meas[f"{key}:commit:warm"][0]
        pf = meas[f"{key}:parse:warm"][0]["files"]
        warn = [w for x in pf for w in x["warnings"]] + cm["warnings"]
        out.append(
            f"- {key}: {cm['tensors']} tensors in {cm['files']} file(s) "
            f"({', '.join(x['format'] for x in pf)}); restore byte-identical: "
            f"{all(x['identical'] for x in rs)}; load crc32 and names/shapes match the "
            f"generated tensors: {all(x['crcs_ok'] and x['desc_ok'] for x in ld)}; re-commit new "
            f"chunk bytes: {max(x['new_chunk_stored'] for x in rc)}"
            + (f"; WARNINGS: {warn}" if warn else "")
        )
    return out


def report(res: dict[str, Any], args: argparse.Namespace) -> str:
    m = res["machine"]
    g = res["gen"]
    out = [
        "\n## Results\n",
        f"{machine_line(m)}, wvc {res.get('wvc_rev')} ({res['code_root']}), {m['date']}. "
        f"{args.dtype}, "
        f"{g['tensors']} tensors ({g['layers']} layers, hidden {g['hidden']}), "
        f"{g['tensor_bytes']:,} tensor bytes; median of {args.runs} run(s); Python API "
        "(`wvc.Repository`) in a child process per operation, timed around the call; MB/s = 10^6 "
        "bytes/s of file bytes (load: of tensor bytes); stored % = chunk bytes stored / file "
        "bytes; page cache: " + ", ".join(res["modes"]) + ".",
    ]
    for mode in res["modes"]:
        out += ["", f"Per format ({mode}):", "", format_table(res, mode)]
    out += ["", "Cross-format deduplication (warm):", "", dedup_table(res)]
    out += ["", "Export (whole CLI process, start-up included):", "", export_table(res)]
    out += ["", "Spread, parse I/O, CPU and interference:", "", detail_table(res)]
    out += ["", *checks(res)]
    loads = [
        x["other_cores"] for xs in res["measurements"].values() for x in xs if "other_cores" in x
    ]
    if loads:
        mid = median(loads)
        out.append(
            f"- other load on the machine during the measurements: median {mid:.2f}, max "
            f"{max(loads):.2f} of {m['nproc']} cores"
            + (" -- WARNING: the machine was not idle." if mid > 0.25 else ".")
        )
    out += run_caveats(res)
    out += ["", f"total benchmark time {res['total_seconds']:.0f}s"]
    return "\n".join(out)


def main() -> None:
    if run_if_child(CHILD_OPS, sys.argv):
        return
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--size", type=parse_size, default=GiB, help="tensor bytes (default 1GiB)")
    ap.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    ap.add_argument("--runs", type=int, default=3, help="runs of every measurement (median)")
    ap.add_argument(
        "--cold",
        action="store_true",
        help="also measure with the page cache dropped before each operation (needs root)",
    )
    ap.add_argument(
        "--code",
        metavar="REV",
        help="measure a clean git worktree of REV (PYTHONPATH) instead of the installed wvc; "
        "the CLI is then `python -m wvc`",
    )
    add_run_options(ap)
    ap.add_argument("--wvc", metavar="PATH", help="the wvc command (default: beside this Python)")
    args = ap.parse_args()
    if args.runs < 1:
        ap.error("--runs must be >= 1")
    work = make_workdir(args.workdir, "wvc-bench-formats-")
    n_formats = 5 if args.dtype == "fp32" else 4
    need = args.size * (n_formats + 3)  # the files + one repo + one restore/export + slack
    free = shutil.disk_usage(work).free
    b = Bench(args, work)
    warnings = []
    if args.cold and not b.can_drop:
        warnings.append(f"--cold: drop_caches not permitted ({b.drop_note}); warm only")
    run_session(
        b,
        args,
        title="wvc formats benchmark",
        need=need,
        free=free,
        leftovers=["files", "children.log", "rss.txt", "pycache", "repo-*"],
        code_root=b.code_root,
        report=report,
        warnings=warnings,
    )


if __name__ == "__main__":
    main()
