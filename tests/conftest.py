"""Shared fixtures for the repository, integration and CLI tests.

Helpers are exposed as session-scoped fixtures that return plain functions, so
hypothesis tests (which refuse function-scoped fixtures) can use them too.
"""

from __future__ import annotations

import filecmp
import os
import socket
import subprocess
import sys
import tempfile
import uuid
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from wvc.demo import write_safetensors
from wvc.repository import Repository

FileSpec = Mapping[str, np.ndarray] | bytes | str
WriteCheckpoint = Callable[[Path, Mapping[str, FileSpec]], Path]
RunWvc = Callable[..., subprocess.CompletedProcess[str]]
AssertSameTree = Callable[[Path, Path], None]


def write_checkpoint(directory: Path, files: Mapping[str, FileSpec]) -> Path:
    """Write ``files`` under ``directory``: a dict of arrays becomes a safetensors
    file (written with wvc.demo.write_safetensors), bytes/str are written as is.
    Keys are relative paths and may contain '/'."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for rel, spec in files.items():
        path = directory / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(spec, bytes):
            path.write_bytes(spec)
        elif isinstance(spec, str):
            path.write_text(spec)
        else:
            write_safetensors(path, dict(spec))
    return directory


def tree_files(root: Path) -> list[str]:
    """Every regular file under ``root`` as sorted posix relative paths."""
    out = []
    for dirpath, _dirs, names in os.walk(root):
        for n in names:
            out.append(Path(dirpath, n).relative_to(root).as_posix())
    return sorted(out)


def assert_same_tree(expected: Path, actual: Path) -> None:
    """Same file names, and every file byte-identical."""
    exp, act = tree_files(expected), tree_files(actual)
    assert exp == act, f"file lists differ: {exp} != {act}"
    for rel in exp:
        assert filecmp.cmp(expected / rel, actual / rel, shallow=False), f"{rel} differs"


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("WVC_DEBUG", "WVC_DIR")}
    env.update(extra)
    return env


def run_wvc_subprocess(
    *args: Any,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    check: bool = False,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run the real ``wvc`` console entry point (``python -m wvc``) in ``cwd``."""
    proc = subprocess.run(
        [sys.executable, "-m", "wvc", *map(str, args)],
        cwd=cwd,
        env=clean_env(**(env or {})),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"wvc {args} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc


def popen_wvc(*args: Any, cwd: Path, **kwargs: Any) -> subprocess.Popen[bytes]:
    """Start the real ``wvc`` in the background (output captured)."""
    return subprocess.Popen(
        [sys.executable, "-m", "wvc", *map(str, args)],
        cwd=cwd,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **kwargs,
    )


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Repository]:
    """A fresh, empty repository at ``tmp_path/repo``."""
    r = Repository.init(tmp_path / "repo")
    try:
        yield r
    finally:
        r.close()


@pytest.fixture(scope="session")
def write_ckpt() -> WriteCheckpoint:
    return write_checkpoint


@pytest.fixture(scope="session")
def run_wvc() -> RunWvc:
    return run_wvc_subprocess


@pytest.fixture(scope="session")
def start_wvc() -> Callable[..., subprocess.Popen[bytes]]:
    return popen_wvc


@pytest.fixture(scope="session")
def same_tree() -> AssertSameTree:
    return assert_same_tree


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> np.random.Generator:
    """A generator seeded from the test's name: reproducible, different per test."""
    seed = zlib.crc32(request.node.nodeid.encode())
    return np.random.default_rng(seed)


# --- remotes: a real S3 HTTP endpoint (moto's server on loopback) ------------------------


@dataclass(frozen=True)
class S3Endpoint:
    """moto's standalone S3 server on 127.0.0.1, reached through s3fs."""

    url: str  # http://127.0.0.1:PORT

    @property
    def options(self) -> dict[str, str]:
        return {"endpoint_url": self.url}

    def new_bucket(self) -> str:
        """A fresh, empty bucket; returns its name."""
        import s3fs

        name = f"wvc-{uuid.uuid4().hex[:12]}"
        s3fs.S3FileSystem(endpoint_url=self.url, skip_instance_cache=True).mkdir(name)
        return name


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[S3Endpoint]:
    """One moto S3 server for the session; credentials are dummy environment variables."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    saved = {k: os.environ.get(k) for k in _AWS_ENV}
    os.environ.update(_AWS_ENV)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield S3Endpoint(f"http://127.0.0.1:{port}")
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass(frozen=True)
class RemoteSpot:
    """Where a test remote lives: its URL and the storage options to reach it."""

    kind: str  # "dir", "memory" or "s3"
    url: str
    options: dict[str, str]


def small_model(rng: np.random.Generator, n: int = 4, size: int = 128) -> dict[str, np.ndarray]:
    """``n`` float32 tensors ``layers.I.w`` of ``size`` x ``size``."""
    return {f"layers.{i}.w": rng.standard_normal((size, size)).astype(np.float32) for i in range(n)}


def repo_with_history(tmp_path: Path, rng: np.random.Generator) -> tuple[Repository, Path]:
    """A repository at ``tmp_path/a`` with two commits of ``tmp_path/ck`` (layer 1 changed)."""
    repo = Repository.init(tmp_path / "a")
    ck = tmp_path / "ck"
    tensors = small_model(rng)
    write_checkpoint(ck, {"model.safetensors": tensors, "config.json": '{"d": 128}'})
    repo.commit(ck, "one", {"step": 1})
    tensors["layers.1.w"] = tensors["layers.1.w"] + 1
    write_checkpoint(ck, {"model.safetensors": tensors})
    repo.commit(ck, "two", {"step": 2})
    return repo, ck


@pytest.fixture(params=["dir", "memory", "s3"])
def remote_spot(request: pytest.FixtureRequest, tmp_path: Path) -> RemoteSpot:
    """A fresh, empty remote location of each kind: a directory, memory://, and S3 (moto)."""
    kind = request.param
    if kind == "dir":
        return RemoteSpot(kind, str(tmp_path / "remote"), {})
    if kind == "memory":
        return RemoteSpot(kind, f"memory://wvc-tests/{uuid.uuid4().hex}", {})
    endpoint: S3Endpoint = request.getfixturevalue("s3_endpoint")
    return RemoteSpot(kind, f"s3://{endpoint.new_bucket()}/models/m", endpoint.options)


# --- small tensors and fast scratch directories (delta-chain, gc and stat-cache tests) -------

FAST_TMP = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


@pytest.fixture
def work() -> Iterator[Path]:
    """A fresh directory, on tmpfs if possible (fsync-heavy tests run 4x faster there)."""
    with tempfile.TemporaryDirectory(dir=FAST_TMP) as d:
        yield Path(d)


def random_tensor(rng: np.random.Generator, dtype: Any, shape: tuple[int, ...]) -> Any:
    """Incompressible-ish content: full-range integers or standard normal floats."""
    if dtype == np.int32:
        return rng.integers(-(2**31), 2**31, size=shape, dtype=np.int32)
    return rng.standard_normal(shape).astype(dtype)


def flip_bits(rng: np.random.Generator, a: np.ndarray, k: int) -> np.ndarray:
    """A copy of ``a`` with one low bit flipped in ``k`` distinct elements (always differs)."""
    b = np.ascontiguousarray(a).copy()
    raw = b.reshape(-1).view(np.uint8)
    idx = rng.choice(a.size, size=min(k, a.size), replace=False)
    raw[idx * a.itemsize] ^= np.uint8(1 << int(rng.integers(0, 8)))
    return b


def assert_bit_exact(actual: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray]) -> None:
    """Same names, dtypes, shapes and bytes."""
    assert sorted(actual) == sorted(expected)
    for name, want in expected.items():
        got = actual[name]
        assert got.dtype == want.dtype and got.shape == want.shape, name
        assert np.ascontiguousarray(got).tobytes() == np.ascontiguousarray(want).tobytes(), name
