"""Immutable, content-addressed objects on top of a :class:`~wvc.store.Store`.

An object's id is the blake3 hash (hex) of its *raw* bytes: a chunk's bytes,
or the canonical JSON of a manifest or commit. On disk each object is a
48-byte header followed by the codec's payload (docs/design.md, "Objects").
Every read decodes and re-hashes; a mismatch raises CorruptObjectError.

A *delta object* names a base object in its header; its payload decodes to
the XOR of its raw bytes with the base's (docs/design.md, "Delta objects").
Reading one decodes its whole chain down to a standalone *keyframe*: the
chain's byte planes are XORed together in planar form and interleaved once,
and the result is verified against the id. Only when that check fails is each
level verified on its own, to name the object at fault.
"""

from __future__ import annotations

import enum
import os
import re
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import blake3
import numpy as np

from .codecs import Buffer, Codec, CodecId, get_codec
from .codecs._base import CodecError
from .codecs._bytegroup import decode_planes
from .errors import BrokenChainError, CorruptObjectError, IntegrityError, MissingObjectError
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
# Readers refuse delta chains longer than this (objects read for one chunk).
MAX_CHAIN_READ = 64
# Writers keep chains at most this long: a keyframe every DEFAULT_MAX_CHAIN
# versions of a chunk (chosen by measurement, docs/benchmarks.md "Storage").
DEFAULT_MAX_CHAIN = 4
# A delta is kept only if it is at most this fraction of the chunk stored alone ...
DELTA_WORTH = 0.9
# ... which is not encoded at all when the delta is at most this fraction of its keyframe.
DELTA_SURE = 0.75


def default_max_chain() -> int:
    """The writer's chain bound: ``WVC_MAX_CHAIN`` if set (1 turns deltas off), else the default."""
    text = os.environ.get("WVC_MAX_CHAIN", "")
    if text.isdigit() and 1 <= int(text) <= MAX_CHAIN_READ:
        return int(text)
    return DEFAULT_MAX_CHAIN


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
    base: str | None = None  # set when the object is stored as a delta against ``base``


@dataclass(frozen=True)
class _Level:
    """One object of a delta chain, read but not yet decoded."""

    id: str
    header: ObjectHeader
    blob: memoryview


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

    def __init__(
        self, store: Store, fallback: Fallback | None = None, max_chain: int | None = None
    ) -> None:
        self.store = store
        self.fallback = fallback
        self.max_chain = max_chain if max_chain is not None else default_max_chain()
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
        base: str | None = None,
    ) -> PutResult:
        """Store ``data`` if no object with its id exists; hash first, encode only if new.

        With ``base`` (an object holding an earlier version of the same bytes),
        the new object is stored as a delta against it when that is clearly
        smaller than storing it alone and the chain stays within
        ``max_chain``. Two threads putting the same bytes at once encode and
        write them once: the second waits for the first and reports
        ``new=False``. An object found already stored is touched, so that a
        concurrent ``wvc gc`` spares it.
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
                self.store.touch(key)
                header, size = self.read_header(oid)
                return PutResult(oid, len(view), size, header.codec, False, header.base)
            with self._lock:
                if oid in self._in_flight:
                    continue
                in_flight = self._in_flight[oid] = threading.Event()
            break
        try:
            parts, delta_base = self._encode(view, kind, codec, param, base, oid)
            self.store.put_parts(key, parts)
        finally:
            with self._lock:
                del self._in_flight[oid]
            in_flight.set()
        stored = sum(len(p) for p in parts)
        return PutResult(oid, len(view), stored, CodecId(parts[0][6]), True, delta_base)

    def _encode(
        self,
        view: memoryview,
        kind: ObjectKind,
        codec: Codec,
        param: int,
        base: str | None,
        oid: str,
    ) -> tuple[list[Buffer], str | None]:
        """The object file's pieces, as a delta against ``base`` when that pays; and the base.

        A delta is kept if it is at most DELTA_WORTH of the chunk encoded
        alone. Encoding it alone too costs as much as the delta, so when the
        delta is at most DELTA_SURE of its chain's keyframe (the same tensor
        stored alone a few versions ago: a close estimate) that second
        encoding is skipped.
        """
        delta = None
        if base is not None and base != oid and self.max_chain > 1:
            delta = self._encode_delta(view, kind, codec, param, base)
        if delta is not None:
            parts, keyframe_size = delta
            if _payload_size(parts) <= DELTA_SURE * keyframe_size:
                return parts, base
        alone = self.encode_parts(view, kind, codec, param)
        if delta is not None and _payload_size(delta[0]) <= DELTA_WORTH * _payload_size(alone):
            return delta[0], base
        return alone, None

    def _encode_delta(
        self, view: memoryview, kind: ObjectKind, codec: Codec, param: int, base: str
    ) -> tuple[list[Buffer], int] | None:
        """The delta object's pieces and its chain keyframe's payload size; None if impossible.

        No delta against a base that is absent, damaged, of another length, or
        whose chain already has ``max_chain`` objects (the new object becomes
        a keyframe).
        """
        try:
            levels = self._chain(base, None)
            if len(levels) >= self.max_chain or levels[0].header.raw_length != len(view):
                return None
            base_raw = self._combine(levels, None)
        except IntegrityError:
            return None
        xor = np.bitwise_xor(
            np.frombuffer(view, dtype=np.uint8), np.frombuffer(base_raw, dtype=np.uint8)
        )
        payload = codec.encode_parts(xor.data, param)
        if sum(len(p) for p in payload) >= len(view):
            return None  # never stored larger than raw
        header = ObjectHeader(kind, codec.codec_id, len(view), base).pack()
        return [header, *payload], len(levels[-1].blob) - HEADER_SIZE

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
        return self.decode(object_id, self._blob(object_id, context), context)

    def _blob(self, object_id: str, context: str | None) -> bytes:
        """The object file's bytes: from the store, or fetched from the fallback and kept.

        A fetched object is verified (its chain decoded, bases fetched as
        needed) before it is stored.
        """
        key = object_key(object_id)
        try:
            return self.store.get(key)
        except KeyError:
            pass
        fallback = self.fallback
        fetched = fallback.fetch(object_id) if fallback is not None else None
        if fallback is None or fetched is None:
            raise MissingObjectError(object_id, context) from None
        # Verified like any read; its bases were each verified as they were fetched.
        self.decode(object_id, fetched, context)
        self.store.put(key, fetched)
        fallback.kept(object_id, fetched)
        return fetched

    def read_chain(self, object_id: str) -> list[str]:
        """The ids of an object's delta chain, the object first, its keyframe last."""
        return [lv.id for lv in self._chain(object_id, None)]

    def _chain(
        self, object_id: str, context: str | None, blob: bytes | None = None
    ) -> list[_Level]:
        """Read an object and its bases down to the keyframe (top first), decoding nothing."""
        if blob is None:
            blob = self._blob(object_id, context)
        levels = [_Level(object_id, self._header(object_id, blob, context), memoryview(blob))]
        seen = {object_id}
        while (base := levels[-1].header.base) is not None:
            below = levels[-1].id
            if base in seen or len(levels) >= MAX_CHAIN_READ:
                raise CorruptObjectError(
                    object_id, f"delta chain is cyclic or longer than {MAX_CHAIN_READ}", context
                )
            seen.add(base)
            try:
                base_blob = self._blob(base, f"delta {below}")
                header = ObjectHeader.unpack(base_blob, base)
            except MissingObjectError:
                raise BrokenChainError(object_id, base, "is missing", context) from None
            except CorruptObjectError as e:
                raise BrokenChainError(
                    object_id, base, f"is corrupt: {e.problem}", context
                ) from None
            if header.raw_length != levels[0].header.raw_length:
                raise BrokenChainError(object_id, base, "has another length", context)
            levels.append(_Level(base, header, memoryview(base_blob)))
        return levels

    @staticmethod
    def _header(object_id: str, blob: bytes | memoryview, context: str | None) -> ObjectHeader:
        try:
            return ObjectHeader.unpack(blob, object_id)
        except CorruptObjectError as e:
            raise CorruptObjectError(object_id, e.problem, context) from None

    def decode(
        self,
        object_id: str,
        blob: bytes,
        context: str | None = None,
    ) -> Buffer:
        """Decode an object file's bytes (and its delta chain) and verify them against the id.

        Bases are read from this store (a base fetched from the fallback is
        verified on its own first, so a remote cannot pair a forged base with a
        delta that cancels it out).
        """
        view = memoryview(blob)
        header = self._header(object_id, view, context)
        if header.base is None:
            raw = self._decode_payload(_Level(object_id, header, view), object_id, context)
            if hash_bytes(raw) != object_id:
                raise CorruptObjectError(object_id, "content does not match its id", context)
            return raw
        return self._combine(self._chain(object_id, context, blob), context)

    @staticmethod
    def _decode_payload(level: _Level, top: str, context: str | None) -> Buffer:
        try:
            return get_codec(level.header.codec).decode(
                level.blob[HEADER_SIZE:], level.header.raw_length
            )
        except CodecError as e:
            raise _level_error(level, top, str(e), context) from None

    def _combine(self, levels: list[_Level], context: str | None) -> Buffer:
        """XOR a chain's decoded payloads together (planar), interleave once, verify the top id."""
        top = levels[0].id
        if len(levels) == 1:
            raw = self._decode_payload(levels[0], top, context)
        else:
            raw = _xor_levels(levels, top, context)
        if hash_bytes(raw) != top:
            self._diagnose(levels, context)
        return raw

    def _diagnose(self, levels: list[_Level], context: str | None) -> None:
        """Find the level of a chain at fault (bottom up) and raise naming it."""
        top = levels[0].id
        acc: np.ndarray | None = None
        for level in reversed(levels):
            raw = np.frombuffer(self._decode_payload(level, top, context), dtype=np.uint8)
            acc = raw.copy() if acc is None else np.bitwise_xor(acc, raw)
            if hash_bytes(acc.data) != level.id:
                raise _level_error(level, top, "content does not match its id", context)
        raise CorruptObjectError(top, "content does not match its id", context)  # not reached

    def iter_ids(self) -> Iterator[str]:
        for key in self.store.list_prefix(""):
            oid = key.replace("/", "")
            if len(key) == 65 and key[2] == "/" and is_object_id(oid):
                yield oid

    def flush(self) -> None:
        self.store.flush()


def _level_error(level: _Level, top: str, problem: str, context: str | None) -> CorruptObjectError:
    """The error for a damaged level of ``top``'s chain: the object itself, or its base."""
    if level.id == top:
        return CorruptObjectError(top, problem, context)
    return BrokenChainError(top, level.id, f"is corrupt: {problem}", context)


def _payload_size(parts: list[Buffer]) -> int:
    return sum(len(p) for p in parts) - HEADER_SIZE


def _xor_levels(levels: list[_Level], top: str, context: str | None) -> memoryview:
    """The raw bytes of a delta chain: every level's payload XORed together.

    Byte-grouped levels are combined as byte planes (XOR commutes with byte
    grouping), so the chain is interleaved once instead of once per level.
    Levels stored otherwise (raw, zstd, another width) are grouped first.
    """
    raw_length = levels[0].header.raw_length
    width = 1
    for level in levels:
        if level.header.codec == CodecId.BYTEGROUP_ZSTD and len(level.blob) > HEADER_SIZE:
            width = level.blob[HEADER_SIZE]
            break
    width = width if 2 <= width <= 16 else 1
    n = raw_length // width
    acc = np.empty(raw_length, dtype=np.uint8)
    acc_planes = acc[: n * width].reshape(width, n)
    acc_tail = acc[n * width :]
    first = True
    for level in reversed(levels):
        planes, tail = _level_planes(level, width, top, context)
        for k in range(width):
            if first:
                acc_planes[k] = planes[k]
            else:
                np.bitwise_xor(acc_planes[k], planes[k], out=acc_planes[k])
        if len(acc_tail):
            t = np.frombuffer(tail, dtype=np.uint8)
            if first:
                acc_tail[:] = t
            else:
                np.bitwise_xor(acc_tail, t, out=acc_tail)
        first = False
    if width == 1:
        return acc.data
    body = np.stack(list(acc_planes), axis=1).reshape(-1)  # measured fastest interleave
    if not len(acc_tail):
        return body.data
    return np.concatenate([body, acc_tail]).data


def _level_planes(
    level: _Level, width: int, top: str, context: str | None
) -> tuple[list[np.ndarray], Buffer]:
    """One level's decoded bytes as ``width`` byte planes and a tail."""
    header = level.header
    payload = level.blob[HEADER_SIZE:]
    if (
        width > 1
        and header.codec == CodecId.BYTEGROUP_ZSTD
        and len(payload)
        and payload[0] == width
    ):
        try:
            _, planes, tail = decode_planes(payload, header.raw_length)
        except CodecError as e:
            raise _level_error(level, top, str(e), context) from None
        return planes, tail
    raw = np.frombuffer(ObjectStore._decode_payload(level, top, context), dtype=np.uint8)
    n = header.raw_length // width
    grouped = raw[: n * width].reshape(n, width).T
    return [grouped[k] for k in range(width)], raw[n * width :].data
