"""Running writers, announced to ``wvc gc``.

Each operation that stores objects before a ref names them (commit, apply,
fetch) holds an exclusive ``flock`` on a file of its own in ``.wvc/running/``
for as long as it runs; the file holds its start time. ``wvc gc`` spares every
object modified after the start of the oldest live writer; a file whose lock
can be taken belongs to a process that died, and is removed.
docs/design.md, "Garbage collection".
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

RUNNING_DIR = "running"


@contextlib.contextmanager
def running(repo_dir: Path) -> Iterator[None]:
    """Announce a writer for the duration of the block."""
    d = repo_dir / RUNNING_DIR
    d.mkdir(exist_ok=True)
    name = f"{os.getpid()}-{uuid.uuid4().hex}"
    # Locked and filled in under a hidden name, then renamed: gc never sees it unlocked.
    hidden, path = d / ("." + name), d / name
    fd = os.open(hidden, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, repr(time.time()).encode())
        os.rename(hidden, path)
        yield
    finally:
        for p in (path, hidden):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        os.close(fd)


def oldest_running(repo_dir: Path) -> float | None:
    """Start time of the oldest live writer (None if none); removes dead writers' files."""
    d = repo_dir / RUNNING_DIR
    oldest: float | None = None
    try:
        entries = list(d.iterdir())
    except FileNotFoundError:
        return None
    for path in entries:
        if path.name.startswith("."):
            continue
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:  # held: a live writer
                try:
                    started = float(os.pread(fd, 64, 0).decode())
                except ValueError:
                    started = 0.0  # unreadable: spare everything
                oldest = started if oldest is None else min(oldest, started)
                continue
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # its process died (the kernel released the lock)
        finally:
            os.close(fd)
    return oldest
