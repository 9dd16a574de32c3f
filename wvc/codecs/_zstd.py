from __future__ import annotations

import threading

import zstandard

from ._base import Buffer, Codec, CodecError, CodecId

# Level 1: on weight data higher levels cost 2x the time for no gain (docs/design.md).
LEVEL = 1

_local = threading.local()


def compressor() -> zstandard.ZstdCompressor:
    """A per-thread compressor (zstandard objects are not safe to share across threads)."""
    c: zstandard.ZstdCompressor | None = getattr(_local, "c", None)
    if c is None:
        c = _local.c = zstandard.ZstdCompressor(level=LEVEL, write_content_size=True)
    return c


# For byte planes of weights (exponent bytes): little LZ structure, skewed
# symbols. The fast strategy with long minimum matches and a small hash table
# is ~40 % faster than level 1 and compresses ~6 % better there (measured,
# docs/benchmarks.md). Any zstd decoder reads the result.
_PLANE_PARAMS = dict(strategy=zstandard.STRATEGY_FAST, min_match=7, hash_log=10, window_log=20)


def plane_compressor() -> zstandard.ZstdCompressor:
    c: zstandard.ZstdCompressor | None = getattr(_local, "p", None)
    if c is None:
        params = zstandard.ZstdCompressionParameters(write_content_size=True, **_PLANE_PARAMS)
        c = _local.p = zstandard.ZstdCompressor(compression_params=params)
    return c


def decompressor() -> zstandard.ZstdDecompressor:
    d: zstandard.ZstdDecompressor | None = getattr(_local, "d", None)
    if d is None:
        d = _local.d = zstandard.ZstdDecompressor()
    return d


def decompress_exact(payload: memoryview | bytes, raw_length: int) -> bytes:
    """Decompress exactly one zstd frame that must expand to exactly ``raw_length`` bytes.

    The frame's declared content size is checked before anything is allocated
    (a corrupt header must not make us allocate what it claims), and bytes
    after the frame are refused.
    """
    try:
        declared = zstandard.frame_content_size(payload)
    except zstandard.ZstdError as e:
        raise CodecError(f"zstd: {e}") from None
    if declared != raw_length:
        raise CodecError(f"zstd frame declares {declared} bytes, expected {raw_length}")
    stream = decompressor().decompressobj()
    try:
        out = stream.decompress(payload)
    except zstandard.ZstdError as e:
        raise CodecError(f"zstd: {e}") from None
    if not stream.eof:
        raise CodecError("zstd frame is truncated")
    if stream.unused_data:
        raise CodecError(f"{len(stream.unused_data)} bytes after the zstd frame")
    if len(out) != raw_length:
        raise CodecError(f"zstd frame expands to {len(out)} bytes, expected {raw_length}")
    return out


class ZstdCodec(Codec):
    """One zstd frame over the whole chunk (opaque data and 1-byte dtypes)."""

    codec_id = CodecId.ZSTD

    def encode_parts(self, data: memoryview, param: int) -> list[Buffer]:
        return [compressor().compress(data)]

    def decode(self, payload: memoryview, raw_length: int) -> Buffer:
        return decompress_exact(payload, raw_length)
