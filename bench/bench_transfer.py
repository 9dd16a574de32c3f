#!/usr/bin/env python3
"""Transfer benchmark: wvc push / clone to a directory and to S3 (moto) against fsspec copies.

Usage (from the repository root, with wvc, s3fs and moto[server] installed, e.g. in its venv)::

    python bench/bench_transfer.py                            # 1 GiB bf16, median of 3
    python bench/bench_transfer.py --dtype bf16 --dtype fp32  # both dtypes
    python bench/bench_transfer.py --size 64MiB --repeats 1   # quick check, ~2 min

One synthetic LLaMA-like checkpoint (``_common.model_shapes``; 2-D matrices
from N(0, 0.02), norms 1 + N(0, 0.02); bf16 by default, ``--dtype fp32`` too)
is written, untimed, as ``model.safetensors`` in two versions:

* ``A``: the model;
* ``B``: A with ``--changed`` (10 %) of its tensor bytes replaced by new
  values: whole tensors, picked in a seeded random order until the next one
  would pass the fraction (the rest bit-identical to A).

A is committed on ``main`` of a local repository; B on a branch ``next`` made
from it (``CommitResult.new_stored_size`` of both is recorded). Two targets:

* ``dir``: a directory remote on the same disk (``wvc.store.LocalStore``:
  every object written to a temporary file, fsynced, renamed);
* ``s3``: moto's S3 server (``moto.server.ThreadedMotoServer``) on 127.0.0.1
  and a free port, in a process of its own, reached through s3fs with dummy
  credentials in the environment. moto keeps objects in memory (values above
  ~5 MiB spill to temporary files); every measurement's keys are deleted
  right after it, and the server's CPU time and peak RSS are reported.

For each target, ``--repeats`` times (median), interleaved (the order of wvc
and the plain copy alternates between repeats), each operation in its own
child Python, timed around the call:

* **push**: ``repo.push(...)`` of ``main`` (A) to a new, empty remote
  (``add_remote`` untimed); **plain put**: the same ``model.safetensors``
  copied with fsspec, ``LocalFileSystem().put_file`` for ``dir`` (and then an
  ``fsync`` of the copy, timed separately: wvc fsyncs what it writes) or
  ``s3fs.S3FileSystem(...).put_file`` for ``s3``;
* **clone**: ``Repository.clone(url, path, options=...)`` from that remote
  (objects downloaded, verified, stored; no files checked out); **plain get**:
  ``get_file`` of the plain copy back to local disk (+ ``fsync``, separately);
* for ``s3`` also the same file as 4 MiB objects (wvc's chunk size), with
  fsspec's batched calls: one ``fs.pipe({key: bytes})`` up, one
  ``fs.cat(keys)`` down (written to a local file, + ``fsync``). moto handles
  one large (multipart) object far more slowly per byte than many small ones,
  so this is the fairer S3 baseline on this server.

The filesystem objects (and wvc's, created inside ``push`` / ``clone``) are
made inside the timed part; ``fsspec`` and ``s3fs`` are imported before it in
every child, so import time counts for neither side. MB/s = 10^6 logical
(checkpoint) bytes per second; "% of plain" compares with the plain copy in
the same direction to the same target.

Then, for each target and repeat: a new remote receives ``main`` (A), untimed,
and the push of ``next`` (B) is timed: **incremental push**, reported with the
bytes it moved (``PushResult.bytes``, and the growth of the remote measured by
listing it) against B's ``new_stored_size``; then a **no-op push** of ``next``
again, as an API call in a fresh child and as a whole ``wvc push -q`` process.

``--what-if all`` (the default; ``none``, or a comma-separated list of
variants) measures the same first push (and, for S3, the
clone) again, ``--repeats`` times, with parts of wvc patched at run time in
the child (``WHAT_IF``: no verification on push; one HEAD instead of HEAD +
LIST per existence check and no second check before the PUT; no check at
all; GET without s3fs's preceding HEAD), against the unpatched code in the
same rounds, with the S3 requests counted: what each change would be worth.
wvc/ itself is not changed.

``--breakdown`` (default on) pushes A and clones it once more per target
with wvc's steps wrapped by timers (``Remote.has_object`` / ``put_object`` /
``get_object``, ``LocalStore.get`` / ``put_parts``, ``ObjectStore.decode``,
``os.fsync``, every S3 request by operation), at ``--jobs`` threads and at 1
thread, to show where the time goes. Wrapped calls' times are summed over
threads (with more than one thread they add up to more than the wall time).

Blocks are measured again when other processes kept more than
``--max-other-load`` cores busy (the moto server's own CPU time is not counted
as other load), as in the other benchmarks. The parent process imports only
the standard library. ``--code REV_OR_DIR`` measures that wvc (a git
revision, checked out into a temporary worktree, or a checkout directory)
instead of this checkout, so edits made during a run cannot leak into it; a
digest of the measured ``wvc/*.py`` is compared at start and end. Needs about
``--size`` x 8 of free disk.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
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
    MiB,
    add_run_options,
    child_env,
    dir_bytes,
    files_identical,
    find_wvc_command,
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

DTYPES = ("bf16", "fp32")
TARGETS = ("dir", "s3")
BUCKET = "wvc-bench"
PART_SIZE = 4 * MiB  # the S3 baseline that copies the file as objects of wvc's chunk size
TARGET_PUSH_PCT = 70.0  # first push >= 70 % of the plain copy's throughput
TARGET_INC_RATIO = 1.1  # incremental push moves <= 1.1 x new_stored_size
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}


# ----------------------------------------------------------------------------------------------
# The S3 server (its own process)
# ----------------------------------------------------------------------------------------------


def serve_moto(port: int) -> None:
    """Run moto's S3 server on 127.0.0.1:``port`` until stdin is closed."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    try:
        sys.stdin.read()
    finally:
        server.stop()


# ----------------------------------------------------------------------------------------------
# Child side
# ----------------------------------------------------------------------------------------------


def _write_checkpoint(
    path: Path, dtype: str, shapes: dict[str, tuple[int, ...]], seeds: dict[str, int]
) -> int:
    """``model.safetensors`` tensor by tensor, in row blocks (bounded memory)."""
    import ml_dtypes
    import numpy as np

    from wvc.dtypes import DType
    from wvc.formats.safetensors import build_header

    np_dtype = np.dtype(np.float32) if dtype == "fp32" else np.dtype(ml_dtypes.bfloat16)
    st_dtype = DType.from_numpy(np_dtype)
    specs = {}
    for name, shape in shapes.items():
        n = 1
        for d in shape:
            n *= d
        specs[name] = (st_dtype, shape, n * np_dtype.itemsize)
    path.parent.mkdir(parents=True, exist_ok=True)
    block_elems = 4 * MiB
    with open(path, "wb") as f:
        f.write(build_header(specs, {"format": "pt"}))
        for name, shape in shapes.items():
            rng = np.random.default_rng(seeds[name])
            rows, cols = shape if len(shape) == 2 else (1, shape[0])
            step = max(1, block_elems // cols)
            for r in range(0, rows, step):
                x = rng.standard_normal((min(step, rows - r), cols), dtype=np.float32)
                x *= np.float32(0.02)
                if len(shape) == 1:  # norms: near 1
                    x += np.float32(1.0)
                f.write(x.astype(np_dtype).tobytes())
        f.flush()
        os.fsync(f.fileno())
    (path.parent / "config.json").write_text(
        f'{{"architectures": ["LlamaForCausalLM"], "torch_dtype": "{dtype}"}}\n'
    )
    return path.stat().st_size


def child_gen(a: dict[str, Any]) -> dict[str, Any]:
    """Write A and B (``fraction`` of A's tensor bytes replaced, whole tensors)."""
    import zlib

    import numpy as np

    dtype = a["dtype"]
    shapes = model_shapes(dtype, a["size"])
    itemsize = 4 if dtype == "fp32" else 2
    nbytes = {n: int(np.prod(s)) * itemsize for n, s in shapes.items()}
    total = sum(nbytes.values())
    order = list(shapes)
    np.random.default_rng(0).shuffle(order)
    picked: list[str] = []
    acc = 0
    for n in order:
        if acc + nbytes[n] <= a["fraction"] * total:
            picked.append(n)
            acc += nbytes[n]
    seeds_a = {n: zlib.crc32(n.encode()) for n in shapes}
    seeds_b = {n: s + (1000003 if n in picked else 0) for n, s in seeds_a.items()}
    root = Path(a["root"])
    size_a = _write_checkpoint(root / "A" / "model.safetensors", dtype, shapes, seeds_a)
    size_b = _write_checkpoint(root / "B" / "model.safetensors", dtype, shapes, seeds_b)
    return {
        "dirs": {"A": str(root / "A"), "B": str(root / "B")},
        "file_bytes": size_a,
        "file_bytes_b": size_b,
        "tensors": len(shapes),
        "tensor_bytes": total,
        "layers": sum(1 for k in shapes if k.endswith("q_proj.weight")),
        "hidden": shapes["model.norm.weight"][0],
        "changed_tensors": len(picked),
        "changed_bytes": acc,
    }


def child_commit(a: dict[str, Any]) -> dict[str, Any]:
    """Commit a directory (on a new branch ``switch`` made from HEAD, if given)."""
    import wvc

    if a.get("switch"):
        repo = wvc.Repository.open(a["repo"])
        repo.switch(a["switch"], create=True)
        repo.close()
    res, out = timed_commit(a, a["dir"])
    return {**out, "id": res.id}


def _preimport() -> None:
    """Import what the measured calls import lazily, so neither side pays it in the timed part."""
    import fsspec
    import fsspec.implementations.local  # noqa: F401
    import s3fs  # type: ignore[import-untyped]  # noqa: F401


def _s3fs(endpoint: str) -> Any:
    import s3fs

    return s3fs.S3FileSystem(endpoint_url=endpoint, skip_instance_cache=True)


def _remote_bytes(a: dict[str, Any]) -> int:
    """Bytes stored under the remote's URL, listed with a filesystem of its own (so the
    listing does not fill the measured filesystem's directory cache)."""
    url = a["url"]
    if a["target"] == "dir":
        p = Path(url)
        return dir_bytes(p) if p.exists() else 0
    fs = _s3fs(a["endpoint"])
    path = url.removeprefix("s3://")
    try:
        return int(sum(fs.du(path, total=False).values()))
    except FileNotFoundError:
        return 0


def _options(a: dict[str, Any]) -> dict[str, Any]:
    return {"endpoint_url": a["endpoint"]} if a["target"] == "s3" else {}


def child_push(a: dict[str, Any], counting: Any = None) -> dict[str, Any]:
    """``repo.push(name, refs)``, timed; ``base`` refs pushed first, untimed. ``counting``
    (a list) gets True while the timed call runs."""
    import wvc

    _preimport()
    repo = wvc.Repository.open(a["repo"])
    if a["name"] not in {r.name for r in repo.remotes()}:
        repo.add_remote(a["name"], a["url"], _options(a))
    if a.get("base"):
        repo.push(a["name"], a["base"], jobs=a.get("jobs"))
    before = _remote_bytes(a)
    if counting is not None:
        counting.append(True)
    res, t = timed(lambda: repo.push(a["name"], a.get("refs"), jobs=a.get("jobs")))
    if counting is not None:
        counting.clear()
    after = _remote_bytes(a)
    repo.close()
    return {
        **t,
        "objects": res.objects,
        "bytes": res.bytes,
        "present": res.present,
        "commits": res.commits,
        "up_to_date": res.up_to_date,
        "remote_growth": after - before,
        "remote_bytes": after,
        "wvc_file": wvc.__file__,
    }


def child_clone(a: dict[str, Any]) -> dict[str, Any]:
    """``Repository.clone(url, path)``, timed; its HEAD checked against ``expect``, untimed."""
    import wvc

    _preimport()
    repo, t = timed(
        lambda: wvc.Repository.clone(
            a["url"], a["path"], options=_options(a) or None, jobs=a.get("jobs")
        )
    )
    fetched = repo.last_clone.fetch if repo.last_clone else None
    head = repo.resolve("HEAD")
    stored = repo.stats().stored_size
    repo.close()
    if head != a["expect"]:
        raise SystemExit(f"clone of {a['url']}: HEAD {head}, expected {a['expect']}")
    return {
        **t,
        "objects": fetched.objects if fetched else None,
        "bytes": fetched.bytes if fetched else None,
        "stored_size": stored,
        "wvc_file": wvc.__file__,
    }


def child_plain(a: dict[str, Any]) -> dict[str, Any]:
    """One file copied with fsspec, timed; then the fsync of a local destination, timed
    separately.

    ``put`` / ``get``: ``put_file`` / ``get_file``. ``put_parts`` / ``get_parts`` (S3):
    the file read whole and written as ``PART_SIZE`` objects with one ``fs.pipe(dict)``,
    and read back with one ``fs.cat(list)`` and written to the local file (fsspec's
    batched calls, concurrent on its event loop).
    """
    _preimport()
    op = a["op"]

    def run() -> None:
        if a["target"] == "s3":
            fs = _s3fs(a["endpoint"])
        else:
            from fsspec.implementations.local import LocalFileSystem

            fs = LocalFileSystem()
        if op == "put_parts":
            with open(a["src"], "rb") as f:
                data = f.read()
            view = memoryview(data)
            fs.pipe(
                {
                    f"{a['dst']}/{i:05d}": bytes(view[off : off + PART_SIZE])
                    for i, off in enumerate(range(0, len(data), PART_SIZE))
                }
            )
        elif op == "get_parts":
            keys = [f"{a['src']}/{i:05d}" for i in range(-(-a["size"] // PART_SIZE))]
            got = fs.cat(keys)
            with open(a["dst"], "wb") as f:
                for k in keys:
                    f.write(got[k])
        else:
            getattr(fs, op + "_file")(a["src"], a["dst"])

    local_dst = a["target"] == "dir" or op.startswith("get")
    if local_dst:
        Path(a["dst"]).parent.mkdir(parents=True, exist_ok=True)
    _, t = timed(run)
    out: dict[str, Any] = {**t, "bytes": os.path.getsize(a["src"]) if not local_dst else None}
    if local_dst:

        def sync() -> None:
            with open(a["dst"], "rb") as f:
                os.fsync(f.fileno())

        out["fsync_seconds"] = timed(sync)[1]["seconds"]
        out["bytes"] = os.path.getsize(a["dst"])
    return out


def child_s3(a: dict[str, Any]) -> dict[str, Any]:
    """Make the benchmark's bucket (``mkdir``) or delete prefixes under it (``rm``)."""
    fs = _s3fs(a["endpoint"])
    if a["op"] == "mkdir":
        fs.mkdir(a["bucket"])
    else:
        for p in a["paths"]:
            if fs.exists(p):
                fs.rm(p, recursive=True)
    return {}


def child_breakdown(a: dict[str, Any]) -> dict[str, Any]:
    """One push (to a new remote) or clone with wvc's steps wrapped by timers."""
    import asyncio  # noqa: F401
    import threading
    from collections import defaultdict

    import wvc
    from wvc.objects import ObjectStore
    from wvc.remote import remote as remote_mod
    from wvc.store import _local

    _preimport()
    import s3fs

    lock = threading.Lock()
    steps: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])

    def record(label: str, dt: float) -> None:
        with lock:
            s = steps[label]
            s[0] += 1
            s[1] += dt

    def wrap(owner: Any, attr: str, label: str, static: bool = False) -> None:
        orig = getattr(owner, attr)

        def w(*args: Any, **kw: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return orig(*args, **kw)
            finally:
                record(label, time.perf_counter() - t0)

        setattr(owner, attr, staticmethod(w) if static else w)

    wrap(remote_mod.Remote, "has_object", "Remote.has_object")
    wrap(remote_mod.Remote, "put_object", "Remote.put_object")
    wrap(remote_mod.Remote, "get_object", "Remote.get_object")
    wrap(ObjectStore, "decode", "ObjectStore.decode (verify)", static=True)
    wrap(_local.LocalStore, "get", "LocalStore.get (read)")
    wrap(_local.LocalStore, "put_parts", "LocalStore.put_parts (write)")
    wrap(_local.LocalStore, "exists", "LocalStore.exists")
    wrap(os, "fsync", "os.fsync")
    orig_call = s3fs.S3FileSystem._call_s3

    async def call_s3(self: Any, method: str, *args: Any, **kw: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return await orig_call(self, method, *args, **kw)
        finally:
            record(f"S3 {method}", time.perf_counter() - t0)

    s3fs.S3FileSystem._call_s3 = call_s3
    if a["op"] == "push":
        from wvc.ops import push as push_mod

        wrap(push_mod, "plan_push", "push: plan (refs, commit graph, manifests)")
        wrap(push_mod, "upload", "push: upload (all objects)")
        wrap(push_mod, "update_refs", "push: update refs")
        repo = wvc.Repository.open(a["repo"])
        repo.add_remote(a["name"], a["url"], _options(a))
        res, t = timed(lambda: repo.push(a["name"], a.get("refs"), jobs=a["jobs"]))
        repo.close()
        moved = {"objects": res.objects, "bytes": res.bytes}
    else:
        repo, t = timed(
            lambda: wvc.Repository.clone(
                a["url"], a["path"], options=_options(a) or None, jobs=a["jobs"]
            )
        )
        f = repo.last_clone.fetch if repo.last_clone else None
        repo.close()
        moved = {"objects": f.objects if f else None, "bytes": f.bytes if f else None}
    return {**t, **moved, "steps": {k: v for k, v in sorted(steps.items())}}


# Run-time patches for the what-if measurements (in the child only; wvc/ is not changed).
WHAT_IF = {
    "no_verify": "push without ObjectStore.decode (no decompress + hash per object)",
    "head_only": "existence check = one HEAD (no LIST fallback), PUT without re-checking",
    "no_check": "no existence check, PUT without re-checking (1 request per object)",
    "get_no_head": "GET without the HEAD s3fs sends first (cat_file max_concurrency=1)",
}


WHAT_IF_PUSH = {
    "dir": ["baseline", "no_verify"],
    "s3": ["baseline", "no_verify", "head_only", "head_only+no_verify", "no_check+no_verify"],
}
WHAT_IF_CLONE: dict[str, list[str]] = {"dir": [], "s3": ["baseline", "get_no_head"]}


def _apply_what_if(patches: list[str]) -> None:
    from fsspec.asyn import sync

    from wvc.remote.remote import Remote
    from wvc.store import _fsspec

    if "no_verify" in patches:  # only push.upload's check (reads elsewhere still verify)
        from wvc.ops import push as push_mod

        class Unverified:
            @staticmethod
            def decode(object_id: str, blob: bytes, context: str | None = None) -> memoryview:
                return memoryview(blob)

        push_mod.ObjectStore = Unverified  # type: ignore[attr-defined,assignment]
    if "head_only" in patches or "no_check" in patches:

        def put_parts(self: Any, key: str, parts: Any) -> None:
            self._write(self._path(key), b"".join(bytes(p) for p in parts))

        _fsspec.FsspecStore.put_parts = put_parts  # type: ignore[method-assign]
    if "head_only" in patches:

        def exists(self: Any, key: str) -> bool:
            bucket, k, _ = self.fs.split_path(self._path(key))
            try:  # through _call_s3 (call_s3 would bypass the request counter)
                sync(self.fs.loop, self.fs._call_s3, "head_object", Bucket=bucket, Key=k)
            except FileNotFoundError:
                return False
            return True

        _fsspec.S3Store.exists = exists  # type: ignore[method-assign]
    if "no_check" in patches:
        Remote.has_object = lambda self, oid: False  # type: ignore[method-assign]
    if "get_no_head" in patches:

        def get(self: Any, key: str) -> bytes:
            try:
                return bytes(self.fs.cat_file(self._path(key), max_concurrency=1))
            except FileNotFoundError:
                raise KeyError(key) from None

        _fsspec.S3Store.get = get  # type: ignore[method-assign]


def child_what_if(a: dict[str, Any]) -> dict[str, Any]:
    """``push`` or ``clone`` as measured above, with run-time patches; S3 requests counted."""
    _preimport()
    import s3fs

    _apply_what_if(a["patches"])
    calls: dict[str, int] = {}
    counting: list[bool] = [] if a["op"] == "push" else [True]
    orig = s3fs.S3FileSystem._call_s3

    async def call_s3(self: Any, method: str, *args: Any, **kw: Any) -> Any:
        if counting:  # the event loop is one thread
            calls[method] = calls.get(method, 0) + 1
        return await orig(self, method, *args, **kw)

    s3fs.S3FileSystem._call_s3 = call_s3
    out = child_push(a, counting) if a["op"] == "push" else child_clone(a)
    return {**out, "s3_calls": calls}


CHILD_OPS = {
    "gen": child_gen,
    "commit": child_commit,
    "push": child_push,
    "clone": child_clone,
    "plain": child_plain,
    "s3": child_s3,
    "breakdown": child_breakdown,
    "what_if": child_what_if,
}


# ----------------------------------------------------------------------------------------------
# Parent side
# ----------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) of process ``pid`` so far."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_status_kib(pid: int, key: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


class MotoServer:
    """moto's S3 server in a child process (this script with ``--moto-server PORT``)."""

    def __init__(self, log: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(log, "ab")  # noqa: SIM115 -- closed by stop()
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--moto-server", str(self.port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            env=env,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != b"ready":
            self.stop()
            raise SystemExit(f"moto server did not start (said {line!r}); see {log}")
        self.peak_rss_kib = 0
        self.rss_after_cleanup_kib = 0

    def cpu(self) -> float:
        return proc_cpu(self.proc.pid)

    def sample_rss(self) -> None:
        hwm = proc_status_kib(self.proc.pid, "VmHWM")
        if hwm:
            self.peak_rss_kib = max(self.peak_rss_kib, hwm)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.sample_rss()
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.terminate()
                self.proc.wait(timeout=10)
        self.log.close()


class Bench(BenchBase):
    quiet_before_first = True

    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        super().__init__(args, work)
        self.t_start = time.perf_counter()
        self.code_root = REPO_ROOT
        if args.code:
            self.code_root = self.resolve_code(args.code)
        self.env = child_env(work / "pycache", str(self.code_root))
        self.env.update(AWS_ENV)
        self.wvc_cmd = find_wvc_command(args.wvc)
        self.moto: MotoServer | None = None
        self.want = ""
        self.results = {
            "machine": machine_info(),
            "size_arg": args.size,
            "repeats": args.repeats,
            "changed": args.changed,
            "jobs": args.jobs,
            "targets": list(args.targets),
            "dtypes": {},
        }

    def close(self) -> None:
        if self.moto is not None:
            self.results["moto_peak_rss_mib"] = self.moto.peak_rss_kib / 1024
            self.results["moto_rss_after_cleanup_mib"] = self.moto.rss_after_cleanup_kib / 1024
            self.moto.stop()
            self.moto = None
        super().close()

    def check_code(self) -> None:
        out, want = import_check(sys.executable, self.code_root, self.env, self.work)
        got = out.stdout.strip()
        if out.returncode != 0 or str(Path(got).resolve()) != str(want):
            raise SystemExit(f"children import {got or out.stderr[-300:]}, not {want}")
        self.want = str(want)
        rev = git_rev(self.code_root)
        self.say(f"wvc: {want} (git {rev or '-'}); CLI: {self.wvc_cmd} (same PYTHONPATH)")
        self.results["wvc_rev"] = rev
        self.results["wvc_root"] = str(self.code_root)
        self.results["wvc_source_hash"] = source_hash(self.code_root / "wvc")
        vers = subprocess.run(
            [
                sys.executable,
                "-c",
                "import importlib.metadata as m\n"
                "for p in ('moto','s3fs','fsspec','aiobotocore','botocore','Werkzeug',"
                "'zstandard','blake3'):\n"
                "    print(p, m.version(p))",
            ],
            capture_output=True,
            text=True,
            env=self.env,
        ).stdout.split("\n")
        self.results["versions"] = dict(x.split(" ", 1) for x in vers if " " in x)
        self.say("packages: " + ", ".join(f"{k} {v}" for k, v in self.results["versions"].items()))

    def child(self, child_op: str, s3: bool = False, **kw: Any) -> dict[str, Any]:
        """Run one child; for S3 operations, the server's CPU time meanwhile is recorded and
        not counted as other load."""
        c0 = self.moto.cpu() if s3 and self.moto else 0.0
        res = run_script_child(__file__, child_op, kw, self.log, env=self.env, cwd=self.work)
        if s3 and self.moto:
            server = self.moto.cpu() - c0
            res["server_cpu"] = server
            res["other_cores"] = max(0.0, res["other_cores"] - server / res["wall"])
            self.moto.sample_rss()
        wf = res.get("wvc_file")
        if wf and str(Path(wf).resolve()) != self.want:
            raise SystemExit(f"a child imported {wf}, not {self.want}")
        return res

    # --- locations -------------------------------------------------------------------

    def spot(self, dtype: str, target: str, tag: str) -> dict[str, Any]:
        """A fresh remote URL and plain-copy paths for one measurement."""
        u = f"{tag}-{uuid.uuid4().hex[:8]}"
        if target == "dir":
            base = self.work / "remote" / dtype / u
            return {
                "target": "dir",
                "url": str(base / "remote"),
                "plain": str(base / "plain" / "model.safetensors"),
                "spot_root": str(base),
                "endpoint": None,
            }
        assert self.moto is not None
        prefix = f"{BUCKET}/{dtype}/{u}"
        return {
            "target": "s3",
            "url": f"s3://{prefix}/remote",
            "plain": f"{prefix}/plain/model.safetensors",
            "spot_root": prefix,
            "endpoint": self.moto.url,
        }

    def drop(self, sp: dict[str, Any]) -> None:
        if sp["target"] == "dir":
            shutil.rmtree(sp["spot_root"], ignore_errors=True)
        else:
            self.child("s3", s3=True, op="rm", endpoint=sp["endpoint"], paths=[sp["spot_root"]])
            if self.moto:
                rss = proc_status_kib(self.moto.proc.pid, "VmRSS") or 0
                self.moto.rss_after_cleanup_kib = max(self.moto.rss_after_cleanup_kib, rss)

    # --- the measurements ------------------------------------------------------------

    def setup(self, dtype: str) -> dict[str, Any]:
        root = self.work / dtype
        self.say(f"\n== {dtype}: generating A and B (~{human(self.args.size)} each) in {root}")
        t0 = time.perf_counter()
        g = self.child(
            "gen", root=str(root), dtype=dtype, size=self.args.size, fraction=self.args.changed
        )
        repo = root / "repo"
        ca = self.child("commit", repo=str(repo), dir=g["dirs"]["A"], init=True, message="A")
        cb = self.child("commit", repo=str(repo), dir=g["dirs"]["B"], switch="next", message="B")
        g["repo"] = str(repo)
        g["commits"] = {"A": ca, "B": cb}
        self.say(
            f"   {g['tensors']} tensors ({g['layers']} layers, hidden {g['hidden']}), file "
            f"{g['file_bytes']:,} B; B changes {g['changed_tensors']} tensors, "
            f"{g['changed_bytes']:,} B ({100 * g['changed_bytes'] / g['tensor_bytes']:.1f} %); "
            f"stored: A {ca['new_stored_size']:,} B ({ca['new_objects']} objects), "
            f"B new {cb['new_stored_size']:,} B ({cb['new_objects']} objects); "
            f"{time.perf_counter() - t0:.0f}s"
        )
        return g

    def warm(self, g: dict[str, Any]) -> None:
        warm_up(Path(g["repo"]))
        warm_up(Path(g["dirs"]["A"]))

    def first(self, g: dict[str, Any], dtype: str, target: str, rep: int, add: Add) -> None:
        """Push A to a new remote and clone it back; put and get the file; interleaved."""
        s3 = target == "s3"
        sp = self.spot(dtype, target, f"first{rep}")
        src = str(Path(g["dirs"]["A"]) / "model.safetensors")
        got = self.work / "get" / dtype / f"{rep}" / "model.safetensors"
        clone = self.work / "clone" / dtype / f"{rep}"
        jobs = self.args.jobs
        head_a = g["commits"]["A"]["id"]
        try:

            def push() -> None:
                self.warm(g)
                r = self.child(
                    "push",
                    s3,
                    repo=g["repo"],
                    name=f"r{uuid.uuid4().hex[:8]}",
                    refs=["main"],
                    jobs=jobs,
                    **sp,
                )
                add(f"{target}:push", r)
                self.say(
                    f"   [{rep + 1}] {target} push     : {self.line(r, g['file_bytes'])}, "
                    f"{r['objects']} objects, {r['bytes']:,} B"
                )

            def plain(op: str) -> Callable[[], None]:
                def run() -> None:
                    if op.startswith("put"):
                        self.warm(g)
                        ends = (src, sp["plain"] if op == "put" else f"{sp['spot_root']}/parts")
                    else:
                        if target == "dir":
                            warm_up(Path(sp["plain"]).parent)
                        ends = (
                            sp["plain"] if op == "get" else f"{sp['spot_root']}/parts",
                            str(got),
                        )
                    r = self.child(
                        "plain", s3, op=op, src=ends[0], dst=ends[1], size=g["file_bytes"], **sp
                    )
                    add(f"{target}:{op}", r)
                    self.say(
                        f"   [{rep + 1}] {target} {op:9s}: {self.line(r, g['file_bytes'])}"
                        + (f", fsync {r['fsync_seconds']:.2f}s" if "fsync_seconds" in r else "")
                    )
                    if op.startswith("get"):
                        if rep == 0 and not files_identical(Path(src), got):
                            raise SystemExit(f"plain {op} from {ends[0]}: not identical")
                        shutil.rmtree(got.parent, ignore_errors=True)

                return run

            def clone_() -> None:
                if target == "dir":
                    warm_up(Path(sp["url"]))
                r = self.child(
                    "clone",
                    s3,
                    url=sp["url"],
                    path=str(clone),
                    expect=head_a,
                    jobs=jobs,
                    **{k: v for k, v in sp.items() if k != "url"},
                )
                add(f"{target}:clone", r)
                self.say(
                    f"   [{rep + 1}] {target} clone    : {self.line(r, g['file_bytes'])}, "
                    f"{r['objects']} objects, {r['bytes']:,} B"
                )
                shutil.rmtree(clone, ignore_errors=True)

            # wvc and the plain copies take turns going first.
            ups = [push, plain("put")] + ([plain("put_parts")] if s3 else [])
            downs = [clone_, plain("get")] + ([plain("get_parts")] if s3 else [])
            k = rep % len(ups)
            for fn in ups[k:] + ups[:k] + downs[k:] + downs[:k]:
                fn()
        finally:
            shutil.rmtree(clone, ignore_errors=True)
            shutil.rmtree(got.parent, ignore_errors=True)
            self.drop(sp)

    def incremental(self, g: dict[str, Any], dtype: str, target: str, rep: int, add: Add) -> None:
        """A new remote gets main (A), untimed; time the push of next (B), then a no-op push."""
        s3 = target == "s3"
        sp = self.spot(dtype, target, f"inc{rep}")
        name = f"i{uuid.uuid4().hex[:8]}"
        try:
            self.warm(g)
            r = self.child(
                "push",
                s3,
                repo=g["repo"],
                name=name,
                refs=["next"],
                base=["main"],
                jobs=self.args.jobs,
                **sp,
            )
            add(f"{target}:inc", r)
            new = g["commits"]["B"]["new_stored_size"]
            self.say(
                f"   [{rep + 1}] {target} incremental push: {r['seconds']:.2f}s, "
                f"{r['objects']} objects, {r['bytes']:,} B (remote grew "
                f"{r['remote_growth']:,} B) vs new_stored_size {new:,} B: "
                f"{r['bytes'] / new:.3f}x"
            )
            r = self.child(
                "push", s3, repo=g["repo"], name=name, refs=["next"], jobs=self.args.jobs, **sp
            )
            if not r["up_to_date"] or r["objects"]:
                raise SystemExit(f"no-op push to {sp['url']} moved {r['objects']} objects")
            add(f"{target}:noop", r)
            cmd = [self.wvc_cmd, "push", name, "next", "-q"]
            c0 = self.moto.cpu() if s3 and self.moto else 0.0
            m = run_measured(cmd, self.log, env=self.env, cwd=Path(g["repo"]))
            if s3 and self.moto:
                m["server_cpu"] = self.moto.cpu() - c0
                m["other_cores"] = max(0.0, m["other_cores"] - m["server_cpu"] / m["wall"])
            m["seconds"] = m.pop("wall")
            m.pop("stdout", None)
            add(f"{target}:noop_cli", m)
            self.say(
                f"   [{rep + 1}] {target} no-op push: API {r['seconds'] * 1000:.0f} ms, "
                f"`wvc push -q` process {m['seconds']:.2f}s"
            )
        finally:
            self.drop(sp)

    def what_if_variants(self, variants: list[str]) -> list[str]:
        """``variants`` (which start with "baseline") that ``--what-if`` selects."""
        chosen = self.args.what_if
        return [v for v in variants if v == "baseline" or chosen == {"all"} or v in chosen]

    def what_if(self, g: dict[str, Any], dtype: str, target: str, rep: int, add: Add) -> None:
        """Push (and, for S3, clone) with run-time patches of wvc; see WHAT_IF."""
        s3 = target == "s3"
        variants = self.what_if_variants(WHAT_IF_PUSH[target])
        if len(variants) == 1 and len(self.what_if_variants(WHAT_IF_CLONE[target])) < 2:
            return  # nothing selected for this target
        k = rep % len(variants)
        spots = []
        clone = self.work / "clone" / dtype / f"wi{rep}"
        try:
            for v in variants[k:] + variants[:k]:
                sp = self.spot(dtype, target, f"wi{rep}")
                spots.append(sp)
                self.warm(g)
                r = self.child(
                    "what_if",
                    s3,
                    op="push",
                    patches=v.split("+") if v != "baseline" else [],
                    repo=g["repo"],
                    name=f"w{uuid.uuid4().hex[:8]}",
                    refs=["main"],
                    jobs=self.args.jobs,
                    **sp,
                )
                add(f"{target}:wi:push:{v}", r)
                self.say(
                    f"   [{rep + 1}] {target} what-if push {v}: "
                    f"{self.line(r, g['file_bytes'])}, S3 requests {sum(r['s3_calls'].values())}"
                )
                if len(spots) > 1:
                    self.drop(spots.pop())
            cv = self.what_if_variants(WHAT_IF_CLONE[target])
            cv = cv if len(cv) > 1 else []
            k = rep % max(1, len(cv))
            for v in cv[k:] + cv[:k]:
                r = self.child(
                    "what_if",
                    s3,
                    op="clone",
                    patches=v.split("+") if v != "baseline" else [],
                    path=str(clone),
                    expect=g["commits"]["A"]["id"],
                    jobs=self.args.jobs,
                    **spots[0],
                )
                add(f"{target}:wi:clone:{v}", r)
                self.say(
                    f"   [{rep + 1}] {target} what-if clone {v}: "
                    f"{self.line(r, g['file_bytes'])}, S3 requests {sum(r['s3_calls'].values())}"
                )
                shutil.rmtree(clone, ignore_errors=True)
        finally:
            shutil.rmtree(clone, ignore_errors=True)
            for sp in spots:
                self.drop(sp)

    def breakdown(
        self, g: dict[str, Any], dtype: str, target: str, jobs: int | None
    ) -> dict[str, Any]:
        s3 = target == "s3"
        sp = self.spot(dtype, target, f"bd{jobs}")
        clone = self.work / "clone" / dtype / f"bd{jobs}"
        out: dict[str, Any] = {}
        try:
            self.warm(g)
            out["push"] = self.child(
                "breakdown",
                s3,
                op="push",
                repo=g["repo"],
                name=f"b{uuid.uuid4().hex[:8]}",
                refs=["main"],
                jobs=jobs,
                **sp,
            )
            if target == "dir":
                warm_up(Path(sp["url"]))
            out["clone"] = self.child("breakdown", s3, op="clone", path=str(clone), jobs=jobs, **sp)
        finally:
            shutil.rmtree(clone, ignore_errors=True)
            self.drop(sp)
        for op, r in out.items():
            self.say(
                f"   breakdown {target} {op} jobs={jobs or 'default'}: {r['seconds']:.2f}s, CPU "
                f"{r['user'] + r['sys']:.2f}s, server CPU {r.get('server_cpu', 0):.2f}s"
            )
        return out

    @staticmethod
    def line(r: dict[str, Any], nbytes: int) -> str:
        return (
            f"{r['seconds']:.2f}s {nbytes / r['seconds'] / MB:,.0f} MB/s, CPU "
            f"{r['user'] + r['sys']:.2f}s"
            + (f", server CPU {r['server_cpu']:.2f}s" if "server_cpu" in r else "")
            + f", RSS {r['rss_mib']:.0f} MiB, other load {r['other_cores']:.2f}"
        )

    def run(self) -> None:
        if "s3" in self.args.targets:
            self.moto = MotoServer(self.log, self.env)
            self.say(f"moto S3 server: {self.moto.url} (pid {self.moto.proc.pid})")
            self.child("s3", s3=True, op="mkdir", endpoint=self.moto.url, bucket=BUCKET)
        for dtype in self.args.dtypes:
            g = self.setup(dtype)
            runs: dict[str, list[dict[str, Any]]] = {}
            d: dict[str, Any] = {"gen": g, "measurements": runs}
            self.results["dtypes"][dtype] = d
            for rep in range(self.args.repeats):
                for target in self.args.targets:
                    self.attempt(
                        f"{dtype} {target} first [{rep + 1}]",
                        runs,
                        lambda add, t=target, r=rep, g=g, dt=dtype: self.first(g, dt, t, r, add),
                    )
            for rep in range(self.args.repeats):
                for target in self.args.targets:
                    self.attempt(
                        f"{dtype} {target} incremental [{rep + 1}]",
                        runs,
                        lambda add, t=target, r=rep, g=g, dt=dtype: self.incremental(
                            g, dt, t, r, add
                        ),
                    )
            if self.args.what_if != {"none"}:
                for rep in range(self.args.repeats):
                    for target in self.args.targets:
                        self.attempt(
                            f"{dtype} {target} what-if [{rep + 1}]",
                            runs,
                            lambda add, t=target, r=rep, g=g, dt=dtype: self.what_if(
                                g, dt, t, r, add
                            ),
                        )
            if self.args.breakdown:
                d["breakdown"] = {}
                for target in self.args.targets:
                    for jobs in dict.fromkeys([self.args.jobs or 0, 1]):
                        d["breakdown"][f"{target}:{jobs}"] = self.breakdown(
                            g, dtype, target, jobs or None
                        )
            shutil.rmtree(self.work / dtype, ignore_errors=True)
        if self.moto:
            self.moto.sample_rss()
            self.results["moto_peak_rss_mib"] = self.moto.peak_rss_kib / 1024
            self.results["moto_rss_after_cleanup_mib"] = self.moto.rss_after_cleanup_kib / 1024
        self.results["total_seconds"] = time.perf_counter() - self.t_start


# ----------------------------------------------------------------------------------------------
# Reporting
# ----------------------------------------------------------------------------------------------


def _med(xs: list[dict[str, Any]], key: str = "seconds") -> float:
    return median([x[key] for x in xs])


def _med_fsync(xs: list[dict[str, Any]]) -> float:
    return median([x["seconds"] + x["fsync_seconds"] for x in xs])


def main_table(res: dict[str, Any]) -> str:
    hdr = [
        "dtype",
        "target",
        "op",
        "seconds",
        "MB/s",
        "% of plain copy",
        "% of plain + fsync",
        f"% of {PART_SIZE // MiB} MiB-object copy",
        "bytes moved",
        "CPU s",
        "server CPU s",
        "peak RSS MiB",
    ]
    lines = ["| " + " | ".join(hdr) + " |", "|---|---|---" + "|---:" * (len(hdr) - 3) + "|"]
    for dtype, d in res["dtypes"].items():
        m = d["measurements"]
        logical = d["gen"]["file_bytes"]
        for target in res["targets"]:
            for op, plain, label in (
                ("put", None, "plain fsspec put_file"),
                ("put+fsync", None, "plain put_file + fsync"),
                ("put_parts", None, f"plain fsspec pipe, {PART_SIZE // MiB} MiB objects"),
                ("push", "put", "wvc push (first)"),
                ("get", None, "plain fsspec get_file"),
                ("get+fsync", None, "plain get_file + fsync"),
                ("get_parts", None, f"plain fsspec cat, {PART_SIZE // MiB} MiB objects"),
                ("clone", "get", "wvc clone"),
            ):
                base_op = op.split("+")[0]
                xs = m.get(f"{target}:{base_op}")
                if not xs or (op.endswith("+fsync") and "fsync_seconds" not in xs[0]):
                    continue
                secs = _med_fsync(xs) if op.endswith("+fsync") else _med(xs)
                mbps = logical / secs / MB
                pct = pct_f = pct_p = ""
                if plain:
                    p = m[f"{target}:{plain}"]
                    pct = f"{100 * _med(p) / secs:.0f} %"
                    if "fsync_seconds" in p[0]:
                        pct_f = f"{100 * _med_fsync(p) / secs:.0f} %"
                    if f"{target}:{plain}_parts" in m:
                        pct_p = f"{100 * _med(m[f'{target}:{plain}_parts']) / secs:.0f} %"
                moved = xs[0].get("bytes")
                cpu = median([x["user"] + x["sys"] for x in xs])
                server = f"{_med(xs, 'server_cpu'):.2f}" if "server_cpu" in xs[0] else ""
                lines.append(
                    "| "
                    + " | ".join(
                        [
                            dtype,
                            target,
                            label,
                            f"{secs:.2f}",
                            f"{mbps:,.0f}",
                            pct,
                            pct_f,
                            pct_p,
                            f"{moved:,}" if moved is not None else "",
                            f"{cpu:.2f}",
                            server,
                            f"{max(x['rss_mib'] for x in xs):.0f}",
                        ]
                    )
                    + " |"
                )
    return "\n".join(lines)


def inc_table(res: dict[str, Any]) -> str:
    hdr = [
        "dtype",
        "target",
        "incremental push s",
        "objects",
        "bytes pushed (PushResult.bytes)",
        "remote grew by",
        "new_stored_size of B",
        "pushed / new_stored_size",
        "no-op push (API) ms",
        "no-op `wvc push -q` process s",
    ]
    lines = ["| " + " | ".join(hdr) + " |", "|---|---" + "|---:" * (len(hdr) - 2) + "|"]
    for dtype, d in res["dtypes"].items():
        m = d["measurements"]
        new = d["gen"]["commits"]["B"]["new_stored_size"]
        for target in res["targets"]:
            xs = m.get(f"{target}:inc")
            if not xs:
                continue
            pushed = max(x["bytes"] for x in xs)
            grew = max(x["remote_growth"] for x in xs)
            lines.append(
                "| "
                + " | ".join(
                    [
                        dtype,
                        target,
                        f"{_med(xs):.2f}",
                        f"{xs[0]['objects']}",
                        f"{pushed:,}",
                        f"{grew:,}",
                        f"{new:,}",
                        f"{pushed / new:.3f}x",
                        f"{1000 * _med(m[f'{target}:noop']):.0f}",
                        f"{_med(m[f'{target}:noop_cli']):.2f}",
                    ]
                )
                + " |"
            )
    return "\n".join(lines)


def what_if_table(res: dict[str, Any]) -> str:
    hdr = [
        "dtype",
        "target",
        "op",
        "variant (run-time patch in the child)",
        "S3 requests",
        "seconds",
        "MB/s",
        "vs unpatched",
        "% of plain copy",
        "% of plain + fsync",
        f"% of {PART_SIZE // MiB} MiB-object copy",
    ]
    lines = ["| " + " | ".join(hdr) + " |", "|---|---|---|---" + "|---:" * (len(hdr) - 4) + "|"]
    found = False
    for dtype, d in res["dtypes"].items():
        m = d["measurements"]
        logical = d["gen"]["file_bytes"]
        for target in res["targets"]:
            for op, plain in (("push", "put"), ("clone", "get")):
                variants = (WHAT_IF_PUSH if op == "push" else WHAT_IF_CLONE)[target]
                for v in variants:
                    xs = m.get(f"{target}:wi:{op}:{v}")
                    if not xs:
                        continue
                    found = True
                    secs = _med(xs)
                    base = _med(m[f"{target}:wi:{op}:baseline"])
                    p = m[f"{target}:{plain}"]
                    pf = _med_fsync(p) if "fsync_seconds" in p[0] else None
                    pp = m.get(f"{target}:{plain}_parts")
                    lines.append(
                        "| "
                        + " | ".join(
                            [
                                dtype,
                                target,
                                op,
                                "unpatched" if v == "baseline" else f"`{v}`",
                                f"{median([sum(x['s3_calls'].values()) for x in xs]):.0f}"
                                if target == "s3"
                                else "",
                                f"{secs:.2f}",
                                f"{logical / secs / MB:,.0f}",
                                f"{base / secs:.2f}x",
                                f"{100 * _med(p) / secs:.0f} %",
                                f"{100 * pf / secs:.0f} %" if pf else "",
                                f"{100 * _med(pp) / secs:.0f} %" if pp else "",
                            ]
                        )
                        + " |"
                    )
    used = {
        p
        for d in res["dtypes"].values()
        for k in d["measurements"]
        for p in k.split(":")[-1].split("+")
    }
    legend = [f"- `{k}`: {v}" for k, v in WHAT_IF.items() if k in used]
    return "\n".join([*lines, "", *legend]) if found else ""


def breakdown_table(res: dict[str, Any]) -> str:
    out = []
    for dtype, d in res["dtypes"].items():
        bd = d.get("breakdown")
        if not bd:
            continue
        for key, ops in bd.items():
            target, jobs = key.split(":")
            jobs_txt = jobs if jobs != "0" else f"default ({_default_jobs(res)})"
            for op, r in ops.items():
                out.append(
                    f"\n{dtype} {target} {op}, jobs {jobs_txt}: {r['seconds']:.2f} s wall, "
                    f"{r['user'] + r['sys']:.2f} CPU-s in wvc's process"
                    + (
                        f", {r['server_cpu']:.2f} CPU-s in the S3 server"
                        if "server_cpu" in r
                        else ""
                    )
                    + f"; {r['objects']} objects, {r['bytes']:,} B"
                    + _requests(r)
                    + "\n"
                )
                out.append("| step | calls | seconds (summed over threads) | ms per call |")
                out.append("|---|---:|---:|---:|")
                for step, (n, s) in sorted(r["steps"].items(), key=lambda kv: -kv[1][1]):
                    out.append(f"| {step} | {int(n)} | {s:.2f} | {1000 * s / max(n, 1):.2f} |")
    return "\n".join(out)


def _requests(r: dict[str, Any]) -> str:
    n = sum(c for k, (c, _s) in r["steps"].items() if k.startswith("S3 "))
    return f"; {int(n)} S3 requests ({n / max(1, r['objects']):.1f} per object)" if n else ""


def _default_jobs(res: dict[str, Any]) -> int:
    return min(32, 4 * (res["machine"]["nproc"] or 1) + 4)


def targets_report(res: dict[str, Any]) -> list[str]:
    out = []
    for dtype, d in res["dtypes"].items():
        m = d["measurements"]
        for target in res["targets"]:
            if f"{target}:push" not in m:
                continue
            pct = 100 * _med(m[f"{target}:put"]) / _med(m[f"{target}:push"])
            ok = "MET" if pct >= TARGET_PUSH_PCT else "MISSED"
            extra = ""
            if "fsync_seconds" in m[f"{target}:put"][0]:
                pf = 100 * _med_fsync(m[f"{target}:put"]) / _med(m[f"{target}:push"])
                extra = f" ({pf:.0f} % of put_file + fsync)"
            if f"{target}:put_parts" in m:
                pp = 100 * _med(m[f"{target}:put_parts"]) / _med(m[f"{target}:push"])
                extra = f" ({pp:.0f} % of the {PART_SIZE // MiB} MiB-object copy)"
            out.append(
                f"- {dtype} {target}: first push at {pct:.0f} % of the plain copy's "
                f"throughput{extra}: target >= {TARGET_PUSH_PCT:.0f} % {ok}"
            )
        new = d["gen"]["commits"]["B"]["new_stored_size"]
        for target in res["targets"]:
            xs = m.get(f"{target}:inc")
            if xs:
                ratio = max(x["bytes"] for x in xs) / new
                ok = "MET" if ratio <= TARGET_INC_RATIO else "MISSED"
                out.append(
                    f"- {dtype} {target}: incremental push moved {ratio:.3f}x "
                    f"new_stored_size: target <= {TARGET_INC_RATIO}x {ok}"
                )
    return out


def notes(res: dict[str, Any]) -> list[str]:
    out = []
    loads = [
        x["other_cores"]
        for d in res["dtypes"].values()
        for xs in d["measurements"].values()
        for x in xs
    ]
    if loads:
        out.append(
            f"- other load on the machine during the measurements (the S3 server's own CPU "
            f"excluded): median {median(loads):.2f}, max {max(loads):.2f} of "
            f"{res['machine']['nproc']} cores"
            + (" -- WARNING: the machine was not idle." if median(loads) > 0.25 else ".")
        )
    if res.get("moto_peak_rss_mib"):
        out.append(
            f"- moto server peak RSS: {res['moto_peak_rss_mib']:.0f} MiB; resident after "
            f"deleting a measurement's keys: at most "
            f"{res.get('moto_rss_after_cleanup_mib', 0):.0f} MiB"
        )
    out += run_caveats(res)
    return out


def report(res: dict[str, Any], args: argparse.Namespace) -> str:
    m = res["machine"]
    models = "; ".join(
        f"{dt}: {d['gen']['tensors']} tensors ({d['gen']['layers']} layers, hidden "
        f"{d['gen']['hidden']}), model.safetensors {d['gen']['file_bytes']:,} B, stored "
        f"{d['gen']['commits']['A']['new_stored_size']:,} B in "
        f"{d['gen']['commits']['A']['new_objects']} objects; B changes "
        f"{d['gen']['changed_tensors']} tensors ({d['gen']['changed_bytes']:,} B)"
        for dt, d in res["dtypes"].items()
    )
    vers = ", ".join(f"{k} {v}" for k, v in res.get("versions", {}).items())
    jobs = args.jobs or f"default ({_default_jobs(res)})"
    out = [
        "\n## Results\n",
        f"{machine_line(m)}, wvc {res.get('wvc_rev')} ({res.get('wvc_root')}), {m['date']}; "
        f"{vers}. {models}. "
        f"Each operation in a child process, timed around the call, page cache warm; "
        f"median of {args.repeats} repeat(s); wvc jobs: {jobs}; MB/s = 10^6 logical "
        f"(checkpoint) bytes / s; % of plain copy = plain copy's seconds / wvc's seconds "
        f"(same target, same direction).",
        "",
        main_table(res),
        "",
        "Incremental push (B on top of A on the remote) and no-op push:",
        "",
        inc_table(res),
        "",
        *targets_report(res),
        *notes(res),
    ]
    wi = what_if_table(res)
    if wi:
        out += [
            "",
            "What-if: the same first push / clone with wvc patched at run time in the child "
            "(wvc/ unchanged), median of the same repeats:",
            "",
            wi,
        ]
    bd = breakdown_table(res)
    if bd:
        out += ["", "### Breakdown (instrumented runs, not the medians above)", bd]
    out += ["", f"total benchmark time {res['total_seconds']:.0f}s"]
    return "\n".join(out)


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--moto-server":
        serve_moto(int(sys.argv[2]))
        return
    if run_if_child(CHILD_OPS, sys.argv):
        return
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--size", type=parse_size, default=GiB, help="tensor bytes (default 1GiB)")
    ap.add_argument(
        "--dtype",
        dest="dtypes",
        action="append",
        choices=DTYPES,
        help="bf16 and/or fp32 (repeatable; default bf16)",
    )
    ap.add_argument(
        "--target",
        dest="targets",
        action="append",
        choices=TARGETS,
        help="dir and/or s3 (repeatable; default both)",
    )
    ap.add_argument("--repeats", type=int, default=3, help="repeats of every measurement (median)")
    ap.add_argument(
        "--changed",
        type=float,
        default=0.1,
        help="fraction of tensor bytes changed in B (default 0.1)",
    )
    ap.add_argument("--jobs", type=int, default=None, help="wvc transfer threads (default: wvc's)")
    ap.add_argument(
        "--breakdown",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="instrumented push and clone per target (default on)",
    )
    variants = sorted({v for x in (*WHAT_IF_PUSH.values(), *WHAT_IF_CLONE.values()) for v in x})
    variants.remove("baseline")
    ap.add_argument(
        "--what-if",
        default="all",
        metavar="VARIANTS",
        help="also push / clone with run-time patches of wvc: 'all' (default), 'none', or a "
        "comma-separated list of " + ", ".join(variants),
    )
    ap.add_argument(
        "--code",
        metavar="REV_OR_DIR",
        help="measure this wvc (a git revision, checked out into a temporary worktree, or a "
        "checkout directory) instead of the checkout this script is in",
    )
    ap.add_argument("--wvc", help="the wvc command for the no-op CLI push (default: the venv's)")
    add_run_options(ap)
    args = ap.parse_args()
    args.dtypes = args.dtypes or ["bf16"]
    args.targets = args.targets or list(TARGETS)
    args.what_if = set(args.what_if.split(","))
    if not (args.what_if <= set(variants) or args.what_if in ({"all"}, {"none"})):
        ap.error(f"--what-if: choose 'all', 'none' or among {', '.join(variants)}")
    if args.repeats < 1:
        ap.error("--repeats must be >= 1")
    if not 0 < args.changed < 1:
        ap.error("--changed must be between 0 and 1")
    work = make_workdir(args.workdir, "wvc-bench-transfer-")
    need = args.size * 8
    free = shutil.disk_usage(work).free
    b = Bench(args, work)
    run_session(
        b,
        args,
        title="wvc transfer benchmark",
        need=need,
        free=free,
        leftovers=["bf16", "fp32", "remote", "get", "clone", "children.log", "rss.txt", "pycache"],
        code_root=b.code_root,
        report=report,
    )


if __name__ == "__main__":
    main()
