"""Immutable, content-addressed objects on top of a :class:`~wvc.store.Store`.

An object's id is the blake3 hash (hex) of its *raw* bytes: a chunk's bytes,
or the canonical JSON of a manifest or commit. On disk each object is a
48-byte header followed by the codec's payload (docs/design.md, "Objects").
Every read decodes and re-hashes; a mismatch raises CorruptObjectError.
"""

from __future__ import annotations

import enum
import re
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import blake3

from .codecs import Buffer, Codec, CodecId, get_codec
from .codecs._base import CodecError
from .errors import CorruptObjectError, MissingObjectError
from .store import Store

MAGIC = b"WVCO"
OBJECT_VERSION = 1
HEADER = struct.Struct("<4sBBBBQ32s")
HEADER_SIZE = HEADER.size  # 48 bytes
ZERO_ID = b"\0" * 32
_HEX64 = re.compile(r"[0-9a-f]{64}")
# Refuse to decode objects that claim more raw bytes than this (a chunk is at
# most the chunk size; manifests of huge checkpoints stay far below it).
MAX_RAW_LENGTH = 1 << 31


class ObjectKind(enum.IntEnum):
    """A hint in the header of what an object holds; the id never depends on it."""

    CHUNK = 0
    MANIFEST = 1
    TREE = 2
    COMMIT = 3


def hash_bytes(data: bytes | memoryview) -> str:
    return blake3.blake3(data).hexdigest()


def is_object_id(text: str) -> bool:
    return bool(_HEX64.fullmatch(text))


@dataclass(frozen=True)
class ObjectHeader:
    kind: ObjectKind
    codec: CodecId
    raw_length: int
    base: str | None

    def pack(self) -> bytes:
        base = bytes.fromhex(self.base) if self.base else ZERO_ID
        flags = 1 if self.base else 0
        return HEADER.pack(
            MAGIC, OBJECT_VERSION, self.kind, self.codec, flags, self.raw_length, base
        )

    @classmethod
    def unpack(cls, data: bytes | memoryview, object_id: str) -> ObjectHeader:
        if len(data) < HEADER_SIZE:
            raise CorruptObjectError(object_id, "truncated header")
        magic, version, kind, codec, flags, raw_length, base = HEADER.unpack_from(data, 0)
        if magic != MAGIC:
            raise CorruptObjectError(object_id, "bad magic")
        if version != OBJECT_VERSION:
            raise CorruptObjectError(object_id, f"unknown object version {version}")
        try:
            kind_e = ObjectKind(kind)
            codec_e = CodecId(codec)
        except ValueError:
            raise CorruptObjectError(object_id, f"unknown kind {kind} or codec {codec}") from None
        if flags & ~1:
            raise CorruptObjectError(object_id, f"unknown flags {flags:#x}")
        if not flags & 1 and base != ZERO_ID:
            raise CorruptObjectError(object_id, "base id set without its flag")
        if raw_length > MAX_RAW_LENGTH:
            raise CorruptObjectError(object_id, f"raw length {raw_length} exceeds the limit")
        return cls(kind_e, codec_e, raw_length, base.hex() if flags & 1 else None)


@dataclass(frozen=True)
class PutResult:
    """What storing one object did."""

    id: str
    raw_size: int
    stored_size: int
    codec: CodecId
    new: bool


def object_key(object_id: str) -> str:
    return f"{object_id[:2]}/{object_id[2:]}"


class Fallback(Protocol):
    """Where objects the store lacks come from (a remote a partial fetch left them on)."""

    def fetch(self, object_id: str) -> bytes | None:
        """The object file's bytes, or None if it is not there either."""

    def kept(self, object_id: str, blob: bytes) -> None:
        """Called once a fetched object is verified and stored."""


class ObjectStore:
    """Encodes, stores, reads and verifies objects. Thread-safe.

    ``fallback`` (set for repositories made by a partial fetch) supplies
    objects the store lacks, from the remote they were left on: they are
    verified like any other read, then kept.
    """

    def __init__(self, store: Store, fallback: Fallback | None = None) -> None:
        self.store = store
        self.fallback = fallback
        self._lock = threading.Lock()
        self._in_flight: dict[str, threading.Event] = {}

    def has(self, object_id: str) -> bool:
        return self.store.exists(object_key(object_id))

    def put(
        self,
        data: bytes | memoryview,
        kind: ObjectKind,
        codec: Codec,
        param: int = 0,
    ) -> PutResult:
        """Store ``data`` if no object with its id exists; hash first, encode only if new.

        Two threads putting the same bytes at once encode and write them once:
        the second waits for the first and reports ``new=False``.
        """
        view = memoryview(data)
        oid = hash_bytes(view)
        key = object_key(oid)
        while True:
            with self._lock:
                in_flight = self._in_flight.get(oid)
            if in_flight is not None:
                in_flight.wait()  # then look again: the writer may have failed
                continue
            if self.store.exists(key):
                # Someone else's write: make sure it is durable before we reference it.
                self.store.make_durable(key)
                header, size = self.read_header(oid)
                return PutResult(oid, len(view), size, header.codec, False)
            with self._lock:
                if oid in self._in_flight:
                    continue
                in_flight = self._in_flight[oid] = threading.Event()
            break
        try:
            parts = self.encode_parts(view, kind, codec, param)
            self.store.put_parts(key, parts)
        finally:
            with self._lock:
                del self._in_flight[oid]
            in_flight.set()
        return PutResult(oid, len(view), sum(len(p) for p in parts), CodecId(parts[0][6]), True)

    @staticmethod
    def encode_parts(
        view: memoryview, kind: ObjectKind, codec: Codec, param: int = 0
    ) -> list[Buffer]:
        """Header + payload pieces; raw when the codec does not shrink the data."""
        payload: list[Buffer] = codec.encode_parts(view, param) if len(view) else []
        codec_id = codec.codec_id
        if sum(len(p) for p in payload) >= len(view):
            payload, codec_id = [view], CodecId.RAW
        return [ObjectHeader(kind, codec_id, len(view), None).pack(), *payload]

    @classmethod
    def encode(cls, view: memoryview, kind: ObjectKind, codec: Codec, param: int = 0) -> bytes:
        """The whole object file's bytes."""
        return b"".join(cls.encode_parts(view, kind, codec, param))

    def read_header(self, object_id: str) -> tuple[ObjectHeader, int]:
        """The header and total stored size of an object, without decoding it."""
        key = object_key(object_id)
        try:
            head = self.store.get_prefix(key, HEADER_SIZE)
            size = self.store.size(key)
        except KeyError:
            raise MissingObjectError(object_id) from None
        return ObjectHeader.unpack(head, object_id), size

    def get(self, object_id: str, context: str | None = None) -> Buffer:
        """The raw bytes of an object, verified against its id (possibly a read-only view)."""
        key = object_key(object_id)
        try:
            blob = self.store.get(key)
        except KeyError:
            fallback = self.fallback
            fetched = fallback.fetch(object_id) if fallback is not None else None
            if fallback is None or fetched is None:
                raise MissingObjectError(object_id, context) from None
            raw = self.decode(object_id, fetched, context)
            self.store.put(key, fetched)
            fallback.kept(object_id, fetched)
            return raw
        return self.decode(object_id, blob, context)

    @staticmethod
    def decode(object_id: str, blob: bytes, context: str | None = None) -> Buffer:
        view = memoryview(blob)
        try:
            header = ObjectHeader.unpack(view, object_id)
        except CorruptObjectError as e:
            raise CorruptObjectError(object_id, e.problem, context) from None
        if header.base is not None:
            raise CorruptObjectError(object_id, "delta objects are not supported", context)
        try:
            raw = get_codec(header.codec).decode(view[HEADER_SIZE:], header.raw_length)
        except CodecError as e:
            raise CorruptObjectError(object_id, str(e), context) from None
        if hash_bytes(raw) != object_id:
            raise CorruptObjectError(object_id, "content does not match its id", context)
        return raw

    def iter_ids(self) -> Iterator[str]:
        for key in self.store.list_prefix(""):
            oid = key.replace("/", "")
            if len(key) == 65 and key[2] == "/" and is_object_id(oid):
                yield oid

    def flush(self) -> None:
        self.store.flush()
