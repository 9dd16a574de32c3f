#!/usr/bin/env python3
"""Core wvc benchmark: commit / re-commit / restore throughput, storage and peak memory.

Usage (from the repository root, with wvc installed, e.g. in its venv)::

    python bench/bench_core.py                       # ~1 GiB fp32 + ~1 GiB bf16
    python bench/bench_core.py --compare-with bada42a  # + an older wvc, interleaved
    python bench/bench_core.py --size 4GiB --only bf16 --repeat 1
    python bench/bench_core.py --sweep-only          # 1/4/16 MiB chunk sweep only

For each checkpoint it measures, side by side and in one run:

* wvc the way users run it: the ``wvc`` command (``wvc commit DIR -q`` in a
  fresh repository made with ``wvc init``, then ``wvc commit DIR -q`` again for
  the unchanged re-commit, ``wvc restore HEAD --to OUT -q``), timed as the
  whole process (interpreter start-up included), with the allocator tuning
  that only the CLI process applies;
* wvc as a library: ``Repository.commit`` / ``Repository.restore`` in a child
  Python process, timed around the call, without allocator tuning;
* optionally an older wvc (``--compare-with`` a checkout or a git revision),
  both ways, run with ``PYTHONPATH`` pointing at it and interleaved with the
  new code; the old CLI runs as ``python -m wvc``;
* baselines: ``shutil.copyfile`` + fsync, and the ``zstd`` CLI at ``-1``
  (single-threaded and ``-T0``) with ``zstd -d`` for the read side.

Every restore is checked byte-identical outside the timed part; stored bytes
come from ``Repository.stats()`` (run in a separate, untimed child).

Every measured operation runs in its own child process (this script re-invoked
with ``--child``, the ``wvc`` command, or the ``zstd`` CLI). Its peak RSS is the
child's own maximum resident set, read with ``/usr/bin/time -f %M`` when
present, else from the ``ru_maxrss`` that ``os.wait4`` returns for that one pid
(on Linux that figure is never below the parent's RSS at spawn, because exec
folds the old address space's high-water mark into it; the parent never
imports numpy or wvc so it stays ~25 MiB). Python children of this script also
report their own ``VmHWM`` as a cross-check. Outputs are fsynced in every
method, so "write" figures include getting the bytes to disk.

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
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    MB,
    REPO_ROOT,
    VOCAB,
    Add,
    BenchBase,
    GiB,
    MiB,
    child_env,
    child_restore,
    chunk_stats,
    dir_bytes,
    dirs_identical,
    drop_caches,
    files_identical,
    find_wvc_command,
    fsync_path,
    human,
    import_check,
    machine_info,
    machine_line,
    make_workdir,
    median,
    model_shapes,
    parse_size,
    run_if_child,
    run_measured,
    run_script_child,
    run_text,
    source_changed,
    source_hash,
    timed,
    timed_commit,
    workdir_session,
)

VOCAB_GROWN = 32064
TARGETS: dict[str, float] = {"commit_mbps": 300.0, "restore_mbps": 500.0, "rss_mib_4gib": 400.0}
TARGET_STORED_PCT: dict[str, float] = {"bf16": 70.0, "fp32": 85.0}
SWEEP_CHUNKS_MIB = (1, 4, 16)


# ----------------------------------------------------------------------------------------------
# Checkpoint generation (child side)
# ----------------------------------------------------------------------------------------------


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


def child_commit(a: dict[str, Any]) -> dict[str, Any]:
    return timed_commit(a, a["ckpt"])[1]


def child_stats(a: dict[str, Any]) -> dict[str, Any]:
    """Untimed: what the repository holds, and what its HEAD commit says it added."""
    import wvc

    repo = wvc.Repository.open(a["repo"])
    stats = chunk_stats(repo)
    head = repo.stats("HEAD").commits[0]  # newest first
    repo.close()
    return {
        "stats": stats,
        "new_stored_size": head.new_stored_size,
        "new_objects": head.new_objects,
        "wvc_file": wvc.__file__,
    }


def child_copy(a: dict[str, Any]) -> dict[str, Any]:
    def op() -> None:
        shutil.copyfile(a["src"], a["dst"])
        fsync_path(a["dst"])

    _, t = timed(op)
    return t


def child_sweep(a: dict[str, Any]) -> dict[str, Any]:
    """Ingest one file at one chunk size into a fresh object store, then maybe a grown variant.

    With ``tuned`` the child first applies the allocator tuning the ``wvc`` CLI applies.
    """
    if a.get("tuned"):
        from wvc._malloc import tune_allocator

        if not tune_allocator():
            raise RuntimeError("allocator tuning does not apply on this platform")
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

            res, t = timed(op)
            return res, t, src.size
        finally:
            src.close()

    res, t, size = run(a["file"])
    new = {p.id: p for p in res.puts if p.new}
    out: dict[str, Any] = {
        **t,
        "chunk_size": chunk,
        "tuned": bool(a.get("tuned")),
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
    "stats": child_stats,
    "restore": child_restore,
    "copy": child_copy,
    "sweep": child_sweep,
    "codec": child_codec,
}


# ----------------------------------------------------------------------------------------------
# Parent side: process control, cache control, measurement plumbing
# ----------------------------------------------------------------------------------------------


def run_child(
    op: str, args: dict[str, Any], log: Path, env: dict[str, str] | None = None
) -> dict[str, Any]:
    res = run_script_child(__file__, op, args, log, env=env)
    hwm = res.get("vm_hwm_kib")
    res["hwm_mib"] = hwm / 1024 if hwm is not None else None
    return res


def du_bytes(d: Path) -> int:
    """Allocated bytes (st_blocks), like ``du -s``."""
    return sum(p.stat().st_blocks * 512 for p in d.rglob("*") if p.is_file())


# ----------------------------------------------------------------------------------------------
# Benchmark driver
# ----------------------------------------------------------------------------------------------


@dataclass
class Variant:
    """One way of running wvc: which code (``env``'s PYTHONPATH) and which entry point."""

    key: str  # "cli", "api", "old_cli", "old_api"
    label: str
    kind: str  # "cli": the wvc command as a whole process; "api": Repository calls in a child
    env: dict[str, str]
    code_root: Path  # the directory whose wvc/ package must be the one imported
    old: bool = False
    prefix: list[str] = field(default_factory=list)  # command prefix for kind "cli"
    wvc_file: str = ""


def script_interpreter(script: str) -> str:
    """The interpreter a console-script runs with (its #! line), else this one."""
    try:
        with open(script, "rb") as f:
            first = f.readline().decode(errors="replace").strip()
    except OSError:
        return sys.executable
    if first.startswith("#!"):
        parts = first[2:].split()
        if parts and os.access(parts[0], os.X_OK) and not parts[0].endswith("/env"):
            return parts[0]
    return sys.executable


class Bench(BenchBase):
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        super().__init__(args, work)  # self.worktree: made by --compare-with REV
        self.env = child_env(work / "pycache")
        self.can_drop, self.drop_note = drop_caches()
        self.results = {
            "machine": machine_info(),
            "drop_caches": self.drop_note,
            "size_arg": args.size,
            "repeat": args.repeat,
            "checkpoints": {},
        }
        self.variants: list[Variant] = []

    def setup_variants(self) -> None:
        """Decide which wvc runs are measured and check each imports the intended code."""
        new_root = REPO_ROOT
        wvc_cmd = find_wvc_command(self.args.wvc)
        self.variants = [
            Variant("cli", "wvc (CLI)", "cli", self.env, new_root, prefix=[wvc_cmd]),
            Variant("api", "wvc API (no allocator tuning)", "api", self.env, new_root),
        ]
        if self.args.compare_with:
            old_root, rev = self.resolve_old(self.args.compare_with)
            old_env = child_env(self.work / "pycache", str(old_root))
            self.results["old"] = {"path": str(old_root), "rev": rev}
            self.variants += [
                Variant(
                    "old_cli",
                    f"old wvc {rev} (python -m wvc)",
                    "cli",
                    old_env,
                    old_root,
                    old=True,
                    prefix=[sys.executable, "-m", "wvc"],
                ),
                Variant("old_api", f"old wvc {rev} API", "api", old_env, old_root, old=True),
            ]
        for v in self.variants:
            python = script_interpreter(v.prefix[0]) if v.kind == "cli" else sys.executable
            out, want = import_check(python, v.code_root, v.env, self.work)
            v.wvc_file = out.stdout.strip()
            ok = out.returncode == 0 and Path(v.wvc_file).resolve() == want
            self.say(
                f"{v.label}: {' '.join(v.prefix) + ' ' if v.prefix else ''}"
                f"{'PYTHONPATH=' + v.env['PYTHONPATH'] + ' ' if v.old else ''}"
                f"imports {v.wvc_file or out.stderr.strip()[-200:]}"
                + ("" if ok else f"  -- expected {want}")
            )
            if not ok and v.old:
                raise SystemExit(f"{v.label} does not import the code under {v.code_root}")
            if v.kind == "cli":
                subprocess.run(
                    [*v.prefix, "--version"],
                    env=v.env,
                    cwd=self.work,
                    check=True,
                    capture_output=True,
                )
        self.results["wvc_source_hash"] = source_hash(new_root / "wvc")
        self.say(f"wvc/ source digest at start: {self.results['wvc_source_hash']}")
        self.results["variants"] = {
            v.key: {"label": v.label, "kind": v.kind, "wvc_file": v.wvc_file, "cmd": v.prefix}
            for v in self.variants
        }

    def resolve_old(self, spec: str) -> tuple[Path, str]:
        """``--compare-with``: a directory holding an older wvc checkout, or a git revision."""
        p = Path(spec)
        if p.is_dir():
            root = p.resolve()
        else:
            root = self.add_worktree(
                spec, "wvc-old-", f"--compare-with {spec}: not a directory or git revision"
            )
        if not (root / "wvc" / "__init__.py").is_file():
            raise SystemExit(f"--compare-with {spec}: no wvc/__init__.py under {root}")
        rev = run_text(["git", "rev-parse", "--short", "HEAD"], cwd=root) or root.name
        return root, rev

    def child(self, op: str, env: dict[str, str] | None = None, **kw: Any) -> dict[str, Any]:
        return run_child(op, kw, self.log, env=env if env is not None else self.env)

    def prepare(self, cold: bool) -> None:
        """Flush dirty pages; for cold measurements also drop the page cache."""
        if cold:
            drop_caches()
        else:
            os.sync()

    def modes(self) -> list[str]:
        return ["warm", "cold"] if self.can_drop else ["warm"]

    # --- wvc operations, through the CLI or the API ----------------------------

    def _proc(self, cmd: list[str], v: Variant, cwd: Path) -> dict[str, Any]:
        """A whole wvc process, timed from spawn to exit (start-up and imports included)."""
        m = run_measured(cmd, self.log, env=v.env, cwd=cwd)
        m.pop("stdout")
        m.update(
            seconds=m["wall"],
            user=m["proc_user"],
            sys=m["proc_sys"],
            minflt=m["proc_minflt"],
            rss_mib=m["rss_kib"] / 1024,
            hwm_mib=None,
        )
        return m

    def wvc_commit(
        self, v: Variant, repo: Path, ckpt: Path, before: dict[str, int] | None
    ) -> dict[str, Any]:
        """First commit into a fresh repository (``before`` None) or a re-commit."""
        if v.kind == "api":
            return self.child(
                "commit", env=v.env, repo=str(repo), ckpt=str(ckpt), init=before is None
            )
        if before is None:
            subprocess.run(
                [*v.prefix, "init", str(repo)],
                env=v.env,
                cwd=self.work,
                check=True,
                capture_output=True,
            )
            before = {"chunk_stored_size": 0, "stored_size": 0}
        c = self._proc([*v.prefix, "commit", str(ckpt), "-q"], v, repo)
        st = self.child("stats", env=v.env, repo=str(repo))  # untimed
        c.update(
            new_stored_size=st["new_stored_size"],
            new_objects=st["new_objects"],
            new_chunk_stored=st["stats"]["chunk_stored_size"] - before["chunk_stored_size"],
            new_all_stored=st["stats"]["stored_size"] - before["stored_size"],
            stats=st["stats"],
            wvc_file=st["wvc_file"],
        )
        return c

    def wvc_restore(self, v: Variant, repo: Path, out: Path) -> dict[str, Any]:
        if v.kind == "api":
            return self.child("restore", env=v.env, repo=str(repo), out=str(out))
        return self._proc([*v.prefix, "restore", "HEAD", "--to", str(out), "-q"], v, repo)

    # --- one checkpoint --------------------------------------------------------

    def generate(self, dtype: str) -> tuple[dict[str, Any], Path, int]:
        ckpt = self.work / dtype / "ckpt"
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
        return g, ckpt, raw

    def bench_checkpoint(self, dtype: str) -> dict[str, Any]:
        w = self.work / dtype
        g, ckpt, raw = self.generate(dtype)
        model = ckpt / "model.safetensors"
        r: dict[str, Any] = {
            "raw": raw,
            "model_bytes": g["bytes"],
            "tensors": g["tensors"],
            "layers": g["layers"],
            "wvc": {},
        }
        runs: dict[str, list[dict[str, Any]]] = {}
        r["runs"] = runs

        def rate(nbytes: int, secs: float) -> str:
            return f"{nbytes / secs / MB:.0f} MB/s"

        for rep in range(self.args.repeat):
            tag = f"[{rep + 1}/{self.args.repeat}]"
            # The wvc variants take turns going first, so slow drift hits them all alike.
            k = rep % len(self.variants)
            for v in self.variants[k:] + self.variants[:k]:
                self.attempt(
                    f"{tag} {v.label}",
                    runs,
                    lambda add, v=v, tag=tag: self.bench_wvc(v, w, ckpt, raw, r, add, tag),
                )

            # Baseline 1: copyfile + fsync, there and back.
            for mode in reversed(self.modes()):

                def copy(add: Add, mode: str = mode, tag: str = tag) -> None:
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

                self.attempt(f"{tag} copy ({mode})", runs, copy)

            # Baseline 2: zstd CLI.
            if shutil.which("zstd"):
                for label, extra in ZSTD_VARIANTS:
                    for mode in reversed(self.modes()):

                        def zstd(
                            add: Add,
                            label: str = label,
                            extra: list[str] = extra,
                            mode: str = mode,
                            tag: str = tag,
                        ) -> None:
                            zw, zr = self.zstd(model, w, mode, extra)
                            add(f"{label}_write_{mode}", zw)
                            add(f"{label}_read_{mode}", zr)
                            self.say(
                                f"   {tag} {label} ({mode}): write "
                                f"{rate(g['bytes'], zw['seconds'])}, "
                                f"-d {rate(g['bytes'], zr['seconds'])}, "
                                f"{100 * zw['size'] / g['bytes']:.1f}% of raw"
                            )

                        self.attempt(f"{tag} {label} ({mode})", runs, zstd)
        return r

    def bench_wvc(
        self,
        v: Variant,
        w: Path,
        ckpt: Path,
        raw: int,
        r: dict[str, Any],
        add: Add,
        tag: str,
    ) -> None:
        """First commit (cold, warm), re-commit, restore (warm, cold) with one wvc variant."""
        want = str((v.code_root / "wvc" / "__init__.py").resolve())

        def check(x: dict[str, Any]) -> None:
            if x.get("wvc_file") and str(Path(x["wvc_file"]).resolve()) != want:
                raise SystemExit(f"{v.label}: a child imported {x['wvc_file']}, not {want}")

        def rate(secs: float) -> str:
            return f"{raw / secs / MB:.0f} MB/s"

        # First commit: cold into a fresh repo (discarded), then warm (repo kept).
        c: dict[str, Any] = {}
        for mode in reversed(self.modes()):  # warm last: its repository is kept
            repo = w / f"repo-{v.key}-{mode}"
            self.prepare(mode == "cold")
            c = add(f"{v.key}:commit_{mode}", self.wvc_commit(v, repo, ckpt, None))
            check(c)
            self.say(
                f"   {tag} {v.label} commit ({mode}): {c['seconds']:.2f}s {rate(c['seconds'])}, "
                f"CPU {c['user']:.1f}u+{c['sys']:.1f}s, {c['minflt'] / 1000:.0f}k minor faults, "
                f"peak RSS {c['rss_mib']:.0f} MiB, other load {c['other_cores']:.2f} cores"
            )
            if mode == "cold":
                shutil.rmtree(repo)
        repo = w / f"repo-{v.key}-warm"
        st = c["stats"]
        r["wvc"][v.key] = {
            "stored": st["chunk_stored_size"],
            "stored_all": st["stored_size"],
            "unique": st["unique_size"],
            "objects": st["objects"],
            "du_objects": du_bytes(repo / ".wvc" / "objects"),
            "reported_new": c["new_stored_size"],
            "actual_new": c["new_all_stored"],
        }

        # Re-commit of the unchanged checkpoint (warm: it was just read).
        self.prepare(False)
        rc = add(f"{v.key}:recommit", self.wvc_commit(v, repo, ckpt, st))
        check(rc)
        self.say(
            f"   {tag} {v.label} re-commit: {rc['seconds']:.2f}s {rate(rc['seconds'])}, "
            f"new chunk bytes {rc['new_chunk_stored']}, new stored {rc['new_all_stored']} B "
            f"(reported {rc['new_stored_size']} B in {rc['new_objects']} object(s)), "
            f"peak RSS {rc['rss_mib']:.0f} MiB"
        )

        # Restore: warm (objects just written, still cached) then cold.
        for mode in self.modes():
            out = w / f"restored-{v.key}-{mode}"
            self.prepare(mode == "cold")
            rs = self.wvc_restore(v, repo, out)
            check(rs)
            rs["identical"] = dirs_identical(ckpt, out)
            add(f"{v.key}:restore_{mode}", rs)
            self.say(
                f"   {tag} {v.label} restore ({mode}): {rs['seconds']:.2f}s {rate(rs['seconds'])}, "
                f"CPU {rs['user']:.1f}u+{rs['sys']:.1f}s, {rs['minflt'] / 1000:.0f}k minor "
                f"faults, peak RSS {rs['rss_mib']:.0f} MiB, byte-identical: {rs['identical']}, "
                f"other load {rs['other_cores']:.2f} cores"
            )
            shutil.rmtree(out)
        shutil.rmtree(repo)

        # Fixed cost of a wvc process (interpreter, imports): `wvc --version`.
        if v.kind == "cli":
            self.prepare(False)
            add(f"{v.key}:startup", self._proc([*v.prefix, "--version"], v, self.work))

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
            rows: dict[str, dict[int, list[dict[str, Any]]]] = {a: {} for a in SWEEP_ALLOCATORS}
            for rep in range(self.args.repeat):
                for cm, alloc in (
                    (cm, alloc) for cm in SWEEP_CHUNKS_MIB for alloc in SWEEP_ALLOCATORS
                ):
                    store = self.work / dtype / f"sweep-{cm}"
                    self.prepare(False)
                    res = self.child(
                        "sweep",
                        store=str(store),
                        file=str(model),
                        chunk_size=cm * MiB,
                        tuned=alloc == "tuned",
                        grown=str(gw / "model.safetensors")
                        if dtype == grown_dtype and alloc == SWEEP_ALLOCATORS[0]
                        else None,
                    )
                    shutil.rmtree(store)
                    rows[alloc].setdefault(cm, []).append(res)
                    msg = (
                        f"   [{rep + 1}/{self.args.repeat}] {dtype} {cm:>2} MiB {alloc:>7} malloc: "
                        f"{res['raw'] / res['seconds'] / MB:.0f} MB/s, CPU "
                        f"{res['user']:.1f}u+{res['sys']:.1f}s, "
                        f"{res['minflt'] / 1000:.0f}k faults, "
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


ZSTD_VARIANTS: tuple[tuple[str, list[str]], ...] = (("zstd -1", []), ("zstd -1 -T0", ["-T0"]))
# Sweep children run ingest as a library (glibc defaults) and with the CLI's allocator tuning.
SWEEP_ALLOCATORS = ("default", "tuned")


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
    return max(float(x["rss_mib"]) for x in runs)


def cpu_per_gib(runs: list[dict[str, Any]], nbytes: int) -> float:
    """Median CPU seconds (user + sys, all threads) per GiB of checkpoint."""
    vals = []
    for x in runs:
        cpu = x["user"] + x["sys"] if "user" in x else x["cpu"]
        vals.append(cpu * GiB / nbytes)
    return median(vals)


def kfaults_per_gib(runs: list[dict[str, Any]], nbytes: int) -> float:
    """Median minor page faults per GiB of checkpoint, in thousands."""
    vals = [x.get("minflt", x.get("proc_minflt", 0)) * GiB / nbytes / 1000 for x in runs]
    return median(vals)


NEW_VARIANTS = ("cli", "api")
OLD_VARIANTS = ("old_cli", "old_api")


def _label(res: dict[str, Any], key: str) -> str:
    return str(res["variants"][key]["label"])


def _methods(
    res: dict[str, Any], r: dict[str, Any], keys: tuple[str, ...] = NEW_VARIANTS
) -> list[tuple[str, str, str, int, float, str | None]]:
    """(label, write key, read key, byte count, stored %, wvc variant) for every method."""
    runs = r["runs"]
    out: list[tuple[str, str, str, int, float, str | None]] = []
    for k in keys:
        if f"{k}:commit_warm" in runs:
            pct = 100 * r["wvc"][k]["stored"] / r["raw"]
            out.append((_label(res, k), f"{k}:commit", f"{k}:restore", r["raw"], pct, k))
    out.append(
        (
            "copyfile + fsync (there / back)",
            "copy_write",
            "copy_read",
            r["model_bytes"],
            100.0,
            None,
        )
    )
    for label, _ in ZSTD_VARIANTS:
        if f"{label}_write_warm" in runs:
            nb = r["model_bytes"]
            pct = 100 * runs[f"{label}_write_warm"][0]["size"] / nb
            out.append((f"`{label}` / `zstd -d`", f"{label}_write", f"{label}_read", nb, pct, None))
    return out


def _recommit_cell(r: dict[str, Any], key: str) -> str:
    rc = r["runs"][f"{key}:recommit"]
    new_chunk = max(x["new_chunk_stored"] for x in rc)
    new_all = max(x["new_all_stored"] for x in rc)
    return f"+{100 * new_chunk / r['raw']:.2f} ({new_chunk} chunk B, {new_all} B total new)"


def main_table(res: dict[str, Any], cold: bool) -> str:
    modes = ["warm", "cold"] if cold else ["warm"]
    hdr = ["checkpoint", "method"]
    hdr += [f"MB/s write ({m})" for m in modes] + [f"MB/s read/restore ({m})" for m in modes]
    hdr += ["stored % of raw", "peak RSS MiB write", "peak RSS MiB read"]
    lines = ["| " + " | ".join(hdr) + " |", "|---|---|" + "---:|" * (len(hdr) - 2)]
    for dtype, r in res["checkpoints"].items():
        runs = r["runs"]
        name = f"{dtype} {human(r['raw'])}"
        for label, wk, rk, nbytes, pct, key in _methods(res, r):
            cells = [name, label + (" commit / restore" if key else "")]
            cells += [f"{speed(runs[f'{wk}_{m}'], nbytes):,.0f}" for m in modes]
            cells += [f"{speed(runs[f'{rk}_{m}'], nbytes):,.0f}" for m in modes]
            cells.append(f"{pct:.1f}")
            cells.append(f"{max(peak(runs[f'{wk}_{m}']) for m in modes):.0f}")
            cells.append(f"{max(peak(runs[f'{rk}_{m}']) for m in modes):.0f}")
            lines.append("| " + " | ".join(cells) + " |")
            if key:
                rc = runs[f"{key}:recommit"]
                cells = [name, f"{label} re-commit (unchanged)", f"{speed(rc, r['raw']):,.0f}"]
                cells += ["-"] * (2 * len(modes) - 1)
                cells += [_recommit_cell(r, key), f"{peak(rc):.0f}", "-"]
                lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def detail_table(res: dict[str, Any], cold: bool) -> str:
    """Spread over repeats, CPU cost, page faults, and how busy the rest of the machine was."""
    modes = ["warm", "cold"] if cold else ["warm"]
    lines = [
        "| checkpoint | method | cache | MB/s write min-max | MB/s read min-max | CPU s/GiB "
        "write | CPU s/GiB read | k minor faults/GiB write | k minor faults/GiB read | "
        "other load (cores) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    keys = NEW_VARIANTS + OLD_VARIANTS
    for dtype, r in res["checkpoints"].items():
        runs = r["runs"]
        for label, wk, rk, nbytes, _, _ in _methods(res, r, keys):
            for m in modes:
                wr, rr = runs[f"{wk}_{m}"], runs[f"{rk}_{m}"]
                load = max(x["other_cores"] for x in wr + rr)
                lines.append(
                    f"| {dtype} | {label} | {m} | {speed_range(wr, nbytes)} | "
                    f"{speed_range(rr, nbytes)} | "
                    f"{cpu_per_gib(wr, nbytes):.2f} | {cpu_per_gib(rr, nbytes):.2f} | "
                    f"{kfaults_per_gib(wr, nbytes):.0f} | {kfaults_per_gib(rr, nbytes):.0f} | "
                    f"{load:.2f} |"
                )
        for k in keys:
            rc = runs.get(f"{k}:recommit")
            if rc:
                lines.append(
                    f"| {dtype} | {_label(res, k)} re-commit | warm | {speed_range(rc, r['raw'])} "
                    f"| - | {cpu_per_gib(rc, r['raw']):.2f} | - | "
                    f"{kfaults_per_gib(rc, r['raw']):.0f} | - | "
                    f"{max(x['other_cores'] for x in rc):.2f} |"
                )
    return "\n".join(lines)


def _vs(runs: dict[str, list[dict[str, Any]]], raw: int, key: str, base: str | None) -> str:
    """Median MB/s of ``key``; with ``base`` (the old variant), also the change against it."""
    new = speed(runs[key], raw)
    if base is None:
        return f"{new:,.0f}"
    old = speed(runs[base + key[key.index(":") :]], raw)
    return f"{new:,.0f} ({100 * (new / old - 1):+.0f} %)"


def before_after_table(res: dict[str, Any], cold: bool) -> str:
    """Old and new wvc, measured interleaved in this run: one row per code, per entry point."""
    modes = ["warm", "cold"] if cold else ["warm"]
    hdr = ["checkpoint", "entry point", "code"]
    hdr += [f"commit MB/s ({m})" for m in modes] + [f"restore MB/s ({m})" for m in modes]
    hdr += [
        "re-commit MB/s",
        "stored % of raw",
        "CPU s/GiB commit / restore (warm)",
        "k minor faults/GiB commit / restore (warm)",
        "peak RSS MiB commit / restore",
        "first commit: new bytes reported / actually added",
    ]
    lines = ["| " + " | ".join(hdr) + " |", "|---|---|---|" + "---:|" * (len(hdr) - 3)]
    old_rev = res["old"]["rev"]
    new_rev = (res["machine"].get("wvc_git") or "new").split(" ")[0]
    for dtype, r in res["checkpoints"].items():
        runs, raw = r["runs"], r["raw"]
        for entry, old_k, new_k in (
            ("CLI", "old_cli", "cli"),
            ("API (no allocator tuning)", "old_api", "api"),
        ):
            for k, code in ((old_k, f"{old_rev} (old)"), (new_k, f"{new_rev} (new)")):
                base = None if k == old_k else old_k

                w = r["wvc"][k]
                cells = [dtype, entry, code]
                cells += [_vs(runs, raw, f"{k}:commit_{m}", base) for m in modes]
                cells += [_vs(runs, raw, f"{k}:restore_{m}", base) for m in modes]
                cells.append(_vs(runs, raw, f"{k}:recommit", base))
                cells.append(f"{100 * w['stored'] / raw:.2f}")
                cells.append(
                    f"{cpu_per_gib(runs[f'{k}:commit_warm'], raw):.2f} / "
                    f"{cpu_per_gib(runs[f'{k}:restore_warm'], raw):.2f}"
                )
                cells.append(
                    f"{kfaults_per_gib(runs[f'{k}:commit_warm'], raw):.0f} / "
                    f"{kfaults_per_gib(runs[f'{k}:restore_warm'], raw):.0f}"
                )
                cells.append(
                    f"{max(peak(runs[f'{k}:commit_{m}']) for m in modes):.0f} / "
                    f"{max(peak(runs[f'{k}:restore_{m}']) for m in modes):.0f}"
                )
                cells.append(f"{w['reported_new']:,} / {w['actual_new']:,}")
                lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def startup_note(res: dict[str, Any]) -> str:
    """Fixed cost of a wvc process, included in every CLI figure."""
    parts = []
    for k in ("cli", "old_cli"):
        runs = [x for r in res["checkpoints"].values() for x in r["runs"].get(f"{k}:startup", [])]
        if runs:
            cmd = " ".join(
                Path(c).name if i == 0 else c for i, c in enumerate(res["variants"][k]["cmd"])
            )
            parts.append(
                f"`{cmd} --version` (start-up and imports, {_label(res, k)}): median "
                f"{median([x['seconds'] for x in runs]):.2f}s, peak RSS "
                f"{median([x['rss_mib'] for x in runs]):.0f} MiB"
            )
    return "; ".join(parts)


def sweep_table(sw: dict[str, Any]) -> str:
    lines = [
        "| checkpoint | chunk | allocator | MB/s ingest (median) | MB/s min-max | CPU s/GiB | "
        "k minor faults/GiB | stored % of raw | objects | peak RSS MiB |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for dtype, by_alloc in sw.items():
        if dtype == "grown_dtype":
            continue
        for cm in SWEEP_CHUNKS_MIB:
            for alloc in SWEEP_ALLOCATORS:
                rs = by_alloc[alloc][cm]
                r = rs[0]
                lines.append(
                    f"| {dtype} | {cm} MiB | {alloc} | {speed(rs, r['raw']):,.0f} | "
                    f"{speed_range(rs, r['raw'])} | {cpu_per_gib(rs, r['raw']):.2f} | "
                    f"{kfaults_per_gib(rs, r['raw']):.0f} | "
                    f"{100 * r['stored'] / r['raw']:.2f} | {r['objects']} | {peak(rs):.0f} |"
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
    for cm, rs in sw[g][SWEEP_ALLOCATORS[0]].items():
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
    first = next(iter(sw[g][SWEEP_ALLOCATORS[0]].values()))[0]
    t = first["grown"]["tensors"].get(GROWN_TENSORS[0])
    return t["tensor_bytes"] // VOCAB_GROWN if t else 0


def targets_report(res: dict[str, Any], cold: bool) -> str:
    """Targets for the CLI (what users run); the API figures are listed after, for information."""
    out = []
    modes = ["warm", "cold"] if cold else ["warm"]

    def line(ok: bool | None, text: str) -> None:
        out.append(f"- {'MET ' if ok else 'MISS' if ok is not None else 'n/a '} {text}")

    for dtype, r in res["checkpoints"].items():
        raw, runs = r["raw"], r["runs"]
        for k in NEW_VARIANTS:
            who = _label(res, k)
            for op, target in (("commit", "commit_mbps"), ("restore", "restore_mbps")):
                for m in modes:
                    v = speed(runs[f"{k}:{op}_{m}"], raw)
                    line(
                        v >= TARGETS[target],
                        f"{dtype} {who} {'first commit' if op == 'commit' else op} ({m}) "
                        f"{v:.0f} MB/s vs >= {TARGETS[target]:.0f}",
                    )
            if k != "cli":
                continue
            pct = 100 * r["wvc"][k]["stored"] / raw
            t = TARGET_STORED_PCT[dtype]
            line(pct <= t, f"{dtype} stored {pct:.1f}% of raw vs <= {t:.0f}%")
            big = raw >= 4 * GiB * 0.95
            for op in ("commit", "restore"):
                rss = max(peak(runs[f"{k}:{op}_{m}"]) for m in modes)
                line(
                    rss < TARGETS["rss_mib_4gib"] if big else None,
                    f"{dtype} {who} {op} peak RSS {rss:.0f} MiB at {human(raw)} (target < "
                    f"{TARGETS['rss_mib_4gib']:.0f} MiB at "
                    f"4 GiB{'' if big else '; run with --size 4GiB to check'})",
                )
        for k in NEW_VARIANTS:
            rc = runs[f"{k}:recommit"]
            new_chunk = max(x["new_chunk_stored"] for x in rc)
            line(
                new_chunk == 0,
                f"{dtype} {_label(res, k)} re-commit stored {new_chunk} new chunk bytes "
                f"({max(x['new_all_stored'] for x in rc)} B of commit metadata); must be 0 "
                "chunk bytes",
            )
            w = r["wvc"][k]
            line(
                w["reported_new"] == w["actual_new"],
                f"{dtype} {_label(res, k)} first commit reports {w['reported_new']:,} new bytes; "
                f"{w['actual_new']:,} were added to the store",
            )
        same = all(
            x["identical"]
            for k in NEW_VARIANTS + OLD_VARIANTS
            for m in modes
            for x in runs.get(f"{k}:restore_{m}", [])
        )
        line(same, f"{dtype} every restore byte-identical to the source")
    return "\n".join(out)


def main() -> None:
    if run_if_child(CHILD_OPS, sys.argv):
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
        "--sweep-only",
        action="store_true",
        help="generate the checkpoints and run only the chunk sweep",
    )
    ap.add_argument(
        "--codec",
        action="store_true",
        help="also time zstd settings on the exponent plane (1 thread)",
    )
    ap.add_argument(
        "--compare-with",
        metavar="DIR|REV",
        help="also measure an older wvc, interleaved: a checkout directory (run with "
        "PYTHONPATH=DIR), or a git revision of this repository (checked out into a temporary "
        "worktree, removed at the end)",
    )
    ap.add_argument(
        "--wvc",
        metavar="PATH",
        help="the wvc command to measure (default: the one beside this Python, else PATH's)",
    )
    ap.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="runs of every measurement; tables show the median (default 3)",
    )
    ap.add_argument(
        "--max-other-load",
        type=float,
        default=0.25,
        help="redo a block of measurements when other work kept more than this many cores "
        "busy during one of them (default 0.25)",
    )
    ap.add_argument(
        "--retries",
        type=int,
        default=2,
        help="at most this many redos per block (default 2)",
    )
    ap.add_argument("--json", help="also write every raw figure to this JSON file")
    ap.add_argument("--keep", action="store_true", help="do not delete what the run created")
    args = ap.parse_args()
    if args.repeat < 1:
        ap.error("--repeat must be >= 1")
    if args.sweep_only:
        args.chunk_sweep = True

    work = make_workdir(args.workdir, "wvc-bench-")
    dtypes = [args.only] if args.only else ["fp32", "bf16"]
    need = args.size * 4.2 + (
        args.size if args.chunk_sweep else 0
    )  # ckpt + repo + restore + baseline copies
    free = shutil.disk_usage(work).free
    t_start = time.perf_counter()
    b = Bench(args, work)
    with workdir_session(b, args, ["fp32", "bf16", "children.log", "rss.txt", "pycache"]):
        m = b.results["machine"]
        print(
            f"wvc core benchmark  {m['date']}\n"
            f"machine: {machine_line(m)}, "
            f"{m.get('zstd')}\nwvc: {m.get('wvc_git', 'unknown')}\n"
            f"workdir: {work} ({human(free)} free, about {human(need)} needed at a time)"
        )
        malloc_env = {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")}
        if malloc_env:
            b.results["malloc_env"] = malloc_env
            print(f"NOTE: glibc malloc settings in the environment, passed on: {malloc_env}")
        if not args.sweep_only:
            b.setup_variants()
        b.load_before_start()
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
            if args.sweep_only:
                b.generate(dtype)
            else:
                b.results["checkpoints"][dtype] = b.bench_checkpoint(dtype)
        if args.chunk_sweep:
            b.results["sweep"] = b.chunk_sweep(dtypes)
        if args.codec:
            print("\n== codec micro-benchmark (single thread, 4 MiB chunk, best of 5)", flush=True)
            b.results["codec"] = b.child("codec", dtypes=dtypes)
        b.results["total_seconds"] = time.perf_counter() - t_start
        if "wvc_source_hash" in b.results:
            b.results["wvc_source_hash_end"] = source_hash(REPO_ROOT / "wvc")
        print(report(b.results, b.can_drop, args))
        if args.json:
            Path(args.json).write_text(json.dumps(b.results, indent=1, default=str))


def report(res: dict[str, Any], cold: bool, args: argparse.Namespace) -> str:
    m = res["machine"]
    old = res.get("old")
    out = [
        "\n## Results\n",
        f"{machine_line(m)}, wvc {m.get('wvc_git')}"
        + (f" (and old wvc {old['rev']} from {old['path']}, interleaved)" if old else "")
        + f", {m['date']}. Checkpoint size {human(args.size)} per dtype; median of "
        f"{args.repeat} run(s); MB/s = 10^6 checkpoint bytes per second; every method fsyncs "
        "its output; page cache: "
        + (
            "warm and cold (drop_caches works)."
            if cold
            else "WARM only (drop_caches not permitted)."
        ),
    ]
    if res["checkpoints"]:
        out += [
            "CLI rows: the whole `wvc` process, start-up included; API rows: time of "
            "`repo.commit` / `repo.restore` in a child Python, without the CLI's allocator tuning.",
            "",
            main_table(res, cold),
            "",
        ]
        for dtype, r in res["checkpoints"].items():
            w = r["wvc"]["cli"]
            cw = r["runs"]["api:commit_warm"]
            out.append(
                f"- {dtype}: {r['tensors']} tensors ({r['layers']} layers); chunks stored "
                f"{w['stored']:,} B (+{w['stored_all'] - w['stored']:,} B manifest/tree/commit "
                f"objects) for {r['raw']:,} B raw; du of .wvc/objects {w['du_objects']:,} B; "
                f"{w['objects']} objects. API commit child wall incl. interpreter start-up "
                f"{median([x['wall'] for x in cw]):.2f}s vs "
                f"{median([x['seconds'] for x in cw]):.2f}s timed around `repo.commit`."
            )
        note = startup_note(res)
        if note:
            out.append(f"- {note}.")
        out += ["", "### Spread, CPU cost and interference\n", detail_table(res, cold)]
        if old:
            out += [
                "",
                f"## Before / after: wvc {old['rev']} against "
                f"{(m.get('wvc_git') or 'new').split(' ')[0]}, same run\n",
                f"Old code run with PYTHONPATH={old['path']}; its CLI as `python -m wvc` (it has "
                "no allocator tuning). Medians; (+x %) is new against old.",
                "",
                before_after_table(res, cold),
            ]
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
    loads += [
        x["other_cores"]
        for dtype, by_alloc in res.get("sweep", {}).items()
        if dtype != "grown_dtype"
        for rows in by_alloc.values()
        for rs in rows.values()
        for x in rs
    ]
    if loads:
        mid = median(loads)
        warn = " -- WARNING: the machine was not idle; figures are depressed and noisy."
        out += [
            "",
            f"Other load on the machine during the measurements: median {mid:.2f}, max "
            f"{max(loads):.2f} of {m['nproc']} cores" + (warn if mid > 0.25 else "."),
        ]
    if res["checkpoints"]:
        out += ["", "## Targets\n", targets_report(res, cold)]
    changed = source_changed(res)
    if changed:
        out += ["", changed]
    out += ["", f"total benchmark time {res['total_seconds']:.0f}s"]
    return "\n".join(out)


if __name__ == "__main__":
    main()
