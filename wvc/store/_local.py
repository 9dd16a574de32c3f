from __future__ import annotations

import fcntl
import os
import stat
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from urllib.parse import quote

from ..errors import StoreConflictError, StoreLockedError
from ._base import Store
from ._lease import WAIT_S


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def _file_lock(lock: Path, key: str) -> Iterator[None]:
    """An exclusive ``flock`` on ``lock`` (kept as an empty file), waiting up to WAIT_S.

    The kernel releases it when the holder's process dies, so a killed writer
    never leaves a lock to break; it works between threads too (each opens the
    file itself) and on NFS through the lock manager.
    """
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        start = time.monotonic()
        delay = 0.005
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                waited = time.monotonic() - start
                if waited > WAIT_S:
                    raise StoreLockedError(key, waited) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.2)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


class LocalStore(Store):
    swap_guarantee = "atomic between processes (flock on a lock file; released if the holder dies)"

    """Values as files under a directory; keys are relative paths with ``/``.

    Writes go to ``<root>/tmp/<random>``, are fsynced, then renamed into place,
    so a value is either absent or complete. Directories whose entries changed
    are fsynced by :meth:`flush`, which callers run before they publish a
    reference to the new values.
    """

    def __init__(self, root: str | os.PathLike[str], *, tmp_dir: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.tmp_dir = Path(tmp_dir)
        self._dirty: set[Path] = set()
        self._lock = threading.Lock()

    def _path(self, key: str) -> Path:
        if key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"invalid store key {key!r}")
        return self.root / key

    def get(self, key: str) -> bytes:
        try:
            with open(self._path(key), "rb") as f:
                return f.read()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise KeyError(key) from None

    def get_prefix(self, key: str, length: int) -> bytes:
        try:
            with open(self._path(key), "rb") as f:
                return f.read(length)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise KeyError(key) from None

    def put(self, key: str, data: bytes | memoryview) -> None:
        self.put_parts(key, [data])

    def put_parts(self, key: str, parts: Sequence[bytes | memoryview]) -> None:
        path = self._path(key)
        if path.is_file():
            return
        if path.is_dir():
            raise ValueError(f"store key {key!r} is a directory")
        parent = path.parent
        parent.mkdir(parents=True, exist_ok=True)
        tmp = self.tmp_dir / f"{uuid.uuid4().hex}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
        except FileNotFoundError:  # tmp/ removed by hand (a remote's, say): make it again
            self.tmp_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
        try:
            for part in parts:
                view = memoryview(part).cast("B")
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        os.close(fd)
        # Same content under the same name, so replacing a file that another
        # writer renamed in meanwhile changes nothing a reader can observe.
        os.replace(tmp, path)
        with self._lock:
            self._dirty.add(parent)
            self._dirty.add(parent.parent)

    def make_durable(self, key: str) -> None:
        # Another process may have renamed the file in without fsyncing its
        # directory yet; fsyncing it again is cheap when it is already clean.
        parent = self._path(key).parent
        with self._lock:
            self._dirty.add(parent)
            self._dirty.add(parent.parent)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def touch(self, key: str) -> None:
        with suppress(FileNotFoundError):
            os.utime(self._path(key))

    def mtime(self, key: str) -> float:
        """Modification time of a value (seconds); raises KeyError if absent."""
        try:
            return self._path(key).stat().st_mtime
        except (FileNotFoundError, NotADirectoryError):
            raise KeyError(key) from None

    def size(self, key: str) -> int:
        path = self._path(key)
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            raise KeyError(key) from None
        if not stat.S_ISREG(st.st_mode):
            raise KeyError(key)
        return st.st_size

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def list_prefix(self, prefix: str) -> Iterator[str]:
        # Walk only the directory the prefix names (refs/, not the whole object tree).
        base = self.root / prefix.rpartition("/")[0] if "/" in prefix else self.root
        self._path(prefix or ".")
        for dirpath, _dirnames, filenames in os.walk(base):
            rel = os.path.relpath(dirpath, self.root)
            rel = "" if rel == "." else rel.replace(os.sep, "/") + "/"
            for name in filenames:
                key = rel + name
                if key.startswith(prefix):
                    yield key

    def swap(self, key: str, expected: bytes | None, new: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Lock files live in tmp/locks/, never beside the values: a flock'd file is not
        # deleted (that would race with a waiter holding the old inode).
        locks = self.tmp_dir / "locks"
        locks.mkdir(parents=True, exist_ok=True)
        with _file_lock(locks / (quote(key, safe="") + ".lock"), key):
            try:
                current: bytes | None = path.read_bytes()
            except FileNotFoundError:
                current = None
            if current != expected:
                raise StoreConflictError(key, current)
            self.tmp_dir.mkdir(parents=True, exist_ok=True)
            tmp = self.tmp_dir / f"{uuid.uuid4().hex}.tmp"
            with open(tmp, "wb") as f:
                f.write(new)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            fsync_dir(path.parent)

    def remove_stale_temp(self, older_than_s: float) -> int:
        """Delete temporary files left by killed writers; returns how many were removed.

        A live writer renames its temporary file within seconds, so files older
        than ``older_than_s`` can only be leftovers.
        """
        cutoff = time.time() - older_than_s
        removed = 0
        if not self.tmp_dir.is_dir():
            return 0
        for entry in os.scandir(self.tmp_dir):
            try:
                if entry.is_file() and entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed += 1
            except FileNotFoundError:
                continue
        return removed

    def flush(self) -> None:
        with self._lock:
            dirty, self._dirty = self._dirty, set()
        for d in sorted(dirty):
            fsync_dir(d)
