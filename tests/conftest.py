"""Shared fixtures for the repository, integration and CLI tests.

Helpers are exposed as session-scoped fixtures that return plain functions, so
hypothesis tests (which refuse function-scoped fixtures) can use them too.
"""

from __future__ import annotations

import filecmp
import os
import subprocess
import sys
import zlib
from collections.abc import Callable, Iterator, Mapping
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
