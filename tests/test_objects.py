"""wvc.objects: content-addressed objects with a 48-byte header and verified reads."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import blake3
import ml_dtypes
import numpy as np
import pytest

from wvc.codecs import CodecId, get_codec
from wvc.errors import CorruptObjectError, IntegrityError, MissingObjectError
from wvc.objects import (
    HEADER_SIZE,
    MAGIC,
    MAX_RAW_LENGTH,
    ObjectHeader,
    ObjectKind,
    ObjectStore,
    hash_bytes,
    is_object_id,
    object_key,
)
from wvc.store import LocalStore, MemoryStore, Store

RAW = get_codec(CodecId.RAW)
ZSTD = get_codec(CodecId.ZSTD)
BYTEGROUP = get_codec(CodecId.BYTEGROUP_ZSTD)

HEADER = struct.Struct("<4sBBBBQ32s")


@pytest.fixture(params=["local", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "local":
        (tmp_path / "tmp").mkdir()
        return LocalStore(tmp_path / "objects", tmp_dir=tmp_path / "tmp")
    return MemoryStore()


@pytest.fixture
def local(tmp_path: Path) -> tuple[ObjectStore, Path]:
    (tmp_path / "tmp").mkdir()
    root = tmp_path / "objects"
    return ObjectStore(LocalStore(root, tmp_dir=tmp_path / "tmp")), root


def _weights(n: int = 5000, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    return rng.normal(0, 0.02, n).astype(ml_dtypes.bfloat16).tobytes()


def _random(n: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def _object_path(root: Path, oid: str) -> Path:
    return root / oid[:2] / oid[2:]


def _rewrite(path: Path, data: bytes) -> None:
    os.chmod(path, 0o644)
    path.write_bytes(data)


# --- basics -----------------------------------------------------------------


def test_header_size() -> None:
    assert HEADER_SIZE == 48
    assert HEADER.size == 48


def test_hash_and_ids() -> None:
    assert hash_bytes(b"abc") == blake3.blake3(b"abc").hexdigest()
    assert hash_bytes(memoryview(b"abc")) == hash_bytes(b"abc")
    oid = hash_bytes(b"")
    assert is_object_id(oid)
    assert not is_object_id(oid.upper())
    assert not is_object_id(oid[:-1])
    assert not is_object_id(oid + "0")
    assert not is_object_id("g" * 64)
    assert not is_object_id(oid + "\n")
    assert object_key(oid) == f"{oid[:2]}/{oid[2:]}"


@pytest.mark.parametrize(
    ("data", "codec", "param"),
    [
        (b"", ZSTD, 0),
        (b"x", ZSTD, 0),
        (b"hello world " * 100, ZSTD, 0),
        (b"hello world " * 100, RAW, 0),
        (_weights(), BYTEGROUP, 2),
        (_weights(5001)[:-1], BYTEGROUP, 4),
        (_random(3), BYTEGROUP, 8),
    ],
    ids=["empty", "one-byte", "text-zstd", "text-raw", "bf16", "odd-length", "short"],
)
def test_put_get_round_trip(store: Store, data: bytes, codec: object, param: int) -> None:
    objects = ObjectStore(store)
    res = objects.put(data, ObjectKind.CHUNK, codec, param)  # type: ignore[arg-type]
    assert res.id == blake3.blake3(data).hexdigest()
    assert res.raw_size == len(data)
    assert res.new is True
    assert objects.has(res.id)
    assert store.exists(object_key(res.id))
    assert store.size(object_key(res.id)) == res.stored_size
    assert res.stored_size <= len(data) + HEADER_SIZE
    assert objects.get(res.id) == data

    header, size = objects.read_header(res.id)
    assert size == res.stored_size
    assert header.codec is res.codec
    assert header.raw_length == len(data)
    assert header.kind is ObjectKind.CHUNK
    assert header.base is None


def test_put_is_idempotent(store: Store) -> None:
    objects = ObjectStore(store)
    data = _weights()
    first = objects.put(data, ObjectKind.CHUNK, BYTEGROUP, 2)
    blob = store.get(object_key(first.id))
    second = objects.put(data, ObjectKind.CHUNK, BYTEGROUP, 2)
    assert first.new is True
    assert second.new is False
    assert (second.id, second.raw_size, second.stored_size, second.codec) == (
        first.id,
        first.raw_size,
        first.stored_size,
        first.codec,
    )
    # A later put with another codec or kind does not rewrite the object.
    third = objects.put(data, ObjectKind.MANIFEST, RAW)
    assert third.new is False
    assert third.codec is CodecId.BYTEGROUP_ZSTD
    assert store.get(object_key(first.id)) == blob
    assert list(objects.iter_ids()) == [first.id]


def test_compressible_data_is_compressed(store: Store) -> None:
    objects = ObjectStore(store)
    data = _weights(50_000)
    res = objects.put(data, ObjectKind.CHUNK, BYTEGROUP, 2)
    assert res.codec is CodecId.BYTEGROUP_ZSTD
    assert res.stored_size < 0.8 * len(data)
    text = b'{"type":"wvc.tree","files":[]}' * 200
    res = objects.put(text, ObjectKind.TREE, ZSTD)
    assert res.codec is CodecId.ZSTD
    assert res.stored_size < len(text) // 10


@pytest.mark.parametrize(
    ("codec", "param"), [(ZSTD, 0), (BYTEGROUP, 2), (BYTEGROUP, 4), (BYTEGROUP, 8)]
)
@pytest.mark.parametrize("n", [1, 7, 100, 4096, 100_001])
def test_incompressible_data_falls_back_to_raw(
    store: Store, codec: object, param: int, n: int
) -> None:
    objects = ObjectStore(store)
    data = _random(n, seed=n)
    res = objects.put(data, ObjectKind.CHUNK, codec, param)  # type: ignore[arg-type]
    assert res.codec is CodecId.RAW
    assert res.stored_size == n + HEADER_SIZE
    blob = store.get(object_key(res.id))
    assert blob[HEADER_SIZE:] == data
    assert objects.get(res.id) == data


def test_header_layout(store: Store) -> None:
    objects = ObjectStore(store)
    data = b"layout " * 50
    res = objects.put(data, ObjectKind.COMMIT, ZSTD)
    blob = store.get(object_key(res.id))
    magic, version, kind, codec, flags, raw_length, base = HEADER.unpack_from(blob)
    assert magic == MAGIC == b"WVCO"
    assert version == 1
    assert kind == ObjectKind.COMMIT
    assert codec == CodecId.ZSTD == res.codec
    assert flags == 0
    assert raw_length == len(data)
    assert base == bytes(32)


def test_header_pack_unpack() -> None:
    h = ObjectHeader(ObjectKind.TREE, CodecId.BYTEGROUP_ZSTD, 12345, None)
    packed = h.pack()
    assert len(packed) == HEADER_SIZE
    assert ObjectHeader.unpack(packed, "x" * 64) == h
    base = "ab" * 32
    d = ObjectHeader(ObjectKind.CHUNK, CodecId.RAW, 7, base)
    assert ObjectHeader.unpack(d.pack(), "x" * 64) == d


def test_missing_object(store: Store) -> None:
    objects = ObjectStore(store)
    oid = hash_bytes(b"never stored")
    assert not objects.has(oid)
    with pytest.raises(MissingObjectError) as info:
        objects.get(oid)
    assert info.value.object_id == oid
    assert oid in str(info.value)
    assert isinstance(info.value, IntegrityError)
    with pytest.raises(MissingObjectError):
        objects.read_header(oid)
    with pytest.raises(MissingObjectError) as info:
        objects.get(oid, context="model.safetensors")
    assert "model.safetensors" in str(info.value)


def test_iter_ids(store: Store) -> None:
    objects = ObjectStore(store)
    assert list(objects.iter_ids()) == []
    ids = set()
    for i in range(20):
        ids.add(objects.put(f"object {i}".encode() * (i + 1), ObjectKind.CHUNK, ZSTD).id)
    ids.add(objects.put(b"", ObjectKind.CHUNK, ZSTD).id)
    assert len(ids) == 21
    # Things in the store that are not objects are not listed.
    store.put("README", b"not an object")
    store.put("ab/short", b"not an object")
    store.put(("c" * 64)[:2] + "/" + "G" * 62, b"uppercase is not an id")
    store.put("ab" + "/" + "c" * 63, b"too long")
    listed = list(objects.iter_ids())
    assert len(listed) == len(set(listed))
    assert set(listed) == ids


# --- corruption -------------------------------------------------------------


def _stored(local: tuple[ObjectStore, Path], data: bytes, codec: object, param: int) -> tuple:
    objects, root = local
    res = objects.put(data, ObjectKind.CHUNK, codec, param)  # type: ignore[arg-type]
    path = _object_path(root, res.id)
    assert path.is_file()
    return objects, res, path, path.read_bytes()


def _assert_corrupt(objects: ObjectStore, oid: str, match: str | None = None) -> CorruptObjectError:
    with pytest.raises(CorruptObjectError, match=match) as info:
        objects.get(oid)
    assert info.value.object_id == oid
    assert oid in str(info.value)
    assert "wvc fsck" in str(info.value)
    return info.value


@pytest.mark.parametrize(
    ("data", "codec", "param", "expect"),
    [
        (b"abcdefgh" * 40, RAW, 0, CodecId.RAW),
        (b"abcdefgh" * 40, ZSTD, 0, CodecId.ZSTD),
        (_weights(600), BYTEGROUP, 2, CodecId.BYTEGROUP_ZSTD),
        (np.arange(150, dtype=np.float32).tobytes()[:-1], BYTEGROUP, 4, CodecId.BYTEGROUP_ZSTD),
    ],
    ids=["raw", "zstd", "bytegroup2", "bytegroup4-tail"],
)
def test_every_flipped_byte_is_detected(
    local: tuple[ObjectStore, Path], data: bytes, codec: object, param: int, expect: CodecId
) -> None:
    objects, res, path, blob = _stored(local, data, codec, param)
    assert res.codec is expect
    problems: list[str] = []
    for pos in range(len(blob)):
        for mask in (0xFF, 0x01, 0x80):
            if pos == 5 and mask != 0xFF:
                # The kind byte is a documented hint, not covered by the id: a flip to
                # another valid kind is not corruption of the content.
                continue
            bad = bytearray(blob)
            bad[pos] ^= mask
            _rewrite(path, bytes(bad))
            try:
                objects.get(res.id)
            except CorruptObjectError as e:
                if e.object_id != res.id or res.id not in str(e):
                    problems.append(f"byte {pos} ^ {mask:#x}: error does not name the id")
            except Exception as e:
                problems.append(f"byte {pos} ^ {mask:#x}: {type(e).__name__} {e}")
            else:
                problems.append(f"byte {pos} ^ {mask:#x}: not detected")
    _rewrite(path, blob)
    in_base = [p for p in problems if 16 <= int(p.split()[1]) < 48]
    others = [p for p in problems if p not in in_base]
    assert not problems, (
        f"{len(in_base)} flips in the base field (bytes 16..47) not detected; "
        f"{len(others)} other problems: {others[:10]}"
    )
    assert objects.get(res.id) == data


def test_truncated_object(local: tuple[ObjectStore, Path]) -> None:
    objects, res, path, blob = _stored(local, _weights(300), BYTEGROUP, 2)
    for cut in [0, 1, 4, 47]:
        _rewrite(path, blob[:cut])
        _assert_corrupt(objects, res.id, "truncated header")
    for cut in range(48, len(blob)):
        _rewrite(path, blob[:cut])
        _assert_corrupt(objects, res.id)
    _rewrite(path, blob + b"\0")
    _assert_corrupt(objects, res.id)


def _with_header(blob: bytes, **fields: int | bytes) -> bytes:
    names = ["magic", "version", "kind", "codec", "flags", "raw_length", "base"]
    values = dict(zip(names, HEADER.unpack_from(blob), strict=True))
    values.update(fields)
    return HEADER.pack(*(values[n] for n in names)) + blob[HEADER_SIZE:]


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"magic": b"WVCX"}, "bad magic"),
        ({"magic": b"\0\0\0\0"}, "bad magic"),
        ({"version": 0}, "unknown object version 0"),
        ({"version": 2}, "unknown object version 2"),
        ({"version": 255}, "unknown object version 255"),
        ({"codec": 3}, "codec 3"),
        ({"codec": 255}, "codec 255"),
        ({"kind": 4}, "kind 4"),
        ({"flags": 2}, "unknown flags 0x2"),
        ({"flags": 0x80}, "unknown flags 0x80"),
        ({"flags": 1}, "delta base " + "0" * 64 + " is missing"),
        ({"raw_length": MAX_RAW_LENGTH + 1}, "exceeds the limit"),
        ({"raw_length": 2**64 - 1}, "exceeds the limit"),
    ],
)
def test_bad_header_fields(
    local: tuple[ObjectStore, Path], fields: dict[str, int | bytes], match: str
) -> None:
    objects, res, path, blob = _stored(local, b"header test " * 30, ZSTD, 0)
    _rewrite(path, _with_header(blob, **fields))
    err = _assert_corrupt(objects, res.id, match)
    assert match in err.problem
    if "magic" in fields or "version" in fields or "raw_length" in fields:
        # read_header (used by put and fsck) checks the header too.
        with pytest.raises(CorruptObjectError, match=match):
            objects.read_header(res.id)


def test_codec_switched_in_header(local: tuple[ObjectStore, Path]) -> None:
    data = b"codec switch " * 40
    objects, res, path, blob = _stored(local, data, ZSTD, 0)
    for other in (CodecId.RAW, CodecId.BYTEGROUP_ZSTD):
        _rewrite(path, _with_header(blob, codec=int(other)))
        _assert_corrupt(objects, res.id)


def test_content_swapped_for_another_valid_object(local: tuple[ObjectStore, Path]) -> None:
    objects, root = local
    a = objects.put(b"object a" * 10, ObjectKind.CHUNK, ZSTD)
    b = objects.put(b"object b" * 10, ObjectKind.CHUNK, ZSTD)
    _rewrite(_object_path(root, a.id), _object_path(root, b.id).read_bytes())
    err = _assert_corrupt(objects, a.id, "does not match its id")
    assert err.problem == "content does not match its id"
    assert objects.get(b.id) == b"object b" * 10


def test_context_is_named(local: tuple[ObjectStore, Path]) -> None:
    objects, res, path, blob = _stored(local, b"ctx" * 100, ZSTD, 0)
    _rewrite(path, blob[:-1])
    with pytest.raises(CorruptObjectError) as info:
        objects.get(res.id, context="layers/0.safetensors")
    assert info.value.context == "layers/0.safetensors"
    assert "layers/0.safetensors" in str(info.value)
    assert res.id in str(info.value)


def test_zstd_payload_claiming_huge_size_is_corrupt(local: tuple[ObjectStore, Path]) -> None:
    # A zstd frame whose header claims 1 TiB of content (17 bytes in all) inside an object
    # whose header says 1000 bytes: reading it must report corruption, not try to allocate.
    objects, root = local
    data = b"\x07" * 1000
    oid = hash_bytes(data)
    frame = (
        b"\x28\xb5\x2f\xfd\xe0"
        + struct.pack("<Q", 1 << 40)
        + struct.pack("<I", (1000 << 3) | 3)[:3]
        + b"\x07"
    )
    header = ObjectHeader(ObjectKind.CHUNK, CodecId.ZSTD, len(data), None).pack()
    path = _object_path(root, oid)
    path.parent.mkdir(parents=True)
    path.write_bytes(header + frame)
    _assert_corrupt(objects, oid)


def test_empty_object_with_payload_is_corrupt(local: tuple[ObjectStore, Path]) -> None:
    objects, res, path, blob = _stored(local, b"", ZSTD, 0)
    assert len(blob) == HEADER_SIZE
    assert objects.get(res.id) == b""
    _rewrite(path, blob + b"x")
    _assert_corrupt(objects, res.id)


def test_decode_checks_id(local: tuple[ObjectStore, Path]) -> None:
    objects, _ = local
    data = b"static decode" * 5
    blob = ObjectStore.encode(memoryview(data), ObjectKind.CHUNK, ZSTD)
    assert objects.decode(hash_bytes(data), blob) == data
    other = hash_bytes(b"other")
    with pytest.raises(CorruptObjectError, match="does not match its id") as info:
        objects.decode(other, blob, "ctx")
    assert info.value.object_id == other
    assert info.value.context == "ctx"
