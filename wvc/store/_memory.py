from __future__ import annotations

import threading
from collections.abc import Iterator

from ..errors import StoreConflictError
from ._base import Store


class MemoryStore(Store):
    """A dict in memory. Thread-safe."""

    def __init__(self) -> None:
        self._data: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> bytes:
        return self._data[key]

    def get_prefix(self, key: str, length: int) -> bytes:
        return self._data[key][:length]

    def put(self, key: str, data: bytes | memoryview) -> None:
        with self._lock:
            self._data.setdefault(key, bytes(data))

    def swap(self, key: str, expected: bytes | None, new: bytes) -> None:
        with self._lock:
            current = self._data.get(key)
            if current != expected:
                raise StoreConflictError(key, current)
            self._data[key] = bytes(new)

    def exists(self, key: str) -> bool:
        return key in self._data

    def size(self, key: str) -> int:
        return len(self._data[key])

    def delete(self, key: str) -> None:
        with self._lock:
            self._data.pop(key, None)

    def list_prefix(self, prefix: str) -> Iterator[str]:
        with self._lock:
            keys = list(self._data)
        return (k for k in keys if k.startswith(prefix))
