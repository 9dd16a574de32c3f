from __future__ import annotations

import abc
from collections.abc import Iterator, Sequence


class Store(abc.ABC):
    """Immutable values under string keys.

    ``put`` of an existing key is a no-op success when the value is the same
    (content addressing makes that the only case that occurs); readers never
    observe a partially written value.
    """

    supports_writes: bool = True
    #: How :meth:`swap` is made atomic, in words for docs and ``wvc remote list``.
    swap_guarantee: str = "atomic"

    @abc.abstractmethod
    def get(self, key: str) -> bytes:
        """The whole value; raises KeyError if absent."""

    @abc.abstractmethod
    def get_prefix(self, key: str, length: int) -> bytes:
        """At most the first ``length`` bytes of the value; raises KeyError if absent."""

    @abc.abstractmethod
    def put(self, key: str, data: bytes | memoryview) -> None:
        """Store ``data`` under ``key`` atomically."""

    def put_parts(self, key: str, parts: Sequence[bytes | memoryview]) -> None:
        """Store the concatenation of ``parts`` under ``key`` atomically."""
        self.put(key, b"".join(parts))

    @abc.abstractmethod
    def exists(self, key: str) -> bool: ...

    @abc.abstractmethod
    def size(self, key: str) -> int:
        """Byte length of the value; raises KeyError if absent."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key`` if present."""

    @abc.abstractmethod
    def list_prefix(self, prefix: str) -> Iterator[str]:
        """Every key that starts with ``prefix`` (no particular order)."""

    @abc.abstractmethod
    def swap(self, key: str, expected: bytes | None, new: bytes) -> None:
        """Set a small *mutable* value (a ref) to ``new`` if it currently is ``expected``.

        ``expected=None`` means the key must be absent. Raises
        :class:`~wvc.errors.StoreConflictError` when the value is something else,
        and changes nothing then. This is the only operation that overwrites a
        value; content-addressed keys are never swapped.
        """

    def make_durable(self, key: str) -> None:  # noqa: B027 - optional hook, default no-op
        """Have the next :meth:`flush` make ``key`` durable even if another writer stored it."""

    def touch(self, key: str) -> None:  # noqa: B027 - optional hook, default no-op
        """Mark ``key`` as just used (its modification time), so ``wvc gc`` spares it."""

    def flush(self) -> None:  # noqa: B027 - optional hook, default no-op
        """Make every completed ``put`` durable (fsync of directories for local stores)."""
