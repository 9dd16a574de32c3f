"""Helpers shared by the benchmark scripts ``bench_core.py``, ``bench_formats.py`` and
``bench_diff.py``.

Each script imports this module as ``_common`` (its own directory is first on
``sys.path`` when it runs as ``python bench/<script>.py``), in the parent and in
every ``--child`` process it starts.

Only the standard library is imported at module level: the parent process must stay
small (its RSS at spawn can show up in a child's peak RSS figure) and must never
import wvc, whose code under test may come from another checkout (``--code``,
``--compare-with``). Child-side helpers import wvc inside the function, so they get
the wvc that the child's ``PYTHONPATH`` selects.
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
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

MiB = 1024 * 1024
GiB = 1024 * MiB
MB = 1e6
VOCAB = 32000
# The repository these scripts belong to (its wvc/ is measured unless told otherwise).
REPO_ROOT = Path(__file__).resolve().parent.parent

Runs = dict[str, list[dict[str, Any]]]
Add = Callable[[str, dict[str, Any]], dict[str, Any]]


# ----------------------------------------------------------------------------------------------
# Model shapes (child side)
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


# ----------------------------------------------------------------------------------------------
# Measured operations (child side)
# ----------------------------------------------------------------------------------------------


def timed(fn: Any) -> tuple[Any, dict[str, float]]:
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


def fsync_path(path: Path | str) -> None:
    """fsync one file.

    Not ``wvc.store._local.fsync_dir``: the benchmarks may measure the wvc of another
    checkout (``--code``, ``--compare-with``), which need not have that private helper,
    and the parent process must not import wvc at all.
    """
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def chunk_stats(repo: Any) -> dict[str, int]:
    st = repo.stats()
    return {
        "chunk_stored_size": st.chunk_stored_size,
        "unique_size": st.unique_size,
        "stored_size": st.stored_size,
        "objects": st.objects,
    }


def timed_commit(a: dict[str, Any], src: str) -> tuple[Any, dict[str, Any]]:
    """``Repository.commit(src)`` into ``a["repo"]`` (made first if ``a["init"]``), timed.

    Returns the ``CommitResult`` and the figures: what it reports, and by how much the
    store grew (``repo.stats()`` before and after, untimed).
    """
    import wvc

    root = Path(a["repo"])
    repo = wvc.Repository.init(root) if a.get("init") else wvc.Repository.open(root)
    before = chunk_stats(repo)
    res, t = timed(lambda: repo.commit(src, message=a.get("message", "bench")))
    after = chunk_stats(repo)
    repo.close()
    return res, {
        **t,
        "logical_size": res.logical_size,
        "new_stored_size": res.new_stored_size,
        "new_objects": res.new_objects,
        "new_chunk_stored": after["chunk_stored_size"] - before["chunk_stored_size"],
        "new_all_stored": after["stored_size"] - before["stored_size"],
        "stats": after,
        "wvc_file": wvc.__file__,
    }


def child_restore(a: dict[str, Any]) -> dict[str, Any]:
    import wvc

    repo = wvc.Repository.open(a["repo"])
    res, t = timed(lambda: repo.restore("HEAD", a["out"]))
    repo.close()
    return {**t, "size": res.size, "files": res.files, "wvc_file": wvc.__file__}


def vm_hwm_kib() -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def run_if_child(
    ops: Mapping[str, Callable[[dict[str, Any]], dict[str, Any]]], argv: list[str]
) -> bool:
    """If ``argv`` is ``SCRIPT --child OP ARGS_JSON``, run ``ops[OP]`` and print its result
    as one JSON line: return True. Else return False (this is the parent)."""
    if len(argv) < 2 or argv[1] != "--child":
        return False
    out = ops[argv[2]](json.loads(argv[3]))
    out["vm_hwm_kib"] = vm_hwm_kib()
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()
    return True


# ----------------------------------------------------------------------------------------------
# Parent side: process control, cache control, measurement plumbing
# ----------------------------------------------------------------------------------------------


class ChildFailed(RuntimeError):
    pass


TIME_BIN = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None
HZ = os.sysconf("SC_CLK_TCK")


def cpu_busy() -> float:
    """System-wide busy CPU seconds so far (all cores), from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return 0.0
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return (sum(v[:8]) - idle) / HZ


def sample_load(seconds: float = 2.0) -> float:
    """Cores kept busy (by anything) on average over the next ``seconds``."""
    busy0, t0 = cpu_busy(), time.perf_counter()
    time.sleep(seconds)
    return (cpu_busy() - busy0) / (time.perf_counter() - t0)


def run_measured(
    cmd: list[str],
    log: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> dict[str, Any]:
    """Run ``cmd`` as one child and measure it.

    Returns stdout, wall seconds, the child's peak RSS in KiB (``rss_kib``), its
    CPU seconds (``cpu``, ``proc_user``, ``proc_sys``) and minor page faults
    (``proc_minflt``), from ``wait4``, including its waited-for children, and
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
        where = f"(cd {cwd}) " if cwd else ""
        pp = f"PYTHONPATH={env['PYTHONPATH']} " if env and env.get("PYTHONPATH") else ""
        err.write(("\n$ " + where + pp + " ".join(cmd) + "\n").encode())
        err.flush()
        busy0 = cpu_busy()
        t0 = time.perf_counter()
        proc = subprocess.Popen(full, stdout=subprocess.PIPE, stderr=err, env=env, cwd=cwd)
        assert proc.stdout is not None
        out = proc.stdout.read()
        proc.stdout.close()
        _pid, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        busy1 = cpu_busy()
        proc.returncode = os.waitstatus_to_exitcode(status)  # Popen must not wait again
    if proc.returncode != 0:
        raise ChildFailed(f"{cmd[:4]}... exited {proc.returncode}; see {log}")
    cpu = usage.ru_utime + usage.ru_stime
    res: dict[str, Any] = {
        "stdout": out.decode(),
        "wall": wall,
        "cpu": cpu,
        "proc_user": usage.ru_utime,
        "proc_sys": usage.ru_stime,
        "proc_minflt": usage.ru_minflt,
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


def run_script_child(
    script: str,
    op: str,
    args: dict[str, Any],
    log: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> dict[str, Any]:
    """``script --child op ARGS`` in this interpreter, measured; its JSON result + the figures."""
    cmd = [sys.executable, os.path.abspath(script), "--child", op, json.dumps(args)]
    m = run_measured(cmd, log, env=env, cwd=cwd)
    res: dict[str, Any] = json.loads(m.pop("stdout").strip().splitlines()[-1])
    res.update(m)
    res["rss_mib"] = m["rss_kib"] / 1024
    return res


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


def warm_up(d: Path) -> None:
    """Read every file under ``d`` once (untimed) so that it is in the page cache."""
    buf = bytearray(8 * MiB)
    for p in sorted(d.rglob("*")):
        if p.is_file():
            with open(p, "rb", buffering=0) as f:
                while f.readinto(buf):
                    pass


def dir_bytes(d: Path) -> int:
    return sum(p.stat().st_size for p in d.rglob("*") if p.is_file())


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


def run_text(cmd: list[str], cwd: str | Path | None = None) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd).stdout.strip()
    except OSError:
        return ""


def git_rev(root: Path) -> str:
    """``root``'s short HEAD, + a note if its wvc/ has uncommitted changes; "" if not git."""
    head = run_text(["git", "rev-parse", "--short", "HEAD"], cwd=root)
    if not head:
        return ""
    dirty = run_text(["git", "status", "--porcelain", "--", "wvc"], cwd=root)
    return head + (" + uncommitted changes in wvc/" if dirty else "")


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "zstd": run_text(["zstd", "--version"]) or None,
    }
    for line in run_text(["lscpu"]).splitlines():
        if line.startswith("Model name"):
            info["cpu"] = line.split(":", 1)[1].strip()
    try:
        with open("/proc/meminfo") as f:
            info["ram_gib"] = round(int(f.readline().split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    # Which wvc is measured: the source tree of this script's repository, if it is a git checkout.
    rev = git_rev(REPO_ROOT)
    if rev:
        info["wvc_git"] = rev
    return info


def machine_line(m: dict[str, Any]) -> str:
    """CPU, cores, RAM and Python of ``machine_info()``, for headers and reports."""
    return f"{m.get('cpu')} x{m['nproc']}, {m.get('ram_gib')} GiB RAM, Python {m['python']}"


def source_hash(pkg: Path) -> str:
    """A short digest of every .py file under ``pkg``: shows whether the code changed mid-run."""
    import hashlib

    h = hashlib.sha256()
    for f in sorted(pkg.rglob("*.py")):
        h.update(str(f.relative_to(pkg)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:12]


def source_changed(res: dict[str, Any]) -> str | None:
    """A warning if the wvc/ source digest at the end differs from the one at the start."""
    end = res.get("wvc_source_hash_end")
    if end and end != res.get("wvc_source_hash"):
        return (
            f"WARNING: wvc/ changed during the run (source digest {res['wvc_source_hash']} at "
            f"start, {end} at the end); the figures mix two versions."
        )
    return None


def run_caveats(res: dict[str, Any]) -> list[str]:
    """Report lines for blocks measured again under load and for wvc/ changing mid-run."""
    out = []
    disc = res.get("discarded", [])
    if disc:
        out.append(
            f"- {len(disc)} block(s) measured again because other work was running: "
            + ", ".join(f"{d['what']} ({d['other_cores']:.2f} cores)" for d in disc)
        )
    changed = source_changed(res)
    if changed:
        out.append(f"- {changed}")
    return out


def median(xs: list[float]) -> float:
    ys = sorted(xs)
    n = len(ys)
    return float(ys[n // 2] if n % 2 else (ys[n // 2 - 1] + ys[n // 2]) / 2)


def child_env(pycache: Path, pythonpath: str | None = None) -> dict[str, str]:
    """This process's environment with PYTHONPATH replaced (or removed).

    Bytecode caching is switched on (into ``pycache``, outside every source tree) even
    if PYTHONDONTWRITEBYTECODE is set here: an installed wvc has its .pyc files, and
    compiling wvc's modules at every start would add ~0.06 s to each CLI figure.
    """
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(pycache)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    return env


def find_wvc_command(explicit: str | None) -> str:
    """The ``wvc`` entry point of this interpreter's environment (the venv's), else PATH's."""
    if explicit:
        return explicit
    beside = Path(sys.executable).parent / "wvc"
    if os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("wvc")
    if not found:
        raise SystemExit("no `wvc` command found next to this Python or on PATH; use --wvc")
    return found


def import_check(
    python: str, code_root: Path, env: dict[str, str], cwd: Path
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """Byte-compile ``code_root``'s wvc/ (as an installation would have it), then ask which
    wvc a child imports.

    Runs in ``cwd``, the work dir, as the measured children do (``python -m`` / ``-c`` put
    cwd on sys.path). Returns that process (stdout: the imported ``wvc.__file__``) and the
    ``wvc/__init__.py`` it should have imported.
    """
    subprocess.run(
        [python, "-m", "compileall", "-q", str(code_root / "wvc")],
        env=env,
        cwd=cwd,
        capture_output=True,
    )
    out = subprocess.run(
        [python, "-c", "import wvc, wvc.cli; print(wvc.__file__)"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
    )
    return out, (code_root / "wvc" / "__init__.py").resolve()


# ----------------------------------------------------------------------------------------------
# Benchmark driver: the parts both Bench classes share
# ----------------------------------------------------------------------------------------------


class BenchBase:
    """Work dir, git worktree, and measuring blocks again when the machine was busy.

    ``args`` needs ``retries`` and ``max_other_load``. Subclasses fill ``results``.
    """

    # Wait for a quiet machine before the first attempt of every block too (not only
    # before a redo).
    quiet_before_first = False

    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.log = work / "children.log"
        self.worktree: Path | None = None  # made by add_worktree, removed by close()
        self.results: dict[str, Any] = {}

    def add_worktree(self, rev: str, prefix: str, error: str) -> Path:
        """Check ``rev`` of this repository out into a temporary worktree (removed by close)."""
        root = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
        root.rmdir()
        r = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "worktree", "add", "--detach", str(root), rev],
            capture_output=True,
            text=True,
        )
        if r.returncode != 0:
            raise SystemExit(f"{error}\n{r.stderr}")
        self.worktree = root
        return root

    def resolve_code(self, spec: str, option: str = "--code") -> Path:
        """A directory holding a wvc checkout, or a git revision (checked out into a
        temporary worktree, removed by close)."""
        p = Path(spec)
        root = (
            p.resolve()
            if p.is_dir()
            else self.add_worktree(
                spec, "wvc-code-", f"{option} {spec}: not a directory or git revision"
            )
        )
        if not (root / "wvc" / "__init__.py").is_file():
            raise SystemExit(f"{option} {spec}: no wvc/__init__.py under {root}")
        return root

    def close(self) -> None:
        if self.worktree is not None:
            subprocess.run(
                ["git", "-C", str(REPO_ROOT), "worktree", "remove", "--force", str(self.worktree)],
                capture_output=True,
            )
            subprocess.run(["git", "-C", str(REPO_ROOT), "worktree", "prune"], capture_output=True)
            self.worktree = None

    def say(self, msg: str) -> None:
        print(msg, flush=True)

    def attempt(self, what: str, runs: Runs, fn: Callable[..., None]) -> None:
        """Run one block of measurements; redo it if other work used the machine meanwhile.

        ``fn(add)`` records each measurement with ``add(key, result)``. If any of them
        saw more than ``--max-other-load`` cores busy with other work, the block is
        measured again once the machine is quiet (up to ``--retries`` times); the
        least disturbed attempt is kept, and the report shows its load. Discarded
        attempts are listed in the JSON under "discarded".
        """
        best: tuple[float, Runs] | None = None
        for i in range(self.args.retries + 1):
            if i > 0 or self.quiet_before_first:
                self.wait_quiet()
            local: Runs = {}

            def add(key: str, value: dict[str, Any], local: Runs = local) -> dict[str, Any]:
                local.setdefault(key, []).append(value)
                return value

            fn(add)
            load = max(
                (x.get("other_cores", 0.0) for xs in local.values() for x in xs), default=0.0
            )
            if best is not None:
                self.results.setdefault("discarded", []).append(
                    {"what": what, "other_cores": max(load, best[0])}
                )
            if best is None or load < best[0]:
                best = (load, local)
            if best[0] <= self.args.max_other_load:
                break
            if i < self.args.retries:
                self.say(f"   {what}: other load reached {load:.2f} cores; measuring again")
        assert best is not None
        for key, xs in best[1].items():
            runs.setdefault(key, []).extend(xs)

    def wait_quiet(self, timeout: float = 60.0) -> None:
        """Wait (at most ``timeout`` s) for a 2 s spell with other load < --max-other-load."""
        t_end = time.perf_counter() + timeout
        while time.perf_counter() < t_end:
            if sample_load(2) < self.args.max_other_load:
                return

    def load_before_start(self) -> None:
        """Sample the machine's load for 2 s, record it and say whether it is idle."""
        idle = sample_load(2)
        self.results["load_before_start"] = idle
        nproc = self.results["machine"]["nproc"]
        print(f"other load before start: {idle:.2f} of {nproc} cores busy (2 s sample)")
        if idle > 0.25:
            print("WARNING: the machine is not idle; figures will be depressed and noisy.")


def make_workdir(workdir: str | None, prefix: str) -> Path:
    """``--workdir`` (made if missing), else a new temporary directory under /tmp."""
    if workdir:
        work = Path(workdir).absolute()
        work.mkdir(parents=True, exist_ok=True)
        return work
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


@contextmanager
def workdir_session(b: BenchBase, args: argparse.Namespace, leftovers: list[str]) -> Iterator[None]:
    """Around a benchmark run: on failure show the end of children.log; at the end remove
    the worktree and, unless ``--keep``, what the run made.

    That is the whole temporary work dir, or, in a ``--workdir`` given by the user,
    only the entries matching the glob patterns ``leftovers``.
    """
    try:
        yield
    except BaseException:
        log = b.work / "children.log"
        if log.exists():
            print(
                "--- last lines of children.log ---\n"
                + "\n".join(log.read_text().splitlines()[-30:]),
                file=sys.stderr,
            )
        raise
    finally:
        b.close()
        if not args.keep:
            if args.workdir:
                for pattern in leftovers:
                    for p in b.work.glob(pattern):
                        if p.is_dir():
                            shutil.rmtree(p, ignore_errors=True)
                        else:
                            p.unlink()
            else:
                shutil.rmtree(b.work, ignore_errors=True)


def add_run_options(ap: argparse.ArgumentParser) -> None:
    """The options every benchmark takes to control a run: noise retries and the work dir."""
    ap.add_argument(
        "--max-other-load",
        type=float,
        default=0.25,
        help="redo a block when other work kept more than this many cores busy (default 0.25)",
    )
    ap.add_argument("--retries", type=int, default=2, help="redos per block at most (default 2)")
    ap.add_argument("--workdir", help="default: a temp dir under /tmp, removed at the end")
    ap.add_argument("--json", help="also write every raw figure to this JSON file")
    ap.add_argument("--keep", action="store_true", help="do not delete the work dir")


def run_session(
    b: Any,
    args: argparse.Namespace,
    *,
    title: str,
    need: int,
    free: int,
    leftovers: list[str],
    code_root: Path,
    report: Callable[[dict[str, Any], argparse.Namespace], str],
    warnings: Sequence[str] = (),
) -> None:
    """A benchmark run from banner to report: check the code, load, run, print the table,
    and write the raw figures to ``--json``."""
    with workdir_session(b, args, leftovers):
        mi = b.results["machine"]
        print(
            f"{title}  {mi['date']}\n"
            f"machine: {machine_line(mi)}\n"
            f"workdir: {b.work} ({human(free)} free, about {human(need)} needed)"
        )
        if free < need:
            print(f"WARNING: disk space is short: {human(free)} free, {human(need)} needed")
        for w in warnings:
            print(f"WARNING: {w}")
        b.check_code()
        b.load_before_start()
        b.run()
        b.results["wvc_source_hash_end"] = source_hash(code_root / "wvc")
        print(report(b.results, args))
        if args.json:
            Path(args.json).write_text(json.dumps(b.results, indent=1, default=str))
