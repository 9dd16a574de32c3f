"""Float-aware byte grouping: split elements into byte planes, compress the planes that pay.

For a dtype of width W, byte k of every element goes to plane k. Planes that
hold exponent bits are highly compressible; planes of low mantissa bits are
noise, so they are stored raw and cost no compression time. Payload layout
(little-endian)::

    u8 width | u8 n_planes | n_planes x (u8 mode, u64 length) | plane bytes...

mode 0 = raw, 1 = zstd frame. The last ``raw_length % width`` bytes (never
present for whole-element chunks) follow as a raw tail plane.
"""

from __future__ import annotations

import struct

import numpy as np

from ._base import Buffer, Codec, CodecError, CodecId
from ._zstd import decompress_exact, plane_compressor

_PLANE = struct.Struct("<BQ")
_HEAD = struct.Struct("<BB")
_SAMPLE = 64 * 1024
# A plane is entropy-coded only if a sample of it compresses below this ratio.
_WORTH = 0.95
_MODE_RAW = 0
_MODE_ZSTD = 1


def _encode_plane(plane: memoryview) -> tuple[int, Buffer]:
    c = plane_compressor()
    if len(plane) > 4 * _SAMPLE:
        trial = c.compress(plane[:_SAMPLE])
        if len(trial) > _WORTH * _SAMPLE:
            return _MODE_RAW, plane
    packed = c.compress(plane)
    if len(packed) >= len(plane):
        return _MODE_RAW, plane
    return _MODE_ZSTD, packed


class ByteGroupZstdCodec(Codec):
    codec_id = CodecId.BYTEGROUP_ZSTD

    def encode_parts(self, data: memoryview, param: int) -> list[Buffer]:
        width = param
        if not 2 <= width <= 16:
            raise ValueError(f"byte-group width must be 2..16, got {width}")
        n = len(data) // width
        body = np.frombuffer(data, dtype=np.uint8, count=n * width)
        grouped = body.reshape(n, width).T.copy()
        encoded = [_encode_plane(memoryview(grouped[k])) for k in range(width)]
        tail = data[n * width :]
        if len(tail):
            encoded.append((_MODE_RAW, tail))
        head = [_HEAD.pack(width, len(encoded))]
        head += [_PLANE.pack(mode, len(blob)) for mode, blob in encoded]
        return [b"".join(head), *(blob for _, blob in encoded)]

    def decode(self, payload: memoryview, raw_length: int) -> Buffer:
        width, planes, tail = decode_planes(payload, raw_length)
        n = raw_length // width
        if tail:
            return (np.stack(planes, axis=1).tobytes() if n else b"") + bytes(tail)
        if not n:
            return b""
        return np.stack(planes, axis=1).reshape(-1).data  # a view: no copy


def decode_planes(payload: memoryview, raw_length: int) -> tuple[int, list[np.ndarray], Buffer]:
    """(width, the W decoded byte planes, the raw tail) of a payload, before interleaving.

    Delta chains XOR whole chains in this planar form and interleave once.
    """
    if len(payload) < _HEAD.size:
        raise CodecError("byte-group payload truncated")
    width, n_planes = _HEAD.unpack_from(payload, 0)
    if not 2 <= width <= 16:
        raise CodecError(f"byte-group width {width} is out of range")
    n, tail_len = divmod(raw_length, width)
    expected_planes = width + (1 if tail_len else 0)
    if n_planes != expected_planes:
        raise CodecError(f"byte-group header has width {width} and {n_planes} planes")
    pos = _HEAD.size + n_planes * _PLANE.size
    if len(payload) < pos:
        raise CodecError("byte-group payload truncated")
    planes: list[np.ndarray] = []
    tail: Buffer = b""
    for i in range(n_planes):
        mode, length = _PLANE.unpack_from(payload, _HEAD.size + i * _PLANE.size)
        blob = payload[pos : pos + length]
        if len(blob) != length:
            raise CodecError("byte-group plane truncated")
        pos += length
        want = n if i < width else tail_len
        raw: Buffer
        if mode == _MODE_RAW:
            if length != want:
                raise CodecError(f"raw plane {i} is {length} bytes, expected {want}")
            raw = blob
        elif mode == _MODE_ZSTD:
            raw = decompress_exact(blob, want)
        else:
            raise CodecError(f"unknown plane mode {mode}")
        if i < width:
            planes.append(np.frombuffer(raw, dtype=np.uint8))
        else:
            tail = raw
    if pos != len(payload):
        raise CodecError("trailing bytes after byte-group planes")
    return width, planes, tail
