"""wvc.codecs: round trips, compression of float data, and refusal of bad payloads."""

from __future__ import annotations

import struct

import ml_dtypes
import numpy as np
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wvc.codecs import (
    ByteGroupZstdCodec,
    Codec,
    CodecId,
    RawCodec,
    ZstdCodec,
    codec_for,
    get_codec,
)
from wvc.codecs._base import CodecError
from wvc.dtypes import DType

RAW = get_codec(CodecId.RAW)
ZSTD = get_codec(CodecId.ZSTD)
BYTEGROUP = get_codec(CodecId.BYTEGROUP_ZSTD)

# (codec, param) pairs that must all round-trip any bytes.
CODECS: list[tuple[Codec, int]] = [
    (RAW, 0),
    (ZSTD, 0),
    (BYTEGROUP, 2),
    (BYTEGROUP, 4),
    (BYTEGROUP, 8),
]
CODEC_IDS = ["raw", "zstd", "bytegroup2", "bytegroup4", "bytegroup8"]

_PLANE = struct.Struct("<BQ")


def _make_data(kind: str, length: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    if kind == "random":
        return rng.integers(0, 256, length, dtype=np.uint8).tobytes()
    if kind == "zeros":
        return bytes(length)
    if kind == "low-entropy":
        return rng.integers(0, 4, length, dtype=np.uint8).tobytes()
    if kind == "float32":
        n = length // 4 + 1
        return rng.normal(0, 0.02, n).astype(np.float32).tobytes()[:length]
    if kind == "bfloat16":
        n = length // 2 + 1
        return rng.normal(0, 0.02, n).astype(ml_dtypes.bfloat16).tobytes()[:length]
    raise AssertionError(kind)


def _planes(payload: bytes) -> tuple[int, list[tuple[int, int]]]:
    """(width, [(mode, length), ...]) of a byte-group payload."""
    width, n_planes = struct.unpack_from("<BB", payload, 0)
    return width, [_PLANE.unpack_from(payload, 2 + i * _PLANE.size) for i in range(n_planes)]


def _check_round_trip(codec: Codec, param: int, data: bytes) -> None:
    payload = codec.encode(memoryview(data), param)
    assert isinstance(payload, bytes)
    out = codec.decode(memoryview(payload), len(data))
    assert isinstance(out, bytes | memoryview)  # decode may return a view, never a copy
    assert bytes(out) == data


# --- registry ---------------------------------------------------------------


def test_registry() -> None:
    assert isinstance(RAW, RawCodec)
    assert isinstance(ZSTD, ZstdCodec)
    assert isinstance(BYTEGROUP, ByteGroupZstdCodec)
    for cid in CodecId:
        assert get_codec(int(cid)).codec_id is cid
    assert [c.name for c in (RAW, ZSTD, BYTEGROUP)] == ["raw", "zstd", "bytegroup-zstd"]
    # The on-disk numbering is frozen.
    assert (CodecId.RAW, CodecId.ZSTD, CodecId.BYTEGROUP_ZSTD) == (0, 1, 2)


@pytest.mark.parametrize("bad", [3, 17, 255, -1])
def test_get_codec_unknown(bad: int) -> None:
    with pytest.raises((KeyError, ValueError)):
        get_codec(bad)


@pytest.mark.parametrize("dtype", list(DType), ids=lambda d: d.name)
def test_codec_for(dtype: DType) -> None:
    codec, param = codec_for(dtype)
    if dtype.bits >= 16:
        assert codec.codec_id is CodecId.BYTEGROUP_ZSTD
        assert param == dtype.itemsize
        assert param in (2, 4, 8)
    else:
        assert codec.codec_id is CodecId.ZSTD
        assert param == 0


def test_codec_for_specific() -> None:
    assert codec_for(None) == (ZSTD, 0)
    assert codec_for(DType.BF16) == (BYTEGROUP, 2)
    assert codec_for(DType.F16) == (BYTEGROUP, 2)
    assert codec_for(DType.F32) == (BYTEGROUP, 4)
    assert codec_for(DType.I64) == (BYTEGROUP, 8)
    assert codec_for(DType.C64) == (BYTEGROUP, 8)
    for one_byte in (DType.U8, DType.I8, DType.BOOL, DType.F8_E4M3, DType.F8_E5M2, DType.F4):
        assert codec_for(one_byte) == (ZSTD, 0)


# --- round trips ------------------------------------------------------------


@pytest.mark.parametrize(("codec", "param"), CODECS, ids=CODEC_IDS)
@given(
    kind=st.sampled_from(["random", "zeros", "low-entropy", "float32", "bfloat16"]),
    length=st.one_of(st.integers(0, 70_000), st.integers(0, 40)),
    seed=st.integers(0, 2**32 - 1),
)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_round_trip_generated(codec: Codec, param: int, kind: str, length: int, seed: int) -> None:
    _check_round_trip(codec, param, _make_data(kind, length, seed))


@pytest.mark.parametrize(("codec", "param"), CODECS, ids=CODEC_IDS)
@given(data=st.binary(max_size=2000))
@settings(max_examples=60, deadline=None)
def test_round_trip_arbitrary_bytes(codec: Codec, param: int, data: bytes) -> None:
    _check_round_trip(codec, param, data)


@pytest.mark.parametrize("width", [2, 3, 4, 8, 16])
def test_bytegroup_lengths_around_width(width: int) -> None:
    rng = np.random.default_rng(width)
    for length in [*range(0, 3 * width + 2), 1000 * width - 1, 1000 * width, 1000 * width + 1]:
        data = rng.integers(0, 3, length, dtype=np.uint8).tobytes()
        payload = BYTEGROUP.encode(memoryview(data), width)
        w, planes = _planes(payload)
        assert w == width
        tail = length % width
        assert len(planes) == width + (1 if tail else 0)
        if tail:
            assert planes[-1] == (0, tail)  # the tail plane is always raw
        assert BYTEGROUP.decode(memoryview(payload), length) == data


def test_bytegroup_large_input_uses_sampling_path() -> None:
    # Planes above 4 x 64 KiB are judged by a sample first; both outcomes must round-trip.
    rng = np.random.default_rng(1)
    data = rng.normal(0, 0.02, 400_000).astype(np.float32).tobytes()
    _check_round_trip(BYTEGROUP, 4, data)
    data = bytes(300_000) + rng.integers(0, 256, 300_003, dtype=np.uint8).tobytes()
    _check_round_trip(BYTEGROUP, 2, data)


@pytest.mark.parametrize("width", [0, 1, 17, 255])
def test_bytegroup_rejects_bad_width(width: int) -> None:
    with pytest.raises(ValueError, match="width"):
        BYTEGROUP.encode(memoryview(b"abcdefgh"), width)


def test_encode_accepts_non_bytes_buffers() -> None:
    arr = np.arange(1000, dtype=np.float32)
    for codec, param in CODECS:
        payload = codec.encode(memoryview(arr).cast("B"), param)
        assert codec.decode(memoryview(payload), arr.nbytes) == arr.tobytes()


# --- compression of weight-like data ----------------------------------------


def _entropy_bits(plane: np.ndarray) -> float:
    counts = np.bincount(plane, minlength=256)
    p = counts[counts > 0] / plane.size
    return float(-(p * np.log2(p)).sum())


@pytest.mark.parametrize(
    ("npdtype", "n", "max_ratio"),
    [
        (np.float32, 300_000, 0.9),  # planes above the sampling threshold
        (np.float32, 20_000, 0.9),  # small planes, compressed whole
        (ml_dtypes.bfloat16, 300_000, 0.75),
        (ml_dtypes.bfloat16, 20_000, 0.75),
        (np.float16, 100_000, 0.9),
    ],
    ids=["f32-large", "f32-small", "bf16-large", "bf16-small", "f16"],
)
def test_bytegroup_compresses_gaussian_weights(npdtype: type, n: int, max_ratio: float) -> None:
    rng = np.random.default_rng(1234)
    arr = rng.normal(0, 0.02, n).astype(npdtype)
    raw = arr.tobytes()
    width = arr.itemsize
    payload = BYTEGROUP.encode(memoryview(raw), width)
    assert BYTEGROUP.decode(memoryview(payload), len(raw)) == raw

    ratio = len(payload) / len(raw)
    assert ratio < max_ratio
    # Grouping must beat zstd over the interleaved bytes.
    assert len(payload) < len(ZSTD.encode(memoryview(raw), 0))

    # Plane by plane: a plane with near-8-bit entropy is noise and must be stored raw
    # (exactly n bytes, mode 0); a low-entropy plane must be compressed to within 25% of
    # its order-0 entropy.
    planes = np.frombuffer(raw, dtype=np.uint8).reshape(n, width).T
    w, modes = _planes(payload)
    assert w == width
    assert len(modes) == width
    bound = 2 + width * _PLANE.size
    for k, (mode, length) in enumerate(modes):
        h = _entropy_bits(planes[k])
        if h > 7.9:
            assert (mode, length) == (0, n), f"noise plane {k} (H={h:.2f}) not stored raw"
        if h < 6.0:
            assert mode == 1, f"plane {k} (H={h:.2f}) not compressed"
            assert length <= 1.25 * n * h / 8, f"plane {k}: {length} bytes for H={h:.2f}"
        bound += min(n, int(1.25 * n * h / 8) + 64)
    assert len(payload) <= bound
    # The top plane (sign + high exponent bits) is the compressible one.
    assert modes[-1][0] == 1
    assert modes[0] == (0, n)


def test_zstd_compresses_redundant_data() -> None:
    data = b"weights " * 10_000
    assert len(ZSTD.encode(memoryview(data), 0)) < len(data) // 20


# --- refusal of bad payloads ------------------------------------------------


def _sample_payloads() -> list[tuple[Codec, int, bytes]]:
    rng = np.random.default_rng(7)
    f32 = rng.normal(0, 0.02, 3001).astype(np.float32).tobytes()[:-1]  # tail of 3 bytes
    bf16 = rng.normal(0, 0.02, 2000).astype(ml_dtypes.bfloat16).tobytes()
    text = b"the quick brown fox " * 300
    return [
        (RAW, 0, text),
        (ZSTD, 0, text),
        (ZSTD, 0, f32),
        (BYTEGROUP, 4, f32),
        (BYTEGROUP, 2, bf16),
        (BYTEGROUP, 8, text),
    ]


PAYLOADS = _sample_payloads()
PAYLOAD_IDS = ["raw-text", "zstd-text", "zstd-f32", "bg4-f32", "bg2-bf16", "bg8-text"]


@pytest.mark.parametrize(("codec", "param", "data"), PAYLOADS, ids=PAYLOAD_IDS)
def test_every_truncation_raises(codec: Codec, param: int, data: bytes) -> None:
    payload = codec.encode(memoryview(data), param)
    for cut in range(len(payload)):
        with pytest.raises(CodecError):
            codec.decode(memoryview(payload[:cut]), len(data))


@pytest.mark.parametrize(("codec", "param", "data"), PAYLOADS, ids=PAYLOAD_IDS)
def test_trailing_bytes_raise(codec: Codec, param: int, data: bytes) -> None:
    payload = codec.encode(memoryview(data), param)
    for extra in (b"\0", b"junk", payload):
        with pytest.raises(CodecError):
            codec.decode(memoryview(payload + extra), len(data))


@pytest.mark.parametrize(("codec", "param", "data"), PAYLOADS, ids=PAYLOAD_IDS)
def test_wrong_raw_length_raises(codec: Codec, param: int, data: bytes) -> None:
    payload = codec.encode(memoryview(data), param)
    for delta in {-param, -1, 1, param, len(data)} - {0}:
        with pytest.raises(CodecError):
            codec.decode(memoryview(payload), len(data) + delta)
    with pytest.raises(CodecError):
        codec.decode(memoryview(payload), 0)


@pytest.mark.parametrize("case", range(len(PAYLOADS)), ids=PAYLOAD_IDS)
@given(hyp=st.data())
@settings(max_examples=80, deadline=None)
def test_garbled_payload_never_misbehaves(case: int, hyp: st.DataObject) -> None:
    # A codec has no checksum of its own (the object layer re-hashes), so a flipped byte
    # in entropy-coded or raw data can decode to other bytes of the right length. What a
    # codec must never do is raise anything but CodecError or return a wrong length.
    codec, param, data = PAYLOADS[case]
    payload = bytearray(codec.encode(memoryview(data), param))
    n_flips = hyp.draw(st.integers(1, 4))
    for _ in range(n_flips):
        pos = hyp.draw(st.integers(0, len(payload) - 1))
        payload[pos] ^= hyp.draw(st.integers(1, 255))
    try:
        out = codec.decode(memoryview(bytes(payload)), len(data))
    except CodecError:
        return
    assert len(out) == len(data)


def _bg_payload() -> tuple[bytes, bytes]:
    data = np.random.default_rng(3).normal(0, 0.02, 1001).astype(np.float32).tobytes()[:-2]
    return data, BYTEGROUP.encode(memoryview(data), 4)


def test_bytegroup_header_garbling_raises() -> None:
    data, payload = _bg_payload()
    width, planes = _planes(payload)
    assert width == 4
    assert len(planes) == 5  # 4 planes + a 2-byte tail
    n = len(data) // 4
    head = 2 + len(planes) * _PLANE.size

    def bad(p: bytes | bytearray, match: str | None) -> None:
        with pytest.raises(CodecError, match=match):
            BYTEGROUP.decode(memoryview(bytes(p)), len(data))

    bad(b"", "truncated")
    bad(payload[:1], "truncated")
    bad(payload[: head - 1], "truncated")
    for w in (0, 1, 2, 3, 5, 8, 255):
        p = bytearray(payload)
        p[0] = w
        bad(p, "width|planes|truncated|expected")
    for count in (0, 4, 6, 255):
        p = bytearray(payload)
        p[1] = count
        bad(p, "planes")
    for i in range(len(planes)):
        off = 2 + i * _PLANE.size
        p = bytearray(payload)
        p[off] = 7
        bad(p, "unknown plane mode")
        mode, length = planes[i]
        for new_len in (length - 1, length + 1, 0, 2**64 - 1):
            if new_len == length or new_len < 0:
                continue
            p = bytearray(payload)
            _PLANE.pack_into(p, off, mode, new_len)
            bad(p, None)
    # A raw plane declared as zstd, and a zstd plane declared raw.
    raw_idx = next(i for i, (m, _) in enumerate(planes) if m == 0)
    zstd_idx = next(i for i, (m, _) in enumerate(planes) if m == 1)
    for idx, mode in ((raw_idx, 1), (zstd_idx, 0)):
        p = bytearray(payload)
        p[2 + idx * _PLANE.size] = mode
        bad(p, None)
    assert BYTEGROUP.decode(memoryview(payload), len(data)) == data
    assert n * 4 + 2 == len(data)


def test_bytegroup_zstd_plane_of_wrong_size_raises() -> None:
    # A well-formed payload whose zstd plane expands to a different length than n.
    n = 500
    good = zstandard.ZstdCompressor().compress(bytes(n))
    short = zstandard.ZstdCompressor().compress(bytes(n - 1))
    for plane in (good, short):
        head = struct.pack("<BB", 2, 2) + _PLANE.pack(1, len(plane)) + _PLANE.pack(0, n)
        payload = head + plane + bytes(n)
        if plane is good:
            assert BYTEGROUP.decode(memoryview(payload), 2 * n) == bytes(2 * n)
        else:
            with pytest.raises(CodecError):
                BYTEGROUP.decode(memoryview(payload), 2 * n)


def _zstd_frame_claiming(content_size: int, actual: int = 1000) -> bytes:
    """A tiny valid-looking zstd frame: header claims ``content_size``, one RLE block of
    ``actual`` bytes follows."""
    magic = b"\x28\xb5\x2f\xfd"
    descriptor = bytes([0xE0])  # 8-byte content size, single segment
    block = struct.pack("<I", (actual << 3) | (1 << 1) | 1)[:3] + b"\x07"  # last, RLE
    return magic + descriptor + struct.pack("<Q", content_size) + block


def test_zstd_frame_helper_is_valid() -> None:
    frame = _zstd_frame_claiming(1000)
    assert ZSTD.decode(memoryview(frame), 1000) == b"\x07" * 1000
    with pytest.raises(CodecError):
        ZSTD.decode(memoryview(_zstd_frame_claiming(2000)), 1000)


@pytest.mark.parametrize("claimed", [1 << 40, 1 << 50], ids=["1TiB", "1PiB"])
@pytest.mark.parametrize("raw_length", [0, 1000])
def test_zstd_frame_claiming_huge_content_is_refused(claimed: int, raw_length: int) -> None:
    # A 17-byte hostile payload must not make the decoder allocate what its frame header
    # claims: decoding to ``raw_length`` bytes must fail with CodecError.
    with pytest.raises(CodecError):
        ZSTD.decode(memoryview(_zstd_frame_claiming(claimed)), raw_length)


def test_bytegroup_zstd_plane_claiming_huge_content_is_refused() -> None:
    frame = _zstd_frame_claiming(1 << 40)
    # raw_length 1 with width 2: zero whole elements, so the planes want 0 bytes.
    payload = struct.pack("<BB", 2, 3) + _PLANE.pack(1, len(frame)) + _PLANE.pack(0, 0)
    payload += _PLANE.pack(0, 1) + frame + b"x"
    with pytest.raises(CodecError):
        BYTEGROUP.decode(memoryview(payload), 1)


def test_raw_codec_length_mismatch() -> None:
    assert RAW.decode(memoryview(b"abc"), 3) == b"abc"
    with pytest.raises(CodecError, match="2 bytes, header says 3"):
        RAW.decode(memoryview(b"ab"), 3)
