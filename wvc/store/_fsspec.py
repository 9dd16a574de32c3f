"""A :class:`Store` on any filesystem fsspec reaches (S3, GCS, Azure, SSH, memory, ...).

Keys are ``/``-separated paths under a root. Values are written so that a
reader never sees part of one: object stores (S3, GCS, Azure, memory) replace
an object atomically on upload; on other filesystems the value is written to
``tmp/`` under the root and then moved into place. S3 refs are swapped with
conditional writes (``If-Match`` / ``If-None-Match``); other backends use a
lock object with a lease (:mod:`._lease`).
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

from ..errors import StoreConflictError
from ._base import Store
from ._lease import LEASE_S, lease_lock

# Filesystems whose single upload is atomic: a reader sees the old value or the new one.
ATOMIC_UPLOAD = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "memory"})
# One process-wide lock makes "create if absent" atomic between threads on
# filesystems that check and then create (memory://).
_CREATE_LOCK = threading.Lock()


def _protocol(fs: Any) -> str:
    proto = fs.protocol
    return str(proto[0] if isinstance(proto, tuple | list) else proto)


class FsspecStore(Store):
    """Values as files under ``root`` on the fsspec filesystem ``fs``."""

    def __init__(self, fs: Any, root: str) -> None:
        self.fs = fs
        self.root = root.rstrip("/")
        self.protocol = _protocol(fs)
        self.atomic_upload = self.protocol in ATOMIC_UPLOAD
        self.swap_guarantee = (
            f"best effort (lock object with a {LEASE_S:.0f} s lease; the create is "
            f"{'atomic' if self.protocol == 'memory' else 'not atomic'} on {self.protocol})"
        )

    def _path(self, key: str) -> str:
        if not key or key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"invalid store key {key!r}")
        return f"{self.root}/{key}" if self.root else key

    def _is_file(self, path: str) -> bool:
        try:
            info = self.fs.info(path)
        except (FileNotFoundError, NotADirectoryError):
            return False
        return bool(info.get("type") == "file")

    def get(self, key: str) -> bytes:
        try:
            return bytes(self.fs.cat_file(self._path(key)))
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise KeyError(key) from None

    def get_prefix(self, key: str, length: int) -> bytes:
        path = self._path(key)
        if length <= 0:
            if not self._is_file(path):
                raise KeyError(key)
            return b""
        try:
            return bytes(self.fs.cat_file(path, start=0, end=length))
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise KeyError(key) from None
        except OSError:
            # S3 answers a range request on an empty object with 416 InvalidRange.
            if self.size(key) == 0:
                return b""
            raise

    def put(self, key: str, data: bytes | memoryview) -> None:
        self.put_parts(key, [data])

    def put_parts(self, key: str, parts: Sequence[bytes | memoryview]) -> None:
        path = self._path(key)
        if self._is_file(path):
            return
        data = b"".join(parts)
        self._write(path, data)

    def _write(self, path: str, data: bytes) -> None:
        if self.atomic_upload:
            self.fs.pipe_file(path, data)
            return
        tmp = self._path(f"tmp/{uuid.uuid4().hex}.tmp")
        self._makedirs(tmp)
        self.fs.pipe_file(tmp, data)
        try:
            self._makedirs(path)
            self.fs.mv(tmp, path)
        except BaseException:
            self.fs.rm_file(tmp)
            raise

    def _makedirs(self, path: str) -> None:
        """Create the parent directories of ``path`` (filesystems with real directories)."""
        if not self.atomic_upload:
            self.fs.makedirs(path.rpartition("/")[0], exist_ok=True)

    def exists(self, key: str) -> bool:
        return self._is_file(self._path(key))

    def size(self, key: str) -> int:
        try:
            info = self.fs.info(self._path(key))
        except (FileNotFoundError, NotADirectoryError):
            raise KeyError(key) from None
        if info.get("type") != "file":
            raise KeyError(key)
        return int(info["size"])

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self._path(key))

    def list_prefix(self, prefix: str) -> Iterator[str]:
        self.fs.invalidate_cache()
        directory = prefix.rpartition("/")[0] if "/" in prefix else ""
        base = self._path(directory) if directory else self.root
        try:
            found = self.fs.find(base) if base else self.fs.find("")
        except FileNotFoundError:
            return iter(())
        keys = (self._relative(p) for p in found)
        return (k for k in keys if k and k.startswith(prefix))

    def _relative(self, path: str) -> str:
        root = self.root.strip("/")
        path = path.strip("/")
        if not root:
            return path
        return path[len(root) + 1 :] if path.startswith(root + "/") else ""

    # --- refs ------------------------------------------------------------------------

    def swap(self, key: str, expected: bytes | None, new: bytes) -> None:
        path = self._path(key)
        lock = path + ".lock"

        self._makedirs(lock)

        def create(payload: bytes) -> bool:
            with _CREATE_LOCK:
                try:
                    self.fs.pipe_file(lock, payload, mode="create")
                except FileExistsError:
                    return False
            return True

        def read() -> bytes | None:
            try:
                return bytes(self.fs.cat_file(lock))
            except FileNotFoundError:
                return None

        def remove_if(payload: bytes) -> None:
            # Compare and delete: atomic between this process's threads, best effort
            # between processes (the read and the delete are two requests).
            with _CREATE_LOCK:
                if read() == payload:
                    with contextlib.suppress(FileNotFoundError):
                        self.fs.rm_file(lock)

        with lease_lock(key, create, read, remove_if):
            current = self._read_current(path)
            if current != expected:
                raise StoreConflictError(key, current)
            self._write_ref(path, new)

    def _read_current(self, path: str) -> bytes | None:
        try:
            return bytes(self.fs.cat_file(path))
        except FileNotFoundError:
            return None

    def _write_ref(self, path: str, data: bytes) -> None:
        if self.atomic_upload:
            self.fs.pipe_file(path, data)
            return
        tmp = self._path(f"tmp/{uuid.uuid4().hex}.tmp")
        self._makedirs(tmp)
        self.fs.pipe_file(tmp, data)
        self._makedirs(path)
        try:
            self.fs.mv(tmp, path)
        except OSError:
            if not self._is_file(path):
                raise
            # SFTP v3 renames do not replace: remove the old value (we hold the lock).
            self.fs.rm_file(path)
            self.fs.mv(tmp, path)


class S3Store(FsspecStore):
    """S3 (and S3-compatible storage that honours conditional writes): refs swap atomically."""

    swap_guarantee = "atomic (S3 conditional write: If-Match on the ETag, If-None-Match: *)"

    def __init__(self, fs: Any, root: str) -> None:
        super().__init__(fs, root)
        self.swap_guarantee = S3Store.swap_guarantee

    # One request per operation: s3fs's generic paths add a HEAD before a GET and a
    # LIST after a HEAD that finds nothing (to look for a "directory").

    def _is_file(self, path: str) -> bool:
        bucket, key, _ = self.fs.split_path(path)
        try:
            self.fs.call_s3("head_object", Bucket=bucket, Key=key)
        except FileNotFoundError:
            return False
        return True

    def get(self, key: str) -> bytes:
        try:
            return bytes(self.fs.cat_file(self._path(key), max_concurrency=1))
        except FileNotFoundError:
            raise KeyError(key) from None

    def put_parts(self, key: str, parts: Sequence[bytes | memoryview]) -> None:
        data = b"".join(parts)
        # Put-if-absent in one request: If-None-Match: * keeps an existing value.
        with contextlib.suppress(FileExistsError):
            self.fs.pipe_file(self._path(key), data, mode="create")

    def swap(self, key: str, expected: bytes | None, new: bytes) -> None:
        path = self._path(key)
        try:
            info = self.fs.info(path, refresh=True)
            etag: str | None = str(info["ETag"])
            current: bytes | None = bytes(self.fs.cat_file(path))
        except FileNotFoundError:
            etag, current = None, None
        if current != expected:
            raise StoreConflictError(key, current)
        # The condition makes the write fail if the ref changed since it was read, so a
        # value read between info and cat_file can only cause a spurious conflict.
        condition = {"IfMatch": etag} if etag is not None else {"IfNoneMatch": "*"}
        try:
            self.fs.pipe_file(path, new, **condition)
        except FileNotFoundError:  # deleted since it was read: If-Match has nothing to match
            raise StoreConflictError(key, None) from None
        except Exception as e:  # s3fs maps HTTP 412/409 to assorted OSErrors
            if _is_precondition_failure(e):
                raise StoreConflictError(key, None) from None
            raise
        finally:
            self.fs.invalidate_cache(path)


def _is_precondition_failure(e: BaseException) -> bool:
    seen: BaseException | None = e
    while seen is not None:
        if isinstance(seen, FileExistsError):
            return True
        response = getattr(seen, "response", None)  # botocore ClientError
        if isinstance(response, dict):
            code = str(response.get("Error", {}).get("Code", ""))
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (
                409,
                412,
            ):
                return True
        seen = seen.__cause__ or seen.__context__
    return False
