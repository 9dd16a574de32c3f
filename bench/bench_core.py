#!/usr/bin/env python3
"""Core wvc benchmark: commit / re-commit / restore throughput, storage and peak memory.

Usage (from the repository root, with wvc installed)::

    python bench/bench_core.py                       # ~1 GiB fp32 + ~1 GiB bf16
    python bench/bench_core.py --chunk-sweep         # also 1/4/16 MiB chunk sweep
    python bench/bench_core.py --size 4GiB --only bf16

For each checkpoint it measures, side by side and in one run:

* wvc first commit into a fresh repository, re-commit of the unchanged
  checkpoint, restore into a fresh directory (verified byte-identical outside
  the timed part), stored bytes / raw bytes;
* baselines: ``shutil.copyfile`` + fsync, and the ``zstd`` CLI at ``-1``
  (single-threaded and ``-T0``) with ``zstd -d`` for the read side.

Every measured operation runs in its own child process (this script re-invoked
with ``--child``, or the ``zstd`` CLI). Its peak RSS is the child's own maximum
resident set, read with ``/usr/bin/time -f %M`` when present, else from the
``ru_maxrss`` that ``os.wait4`` returns for that one pid (on Linux that figure is
never below the parent's RSS at spawn, because exec folds the old address
space's high-water mark into it; the parent never imports numpy or wvc so it
stays ~25 MiB). Python children also report their own ``VmHWM`` as a
cross-check. Throughput of Python operations is timed inside the child around
the operation itself (interpreter start-up and imports excluded; the
whole-process wall time is recorded too). Outputs are fsynced in every method,
so "write" figures include getting the bytes to disk.

If ``/proc/sys/vm/drop_caches`` is writable, every measurement is done both
"warm" (input already in the page cache) and "cold" (``sync`` and
``drop_caches`` just before the child starts); otherwise warm only.

MB/s means 10^6 bytes per second of checkpoint (raw file) bytes.

Only stdlib + numpy + ml_dtypes + wvc are used.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MiB = 1024 * 1024
GiB = 1024 * MiB
MB = 1e6
VOCAB = 32000
VOCAB_GROWN = 32064
TARGETS = {
    "commit_mbps": 300.0,
    "restore_mbps": 500.0,
    "stored_pct": {"bf16": 70.0, "fp32": 85.0},
    "rss_mib_4gib": 400.0,
}
SWEEP_CHUNKS_MIB = (1, 4, 16)


# ----------------------------------------------------------------------------------------------
# Model shapes and generation (child side)
# ----------------------------------------------------------------------------------------------


def model_shapes(dtype: str, size: int, vocab: int = VOCAB) -> dict[str, tuple[int, ...]]:
    """LLaMA-like tensor names and shapes whose total is close to ``size`` bytes.

    hidden/intermediate grow with the size so tensors stay realistic (LLaMA
    ratios); the layer count is fitted to the requested size. Embeddings are untied (embed_tokens
    and lm_head both [vocab, hidden]).
    """
    itemsize = 4 if dtype == "fp32" else 2
    # The widest model (up to LLaMA-7B width) whose embeddings are at most ~30% of the bytes.
    hidden, inter = 256, 704
    for h, i in ((512, 1408), (1024, 2816), (2048, 5632), (4096, 11008)):
        if (2 * VOCAB * h + h) * itemsize <= 0.3 * size:
            hidden, inter = h, i
    per_layer = (4 * hidden * hidden + 3 * hidden * inter + 2 * hidden) * itemsize
    fixed = (2 * VOCAB * hidden + hidden) * itemsize
    layers = max(1, -(-(size - fixed) // per_layer))  # at least the requested size
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (vocab, hidden)}
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes[p + "input_layernorm.weight"] = (hidden,)
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            shapes[p + f"self_attn.{proj}.weight"] = (hidden, hidden)
        shapes[p + "post_attention_layernorm.weight"] = (hidden,)
        shapes[p + "mlp.gate_proj.weight"] = (inter, hidden)
        shapes[p + "mlp.up_proj.weight"] = (inter, hidden)
        shapes[p + "mlp.down_proj.weight"] = (hidden, inter)
    shapes["model.norm.weight"] = (hidden,)
    shapes["lm_head.weight"] = (vocab, hidden)
    return shapes


def child_gen(a: dict[str, Any]) -> dict[str, Any]:
    """Write a safetensors file tensor by tensor, in row blocks (bounded memory)."""
    import zlib

    import ml_dtypes
    import numpy as np

    from wvc.dtypes import DType
    from wvc.formats.safetensors import build_header

    dtype = a["dtype"]
    np_dtype = np.dtype(np.float32) if dtype == "fp32" else np.dtype(ml_dtypes.bfloat16)
    shapes = model_shapes(dtype, a["size"], a.get("vocab", VOCAB))
    st_dtype = DType.from_numpy(np_dtype)
    specs = {}
    for name, shape in shapes.items():
        n = 1
        for d in shape:
            n *= d
        specs[name] = (st_dtype, shape, n * np_dtype.itemsize)
    path = Path(a["path"])
    path.parent.mkdir(parents=True, exist_ok=True)
    block_elems = 4 * MiB
    with open(path, "wb") as f:
        f.write(build_header(specs, {"format": "pt"}))
        for name, shape in shapes.items():
            if name.endswith("norm.weight"):
                f.write(np.ones(shape, dtype=np_dtype).tobytes())
                continue
            rows, cols = shape
            # Rows below VOCAB come from a stream seeded by the name alone, so a
            # model with a grown vocabulary shares those rows bit-for-bit.
            base_rows = (
                min(rows, VOCAB)
                if name in ("model.embed_tokens.weight", "lm_head.weight")
                else rows
            )
            seed = zlib.crc32(name.encode()) + 1000003 * a.get("seed", 0)
            for start_rows, stop_rows, s in ((0, base_rows, seed), (base_rows, rows, seed + 7)):
                rng = np.random.default_rng(s)
                step = max(1, block_elems // cols)
                for r in range(start_rows, stop_rows, step):
                    nr = min(step, stop_rows - r)
                    x = rng.standard_normal((nr, cols), dtype=np.float32)
                    x *= np.float32(0.02)
                    f.write(x.astype(np_dtype).tobytes())
        f.flush()
        os.fsync(f.fileno())
    (path.parent / "config.json").write_text(
        json.dumps(
            {
                "architectures": ["LlamaForCausalLM"],
                "torch_dtype": dtype,
                "vocab_size": shapes["lm_head.weight"][0],
            }
        )
        + "\n"
    )
    return {
        "bytes": path.stat().st_size,
        "tensors": len(shapes),
        "layers": sum(1 for k in shapes if k.endswith("q_proj.weight")),
    }


# ----------------------------------------------------------------------------------------------
# Measured operations (child side)
# ----------------------------------------------------------------------------------------------


def _timed(fn: Any) -> tuple[Any, dict[str, float]]:
    """Run ``fn()``; return its result and wall/CPU/page-fault figures of this process."""
    import resource

    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    res = fn()
    t1 = time.perf_counter()
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    return res, {
        "seconds": t1 - t0,
        "user": r1.ru_utime - r0.ru_utime,
        "sys": r1.ru_stime - r0.ru_stime,
        "minflt": r1.ru_minflt - r0.ru_minflt,
    }


def _chunk_stats(repo: Any) -> dict[str, int]:
    st = repo.stats()
    return {
        "chunk_stored_size": st.chunk_stored_size,
        "unique_size": st.unique_size,
        "stored_size": st.stored_size,
        "objects": st.objects,
    }


def child_commit(a: dict[str, Any]) -> dict[str, Any]:
    import wvc

    root = Path(a["repo"])
    repo = wvc.Repository.init(root) if a.get("init") else wvc.Repository.open(root)
    before = _chunk_stats(repo)
    res, t = _timed(lambda: repo.commit(a["ckpt"], message=a.get("message", "bench")))
    after = _chunk_stats(repo)
    repo.close()
    return {
        **t,
        "logical_size": res.logical_size,
        "new_stored_size": res.new_stored_size,
        "new_objects": res.new_objects,
        "new_chunk_stored": after["chunk_stored_size"] - before["chunk_stored_size"],
        "stats": after,
    }


def child_restore(a: dict[str, Any]) -> dict[str, Any]:
    import wvc

    repo = wvc.Repository.open(a["repo"])
    res, t = _timed(lambda: repo.restore("HEAD", a["out"]))
    repo.close()
    return {**t, "size": res.size, "files": res.files}


def child_copy(a: dict[str, Any]) -> dict[str, Any]:
    def op() -> None:
        shutil.copyfile(a["src"], a["dst"])
        fd = os.open(a["dst"], os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    _, t = _timed(op)
    return t


def child_sweep(a: dict[str, Any]) -> dict[str, Any]:
    """Ingest one file at one chunk size into a fresh object store, then maybe a grown variant."""
    from wvc.formats import detect
    from wvc.ingest import FileSource, ingest
    from wvc.objects import ObjectStore
    from wvc.store import LocalStore

    d = Path(a["store"])
    (d / "objects").mkdir(parents=True)
    (d / "tmp").mkdir()
    objects = ObjectStore(LocalStore(d / "objects", tmp_dir=d / "tmp"))
    chunk = a["chunk_size"]

    def run(path: str) -> tuple[Any, dict[str, float], int]:
        src = FileSource(path)
        try:
            layout = detect(path).parse(path, src.read_at, src.size)

            def op() -> Any:
                r = ingest(objects, [(src, layout)], chunk_size=chunk)
                objects.flush()
                return r

            res, t = _timed(op)
            return res, t, src.size
        finally:
            src.close()

    res, t, size = run(a["file"])
    new = {p.id: p for p in res.puts if p.new}
    out: dict[str, Any] = {
        **t,
        "chunk_size": chunk,
        "raw": size,
        "stored": sum(p.stored_size for p in new.values()),
        "objects": len(new),
        "chunks": len(res.puts),
    }
    if a.get("grown"):
        res2, t2, size2 = run(a["grown"])
        new2 = {p.id: p for p in res2.puts if p.new}
        per: dict[str, dict[str, int]] = {}
        for seg in res2.manifests[0].segments:
            if seg.tensor is not None and seg.tensor.name in GROWN_TENSORS:
                ids = set(seg.chunks)
                per[seg.tensor.name] = {
                    "tensor_bytes": seg.size,
                    "new_raw": sum(new2[i].raw_size for i in ids if i in new2),
                    "new_stored": sum(new2[i].stored_size for i in ids if i in new2),
                    "new_objects": sum(1 for i in ids if i in new2),
                }
        out["grown"] = {
            **t2,
            "raw": size2,
            "new_raw": sum(p.raw_size for p in new2.values()),
            "new_stored": sum(p.stored_size for p in new2.values()),
            "new_objects": len(new2),
            "tensors": per,
        }
    return out


def child_codec(a: dict[str, Any]) -> dict[str, Any]:
    """Single-thread codec figures on 4 MiB chunks of N(0, 0.02) weights.

    The exponent-carrying plane (the only one wvc entropy-codes for these
    dtypes) is compressed with several zstd settings; whole chunks go through
    wvc's byte-group codec (encode, decode) and through plain zstd -1.
    """
    import ml_dtypes
    import numpy as np
    import zstandard

    from wvc.codecs import codec_for
    from wvc.dtypes import DType

    def best(fn: Any, n: int = 5) -> float:
        fn()
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return min(times)

    rng = np.random.default_rng(1)

    def measure(dtype: str) -> dict[str, Any]:
        np_dtype = np.dtype(np.float32) if dtype == "fp32" else np.dtype(ml_dtypes.bfloat16)
        width = np_dtype.itemsize
        x = rng.standard_normal(4 * MiB // width, dtype=np.float32) * np.float32(0.02)
        data = x.astype(np_dtype).tobytes()
        plane = (
            np.frombuffer(data, dtype=np.uint8).reshape(-1, width)[:, width - 1].copy().tobytes()
        )
        rows = []
        settings: list[tuple[str, Any]] = [
            (f"level {lvl}", zstandard.ZstdCompressor(level=lvl)) for lvl in (-5, -1, 1, 3)
        ]
        tuned = zstandard.ZstdCompressionParameters(
            strategy=zstandard.STRATEGY_FAST, window_log=20, hash_log=10, chain_log=6,
            search_log=1, min_match=7, target_length=0,
        )  # fmt: skip
        settings.append(
            ("fast, min_match 7, hash_log 10", zstandard.ZstdCompressor(compression_params=tuned))
        )
        for label, c in settings:
            packed = c.compress(plane)
            secs = best(lambda c=c: c.compress(plane))
            rows.append(
                {
                    "setting": label,
                    "ratio": len(packed) / len(plane),
                    "mbps": len(plane) / secs / MB,
                }
            )
        codec, param = codec_for(DType.F32 if dtype == "fp32" else DType.BF16)
        view = memoryview(data)
        payload = codec.encode(view, param)
        enc = best(lambda: codec.encode(view, param))
        dec = best(lambda: codec.decode(memoryview(payload), len(data)))
        plain = zstandard.ZstdCompressor(level=1)
        zsecs = best(lambda: plain.compress(data))
        return {
            "plane": rows,
            "chunk": {
                "bytegroup_ratio": len(payload) / len(data),
                "bytegroup_encode_mbps": len(data) / enc / MB,
                "bytegroup_decode_mbps": len(data) / dec / MB,
                "zstd1_ratio": len(plain.compress(data)) / len(data),
                "zstd1_mbps": len(data) / zsecs / MB,
            },
        }

    return {dtype: measure(dtype) for dtype in a["dtypes"]}


GROWN_TENSORS = ("model.embed_tokens.weight", "lm_head.weight")
CHILD_OPS = {
    "gen": child_gen,
    "commit": child_commit,
    "restore": child_restore,
    "copy": child_copy,
    "sweep": child_sweep,
    "codec": child_codec,
}


def _vm_hwm_kib() -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def child_main(op: str, args_json: str) -> None:
    out = CHILD_OPS[op](json.loads(args_json))
    out["vm_hwm_kib"] = _vm_hwm_kib()
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()


# ----------------------------------------------------------------------------------------------
# Parent side: process control, cache control, measurement plumbing
# ----------------------------------------------------------------------------------------------


class ChildFailed(RuntimeError):
    pass


TIME_BIN = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None
HZ = os.sysconf("SC_CLK_TCK")


def _cpu_busy() -> float:
    """System-wide busy CPU seconds so far (all cores), from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return 0.0
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return (sum(v[:8]) - idle) / HZ


def run_measured(cmd: list[str], log: Path) -> dict[str, Any]:
    """Run ``cmd`` as one child and measure it.

    Returns stdout, wall seconds, the child's peak RSS in KiB (``rss_kib``), its
    CPU seconds (``cpu``, from ``wait4``, including its waited-for children) and
    ``other_cores``: the average number of cores busy with *other* work on the
    machine while it ran (interference indicator).

    Peak RSS: with /usr/bin/time the figure is the child's own (%M). Without it,
    ``os.wait4`` on the child's pid is used; on Linux that figure is at least the
    parent's RSS at spawn time (exec folds the pre-exec address space's high-water
    mark into the child's maxrss), which is why the parent here stays small.
    """
    rss_file = log.parent / "rss.txt"
    full = [TIME_BIN, "-f", "%M", "-o", str(rss_file), *cmd] if TIME_BIN else cmd
    with open(log, "ab") as err:
        err.write(("\n$ " + " ".join(cmd) + "\n").encode())
        err.flush()
        busy0 = _cpu_busy()
        t0 = time.perf_counter()
        proc = subprocess.Popen(full, stdout=subprocess.PIPE, stderr=err)
        assert proc.stdout is not None
        out = proc.stdout.read()
        proc.stdout.close()
        _pid, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        busy1 = _cpu_busy()
        proc.returncode = os.waitstatus_to_exitcode(status)  # Popen must not wait again
    if proc.returncode != 0:
        raise ChildFailed(f"{cmd[:4]}... exited {proc.returncode}; see {log}")
    cpu = usage.ru_utime + usage.ru_stime
    res: dict[str, Any] = {
        "stdout": out.decode(),
        "wall": wall,
        "cpu": cpu,
        "other_cores": max(0.0, (busy1 - busy0 - cpu) / wall) if wall > 0 else 0.0,
    }
    if TIME_BIN:
        res["rss_kib"] = int(rss_file.read_text().split()[-1])
        res["rss_how"] = "/usr/bin/time %M"
        rss_file.unlink()
    else:
        res["rss_kib"] = usage.ru_maxrss
        res["rss_how"] = "wait4 ru_maxrss"
    return res


def run_child(op: str, args: dict[str, Any], log: Path) -> dict[str, Any]:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", op, json.dumps(args)]
    m = run_measured(cmd, log)
    res = json.loads(m.pop("stdout").strip().splitlines()[-1])
    res.update(m)
    res["rss_mib"] = m["rss_kib"] / 1024
    hwm = res.get("vm_hwm_kib")
    res["hwm_mib"] = hwm / 1024 if hwm is not None else None
    return res


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def drop_caches() -> tuple[bool, str]:
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True, "ok"
    except OSError as e:
        return False, f"{type(e).__name__}: {e.strerror or e}"


def files_identical(a: Path, b: Path) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x = fa.read(4 * MiB)
            y = fb.read(4 * MiB)
            if x != y:
                return False
            if not x:
                return True


def dirs_identical(a: Path, b: Path) -> bool:
    fa = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    fb = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    return fa == fb and all(files_identical(a / p, b / p) for p in fa)


def dir_bytes(d: Path) -> int:
    return sum(p.stat().st_size for p in d.rglob("*") if p.is_file())


def du_bytes(d: Path) -> int:
    """Allocated bytes (st_blocks), like ``du -s``."""
    return sum(p.stat().st_blocks * 512 for p in d.rglob("*") if p.is_file())


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*([0-9.]+)\s*([KMGT]?i?B?)?\s*", text, re.IGNORECASE)
    if not m:
        raise argparse.ArgumentTypeError(f"bad size {text!r} (e.g. 1GiB, 512MiB)")
    num = float(m.group(1))
    unit = (m.group(2) or "").upper()
    mult = {
        "": 1,
        "B": 1,
        "K": 1024,
        "KB": 1000,
        "KIB": 1024,
        "M": MiB,
        "MB": 10**6,
        "MIB": MiB,
        "G": GiB,
        "GB": 10**9,
        "GIB": GiB,
        "T": 1024 * GiB,
        "TB": 10**12,
        "TIB": 1024 * GiB,
    }
    if unit not in mult:
        raise argparse.ArgumentTypeError(f"bad size unit in {text!r}")
    return int(num * mult[unit])


def human(n: float) -> str:
    for unit, div in (("GiB", GiB), ("MiB", MiB), ("KiB", 1024)):
        if abs(n) >= div:
            return f"{n / div:.2f} {unit}"
    return f"{int(n)} B"


def _run_text(cmd: list[str], cwd: str | None = None) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd).stdout.strip()
    except OSError:
        return ""


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "zstd": _run_text(["zstd", "--version"]) or None,
    }
    for line in _run_text(["lscpu"]).splitlines():
        if line.startswith("Model name"):
            info["cpu"] = line.split(":", 1)[1].strip()
    try:
        with open("/proc/meminfo") as f:
            info["ram_gib"] = round(int(f.readline().split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    # Which wvc is measured: the source tree of this script's repository, if it is a git checkout.
    root = str(Path(__file__).resolve().parent.parent)
    head = _run_text(["git", "rev-parse", "--short", "HEAD"], cwd=root)
    if head:
        dirty = _run_text(["git", "status", "--porcelain", "--", "wvc"], cwd=root)
        info["wvc_git"] = head + (" + uncommitted changes in wvc/" if dirty else "")
    return info


def median(xs: list[float]) -> float:
    ys = sorted(xs)
    n = len(ys)
    return ys[n // 2] if n % 2 else (ys[n // 2 - 1] + ys[n // 2]) / 2


# ----------------------------------------------------------------------------------------------
# Benchmark driver
# ----------------------------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.log = work / "children.log"
        self.can_drop, self.drop_note = drop_caches()
        self.results: dict[str, Any] = {
            "machine": machine_info(),
            "drop_caches": self.drop_note,
            "size_arg": args.size,
            "repeat": args.repeat,
            "checkpoints": {},
        }

    def say(self, msg: str) -> None:
        print(msg, flush=True)

    def child(self, op: str, **kw: Any) -> dict[str, Any]:
        return run_child(op, kw, self.log)

    def prepare(self, cold: bool) -> None:
        """Flush dirty pages; for cold measurements also drop the page cache."""
        if cold:
            drop_caches()
        else:
            os.sync()

    def modes(self) -> list[str]:
        return ["warm", "cold"] if self.can_drop else ["warm"]

    # --- one checkpoint --------------------------------------------------------

    def bench_checkpoint(self, dtype: str) -> dict[str, Any]:
        w = self.work / dtype
        ckpt = w / "ckpt"
        self.say(
            f"\n== {dtype}: generating ~{human(self.args.size)} checkpoint in {ckpt} (not timed)"
        )
        t0 = time.perf_counter()
        g = self.child(
            "gen", path=str(ckpt / "model.safetensors"), dtype=dtype, size=self.args.size
        )
        raw = dir_bytes(ckpt)
        self.say(
            f"   {g['tensors']} tensors, {g['layers']} layers, {raw:,} bytes in 2 files "
            f"({time.perf_counter() - t0:.1f}s)"
        )
        model = ckpt / "model.safetensors"
        r: dict[str, Any] = {
            "raw": raw,
            "model_bytes": g["bytes"],
            "tensors": g["tensors"],
            "layers": g["layers"],
        }
        runs: dict[str, list[dict[str, Any]]] = {}
        r["runs"] = runs

        def add(key: str, value: dict[str, Any]) -> dict[str, Any]:
            runs.setdefault(key, []).append(value)
            return value

        def rate(nbytes: int, secs: float) -> str:
            return f"{nbytes / secs / MB:.0f} MB/s"

        for rep in range(self.args.repeat):
            tag = f"[{rep + 1}/{self.args.repeat}]"
            # wvc first commit: cold into a fresh repo (discarded), then warm (repo kept).
            for mode in reversed(self.modes()):
                repo = w / f"repo-{mode}"
                self.prepare(mode == "cold")
                c = add(
                    f"commit_{mode}",
                    self.child("commit", repo=str(repo), ckpt=str(ckpt), init=True),
                )
                self.say(
                    f"   {tag} wvc commit ({mode}): {c['seconds']:.2f}s {rate(raw, c['seconds'])}, "
                    f"CPU {c['user']:.1f}u+{c['sys']:.1f}s, peak RSS {c['rss_mib']:.0f} MiB "
                    f"(VmHWM {c['hwm_mib']:.0f}), other load {c['other_cores']:.2f} cores"
                )
                if mode == "cold":
                    shutil.rmtree(repo)
            repo = w / "repo-warm"
            st = runs["commit_warm"][-1]["stats"]
            r.update(
                stored=st["chunk_stored_size"],
                stored_all=st["stored_size"],
                unique=st["unique_size"],
                objects=st["objects"],
                du_objects=du_bytes(repo / ".wvc" / "objects"),
            )

            # Re-commit of the unchanged checkpoint (warm: it was just read).
            self.prepare(False)
            rc = add("recommit", self.child("commit", repo=str(repo), ckpt=str(ckpt), init=False))
            self.say(
                f"   {tag} wvc re-commit: {rc['seconds']:.2f}s {rate(raw, rc['seconds'])}, "
                f"new chunk bytes {rc['new_chunk_stored']}, new stored {rc['new_stored_size']} B "
                f"in {rc['new_objects']} object(s), peak RSS {rc['rss_mib']:.0f} MiB"
            )

            # Restore: warm (objects just written, still cached) then cold.
            for mode in self.modes():
                out = w / f"restored-{mode}"
                self.prepare(mode == "cold")
                rs = self.child("restore", repo=str(repo), out=str(out))
                rs["identical"] = dirs_identical(ckpt, out)
                add(f"restore_{mode}", rs)
                self.say(
                    f"   {tag} wvc restore ({mode}): {rs['seconds']:.2f}s "
                    f"{rate(raw, rs['seconds'])}, "
                    f"CPU {rs['user']:.1f}u+{rs['sys']:.1f}s, peak RSS {rs['rss_mib']:.0f} MiB, "
                    f"byte-identical: {rs['identical']}, other load {rs['other_cores']:.2f} cores"
                )
                shutil.rmtree(out)
            shutil.rmtree(repo)

            # Baseline 1: copyfile + fsync, there and back.
            for mode in reversed(self.modes()):
                dst, back = w / "copy.bin", w / "copy-back.bin"
                self.prepare(mode == "cold")
                cw = add(f"copy_write_{mode}", self.child("copy", src=str(model), dst=str(dst)))
                self.prepare(mode == "cold")
                cr = add(f"copy_read_{mode}", self.child("copy", src=str(dst), dst=str(back)))
                cr["identical"] = files_identical(model, back)
                self.say(
                    f"   {tag} copy ({mode}): write {rate(g['bytes'], cw['seconds'])}, "
                    f"back {rate(g['bytes'], cr['seconds'])}"
                )
                dst.unlink()
                back.unlink()

            # Baseline 2: zstd CLI.
            if shutil.which("zstd"):
                for label, extra in ZSTD_VARIANTS:
                    for mode in reversed(self.modes()):
                        zw, zr = self.zstd(model, w, mode, extra)
                        add(f"{label}_write_{mode}", zw)
                        add(f"{label}_read_{mode}", zr)
                        self.say(
                            f"   {tag} {label} ({mode}): write {rate(g['bytes'], zw['seconds'])}, "
                            f"-d {rate(g['bytes'], zr['seconds'])}, "
                            f"{100 * zw['size'] / g['bytes']:.1f}% of raw"
                        )
        return r

    def zstd(
        self, model: Path, w: Path, mode: str, extra: list[str]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Compress, then decompress with the CLI; each timed up to an fsync of its output."""
        zf = w / "model.safetensors.zst"
        back = w / "model.zstd-restored"
        self.prepare(mode == "cold")
        zw = run_measured(["zstd", "-1", *extra, "-q", "-f", str(model), "-o", str(zf)], self.log)
        t0 = time.perf_counter()
        fsync_path(zf)
        zw["seconds"] = zw["wall"] + time.perf_counter() - t0
        zw["size"] = zf.stat().st_size
        self.prepare(mode == "cold")
        zr = run_measured(["zstd", "-d", *extra, "-q", "-f", str(zf), "-o", str(back)], self.log)
        t0 = time.perf_counter()
        fsync_path(back)
        zr["seconds"] = zr["wall"] + time.perf_counter() - t0
        zr["identical"] = files_identical(model, back)
        for z in (zw, zr):
            z.pop("stdout", None)
            z["rss_mib"] = z["rss_kib"] / 1024
        zf.unlink()
        back.unlink()
        return zw, zr

    # --- chunk sweep ---------------------------------------------------------------

    def chunk_sweep(self, dtypes: list[str]) -> dict[str, Any]:
        self.say(
            "\n== chunk-size sweep (wvc.ingest.ingest directly into a fresh LocalStore, warm cache)"
        )
        out: dict[str, Any] = {}
        grown_dtype = "bf16" if "bf16" in dtypes else dtypes[0]
        gw = self.work / grown_dtype / "grown"
        self.say(
            f"   generating {grown_dtype} variant with vocab {VOCAB}->{VOCAB_GROWN} rows in "
            "embed_tokens and lm_head (all other bytes identical)"
        )
        self.child(
            "gen",
            path=str(gw / "model.safetensors"),
            dtype=grown_dtype,
            size=self.args.size,
            vocab=VOCAB_GROWN,
        )
        for dtype in dtypes:
            model = self.work / dtype / "ckpt" / "model.safetensors"
            rows: dict[int, list[dict[str, Any]]] = {}
            for rep in range(self.args.repeat):
                for cm in SWEEP_CHUNKS_MIB:
                    store = self.work / dtype / f"sweep-{cm}"
                    self.prepare(False)
                    res = self.child(
                        "sweep",
                        store=str(store),
                        file=str(model),
                        chunk_size=cm * MiB,
                        grown=str(gw / "model.safetensors") if dtype == grown_dtype else None,
                    )
                    shutil.rmtree(store)
                    rows.setdefault(cm, []).append(res)
                    msg = (
                        f"   [{rep + 1}/{self.args.repeat}] {dtype} {cm:>2} MiB: "
                        f"{res['raw'] / res['seconds'] / MB:.0f} MB/s, CPU "
                        f"{res['user']:.1f}u+{res['sys']:.1f}s, "
                        f"stored {100 * res['stored'] / res['raw']:.2f}%, {res['objects']} "
                        "objects, "
                        f"peak RSS {res['rss_mib']:.0f} MiB, other load "
                        f"{res['other_cores']:.2f} cores"
                    )
                    if "grown" in res:
                        msg += f"; grown vocab: {human(res['grown']['new_stored'])} new stored"
                    self.say(msg)
            out[dtype] = rows
        shutil.rmtree(gw)
        out["grown_dtype"] = grown_dtype
        return out


ZSTD_VARIANTS = (("zstd -1", []), ("zstd -1 -T0", ["-T0"]))


# ----------------------------------------------------------------------------------------------
# Reporting
# ----------------------------------------------------------------------------------------------


def speed(runs: list[dict[str, Any]], nbytes: int) -> float:
    """Median MB/s over the runs."""
    return median([nbytes / x["seconds"] / MB for x in runs])


def speed_range(runs: list[dict[str, Any]], nbytes: int) -> str:
    v = [nbytes / x["seconds"] / MB for x in runs]
    return f"{min(v):,.0f}-{max(v):,.0f}" if len(v) > 1 else f"{v[0]:,.0f}"


def peak(runs: list[dict[str, Any]]) -> float:
    return max(x["rss_mib"] for x in runs)


def cpu_per_gib(runs: list[dict[str, Any]], nbytes: int) -> float:
    """Median CPU seconds (user + sys, all threads) per GiB of checkpoint."""
    vals = []
    for x in runs:
        cpu = x["user"] + x["sys"] if "user" in x else x["cpu"]
        vals.append(cpu * GiB / nbytes)
    return median(vals)


def _methods(r: dict[str, Any]) -> list[tuple[str, str, str, int, str | None]]:
    """(label, write key, read key, byte count, stored-size source) for every method measured."""
    runs = r["runs"]
    out: list[tuple[str, str, str, int, str | None]] = [
        ("wvc commit / restore", "commit", "restore", r["raw"], "wvc"),
        ("copyfile + fsync (there / back)", "copy_write", "copy_read", r["model_bytes"], None),
    ]
    for label, _ in ZSTD_VARIANTS:
        if f"{label}_write_warm" in runs:
            out.append(
                (
                    f"`{label}` / `zstd -d`",
                    f"{label}_write",
                    f"{label}_read",
                    r["model_bytes"],
                    label,
                )
            )
    return out


def main_table(res: dict[str, Any], cold: bool) -> str:
    modes = ["warm", "cold"] if cold else ["warm"]
    hdr = ["checkpoint", "method"]
    hdr += [f"MB/s write ({m})" for m in modes] + [f"MB/s read/restore ({m})" for m in modes]
    hdr += ["stored % of raw", "peak RSS MiB write", "peak RSS MiB read"]
    lines = ["| " + " | ".join(hdr) + " |", "|---|---|" + "---:|" * (len(hdr) - 2)]
    for dtype, r in res["checkpoints"].items():
        runs = r["runs"]
        name = f"{dtype} {human(r['raw'])}"
        for label, wk, rk, nbytes, stored_src in _methods(r):
            cells = [name, label]
            cells += [f"{speed(runs[f'{wk}_{m}'], nbytes):,.0f}" for m in modes]
            cells += [f"{speed(runs[f'{rk}_{m}'], nbytes):,.0f}" for m in modes]
            if stored_src == "wvc":
                cells.append(f"{100 * r['stored'] / r['raw']:.1f}")
            elif stored_src:
                cells.append(f"{100 * runs[f'{wk}_warm'][0]['size'] / nbytes:.1f}")
            else:
                cells.append("100.0")
            cells.append(f"{max(peak(runs[f'{wk}_{m}']) for m in modes):.0f}")
            cells.append(f"{max(peak(runs[f'{rk}_{m}']) for m in modes):.0f}")
            lines.append("| " + " | ".join(cells) + " |")
            if stored_src == "wvc":
                rc = runs["recommit"]
                new_chunk = max(x["new_chunk_stored"] for x in rc)
                new_all = max(x["new_stored_size"] for x in rc)
                cells = [name, "wvc re-commit (unchanged)", f"{speed(rc, r['raw']):,.0f}"]
                cells += ["-"] * (2 * len(modes) - 1)
                cells += [
                    f"+{100 * new_chunk / r['raw']:.2f} ({new_chunk} chunk B, {new_all} B "
                    "total new)",
                    f"{peak(rc):.0f}",
                    "-",
                ]
                lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def detail_table(res: dict[str, Any], cold: bool) -> str:
    """Spread over repeats, CPU cost, and how busy the rest of the machine was."""
    modes = ["warm", "cold"] if cold else ["warm"]
    lines = [
        "| checkpoint | method | cache | MB/s write min-max | MB/s read min-max | CPU s/GiB "
        "write | "
        "CPU s/GiB read | other load (cores) |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for dtype, r in res["checkpoints"].items():
        runs = r["runs"]
        for label, wk, rk, nbytes, _ in _methods(r):
            for m in modes:
                wr, rr = runs[f"{wk}_{m}"], runs[f"{rk}_{m}"]
                load = max(x["other_cores"] for x in wr + rr)
                lines.append(
                    f"| {dtype} | {label} | {m} | {speed_range(wr, nbytes)} | "
                    f"{speed_range(rr, nbytes)} | "
                    f"{cpu_per_gib(wr, nbytes):.2f} | {cpu_per_gib(rr, nbytes):.2f} | {load:.2f} |"
                )
        rc = runs["recommit"]
        lines.append(
            f"| {dtype} | wvc re-commit | warm | {speed_range(rc, r['raw'])} | - | "
            f"{cpu_per_gib(rc, r['raw']):.2f} | - | {max(x['other_cores'] for x in rc):.2f} |"
        )
    return "\n".join(lines)


def sweep_table(sw: dict[str, Any]) -> str:
    lines = [
        "| checkpoint | chunk | MB/s ingest (median) | MB/s min-max | CPU s/GiB | stored % of "
        "raw | objects | "
        "peak RSS MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for dtype, rows in sw.items():
        if dtype == "grown_dtype":
            continue
        for cm, rs in rows.items():
            r = rs[0]
            lines.append(
                f"| {dtype} | {cm} MiB | {speed(rs, r['raw']):,.0f} | "
                f"{speed_range(rs, r['raw'])} | "
                f"{cpu_per_gib(rs, r['raw']):.2f} | {100 * r['stored'] / r['raw']:.2f} | "
                f"{r['objects']} | "
                f"{peak(rs):.0f} |"
            )
    g = sw["grown_dtype"]
    lines += [
        "",
        f"Vocabulary growth {VOCAB} -> {VOCAB_GROWN} rows in `model.embed_tokens.weight` and "
        "`lm_head.weight` "
        f"({g}); bytes newly stored when the grown model is ingested on top of the original "
        f"(the appended rows themselves are {human((VOCAB_GROWN - VOCAB) * _row_bytes(sw, g))} "
        "per tensor):",
        "",
        "| chunk | embed_tokens new raw / stored | lm_head new raw / stored | whole file new "
        "stored | new objects |",
        "|---:|---:|---:|---:|---:|",
    ]
    for cm, rs in sw[g].items():
        gr = rs[0]["grown"]
        e = gr["tensors"].get(GROWN_TENSORS[0], {})
        h = gr["tensors"].get(GROWN_TENSORS[1], {})
        lines.append(
            f"| {cm} MiB | {human(e.get('new_raw', 0))} / {human(e.get('new_stored', 0))} | "
            f"{human(h.get('new_raw', 0))} / {human(h.get('new_stored', 0))} | "
            f"{human(gr['new_stored'])} | "
            f"{gr['new_objects']} |"
        )
    return "\n".join(lines)


def codec_table(cd: dict[str, Any]) -> str:
    lines = [
        "| dtype | exponent plane: zstd setting | ratio | MB/s of plane (1 thread) |",
        "|---|---|---:|---:|",
    ]
    for dtype, r in cd.items():
        for row in r["plane"]:
            lines.append(
                f"| {dtype} | {row['setting']} | {row['ratio']:.3f} | {row['mbps']:,.0f} |"
            )
    lines += [
        "",
        "| dtype | byte-group chunk ratio | encode MB/s | decode MB/s | plain zstd -1 ratio | "
        "plain zstd -1 MB/s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for dtype, r in cd.items():
        c = r["chunk"]
        lines.append(
            f"| {dtype} | {c['bytegroup_ratio']:.3f} | {c['bytegroup_encode_mbps']:,.0f} | "
            f"{c['bytegroup_decode_mbps']:,.0f} | {c['zstd1_ratio']:.3f} | {c['zstd1_mbps']:,.0f} |"
        )
    return "\n".join(lines)


def _row_bytes(sw: dict[str, Any], g: str) -> int:
    first = next(iter(sw[g].values()))[0]
    t = first["grown"]["tensors"].get(GROWN_TENSORS[0])
    return t["tensor_bytes"] // VOCAB_GROWN if t else 0


def targets_report(res: dict[str, Any], cold: bool) -> str:
    out = []
    modes = ["warm", "cold"] if cold else ["warm"]

    def line(ok: bool | None, text: str) -> None:
        out.append(f"- {'MET ' if ok else 'MISS' if ok is not None else 'n/a '} {text}")

    for dtype, r in res["checkpoints"].items():
        raw, runs = r["raw"], r["runs"]
        for m in modes:
            v = speed(runs[f"commit_{m}"], raw)
            line(
                v >= TARGETS["commit_mbps"],
                f"{dtype} first commit ({m}) {v:.0f} MB/s vs >= {TARGETS['commit_mbps']:.0f}",
            )
        for m in modes:
            v = speed(runs[f"restore_{m}"], raw)
            line(
                v >= TARGETS["restore_mbps"],
                f"{dtype} restore ({m}) {v:.0f} MB/s vs >= {TARGETS['restore_mbps']:.0f}",
            )
        pct = 100 * r["stored"] / raw
        t = TARGETS["stored_pct"][dtype]
        line(pct <= t, f"{dtype} stored {pct:.1f}% of raw vs <= {t:.0f}%")
        rss = max(peak(runs[f"commit_{m}"]) for m in modes)
        big = raw >= 4 * GiB * 0.95
        line(
            rss < TARGETS["rss_mib_4gib"] if big else None,
            f"{dtype} commit peak RSS {rss:.0f} MiB at {human(raw)} (target < "
            f"{TARGETS['rss_mib_4gib']:.0f} MiB at "
            f"4 GiB{'' if big else '; run with --size 4GiB to check'})",
        )
        rc = runs["recommit"]
        new_chunk = max(x["new_chunk_stored"] for x in rc)
        line(
            new_chunk == 0,
            f"{dtype} re-commit stored {new_chunk} new chunk bytes "
            f"({max(x['new_stored_size'] for x in rc)} B of commit metadata); must be 0 chunk "
            "bytes",
        )
        same = all(x["identical"] for m in modes for x in runs[f"restore_{m}"])
        line(same, f"{dtype} every restore byte-identical to the source")
    return "\n".join(out)


def main() -> None:
    if len(sys.argv) >= 2 and sys.argv[1] == "--child":
        child_main(sys.argv[2], sys.argv[3])
        return
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument(
        "--size", type=parse_size, default=GiB, help="bytes per checkpoint (default 1GiB)"
    )
    ap.add_argument(
        "--workdir", help="where to put checkpoints and repos (default: a temp dir under /tmp)"
    )
    ap.add_argument("--only", choices=("fp32", "bf16"), help="benchmark only this dtype")
    ap.add_argument("--chunk-sweep", action="store_true", help="also sweep chunk sizes 1/4/16 MiB")
    ap.add_argument(
        "--codec",
        action="store_true",
        help="also time zstd settings on the exponent plane (1 thread)",
    )
    ap.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="runs of every measurement; tables show the median (default 3)",
    )
    ap.add_argument("--json", help="also write every raw figure to this JSON file")
    ap.add_argument("--keep", action="store_true", help="do not delete what the run created")
    args = ap.parse_args()
    if args.repeat < 1:
        ap.error("--repeat must be >= 1")

    if args.workdir:
        work = Path(args.workdir).absolute()
        work.mkdir(parents=True, exist_ok=True)
    else:
        work = Path(tempfile.mkdtemp(prefix="wvc-bench-", dir="/tmp"))
    dtypes = [args.only] if args.only else ["fp32", "bf16"]
    need = args.size * 4.2 + (
        args.size if args.chunk_sweep else 0
    )  # ckpt + repo + restore + baseline copies
    free = shutil.disk_usage(work).free
    t_start = time.perf_counter()
    try:
        b = Bench(args, work)
        m = b.results["machine"]
        print(
            f"wvc core benchmark  {m['date']}\n"
            f"machine: {m.get('cpu')} x{m['nproc']}, {m.get('ram_gib')} GiB RAM, Python "
            f"{m['python']}, "
            f"{m.get('zstd')}\nwvc: {m.get('wvc_git', 'unknown')}\n"
            f"workdir: {work} ({human(free)} free, about {human(need)} needed at a time)"
        )
        busy0, t0 = _cpu_busy(), time.perf_counter()
        time.sleep(2)
        idle_load = (_cpu_busy() - busy0) / (time.perf_counter() - t0)
        b.results["load_before_start"] = idle_load
        print(f"other load before start: {idle_load:.2f} of {m['nproc']} cores busy (2 s sample)")
        if free < need:
            print(
                f"WARNING: disk space is short: {human(free)} free, about {human(need)} needed",
                flush=True,
            )
        print(
            "page cache: drop_caches "
            f"{'works' if b.can_drop else 'NOT PERMITTED (' + b.drop_note + ')'}; "
            + (
                "'warm' = input already in the page cache, 'cold' = sync + drop_caches just "
                "before the child"
                if b.can_drop
                else "every figure is with a WARM page cache (files just written)"
            ),
            flush=True,
        )
        for dtype in dtypes:
            b.results["checkpoints"][dtype] = b.bench_checkpoint(dtype)
        if args.chunk_sweep:
            b.results["sweep"] = b.chunk_sweep(dtypes)
        if args.codec:
            print("\n== codec micro-benchmark (single thread, 4 MiB chunk, best of 5)", flush=True)
            b.results["codec"] = b.child("codec", dtypes=dtypes)
        b.results["total_seconds"] = time.perf_counter() - t_start
        print(report(b.results, b.can_drop, args))
        if args.json:
            Path(args.json).write_text(json.dumps(b.results, indent=1, default=str))
    except BaseException:
        log = work / "children.log"
        if log.exists():
            print(
                "--- last lines of children.log ---\n"
                + "\n".join(log.read_text().splitlines()[-30:]),
                file=sys.stderr,
            )
        raise
    finally:
        if not args.keep:
            if args.workdir:
                for name in ("fp32", "bf16", "children.log", "rss.txt"):
                    p = work / name
                    if p.is_dir():
                        shutil.rmtree(p, ignore_errors=True)
                    elif p.exists():
                        p.unlink()
            else:
                shutil.rmtree(work, ignore_errors=True)


def report(res: dict[str, Any], cold: bool, args: argparse.Namespace) -> str:
    m = res["machine"]
    out = [
        "\n## Results\n",
        f"{m.get('cpu')} x{m['nproc']}, {m.get('ram_gib')} GiB RAM, Python {m['python']}, wvc "
        f"{m.get('wvc_git')}, "
        f"{m['date']}. Checkpoint size {human(args.size)} per dtype; median of {args.repeat} "
        "run(s); "
        "MB/s = 10^6 checkpoint bytes per second; every method fsyncs its output; page cache: "
        + (
            "warm and cold (drop_caches works)."
            if cold
            else "WARM only (drop_caches not permitted)."
        ),
        "",
        main_table(res, cold),
        "",
    ]
    for dtype, r in res["checkpoints"].items():
        cw = r["runs"]["commit_warm"]
        out.append(
            f"- {dtype}: {r['tensors']} tensors ({r['layers']} layers); chunks stored "
            f"{r['stored']:,} B "
            f"(+{r['stored_all'] - r['stored']:,} B manifest/tree/commit objects) for "
            f"{r['raw']:,} B raw; "
            f"du of .wvc/objects {r['du_objects']:,} B; {r['objects']} objects. Commit child "
            "wall incl. "
            f"interpreter start-up {median([x['wall'] for x in cw]):.2f}s vs "
            f"{median([x['seconds'] for x in cw]):.2f}s "
            f"timed around `repo.commit`."
        )
    out += ["", "### Spread, CPU cost and interference\n", detail_table(res, cold)]
    if "sweep" in res:
        out += ["", "## Chunk-size sweep\n", sweep_table(res["sweep"])]
    if "codec" in res:
        cd = {k: v for k, v in res["codec"].items() if k in ("fp32", "bf16")}
        out += ["", "## Codec micro-benchmark\n", codec_table(cd)]
    loads = [
        x["other_cores"]
        for r in res["checkpoints"].values()
        for runs in r["runs"].values()
        for x in runs
    ]
    if loads:
        mid = median(loads)
        warn = " -- WARNING: the machine was not idle; figures are depressed and noisy."
        out += [
            "",
            f"Other load on the machine during the measurements: median {mid:.2f}, max "
            f"{max(loads):.2f} of {m['nproc']} cores" + (warn if mid > 0.25 else "."),
        ]
    out += [
        "",
        "## Targets\n",
        targets_report(res, cold),
        "",
        f"total benchmark time {res['total_seconds']:.0f}s",
    ]
    return "\n".join(out)


if __name__ == "__main__":
    main()
