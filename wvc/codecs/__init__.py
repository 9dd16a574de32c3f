"""Chunk codecs: how the bytes of one object are encoded on disk.

Every stored object names its codec by a one-byte id in its header (see
docs/design.md, "Codecs"). Codecs are small classes registered here; a codec's
own parameters travel inside its payload, so a payload decodes with no outside
configuration. :func:`codec_for` picks the codec for a tensor dtype.
"""

from __future__ import annotations

from ..dtypes import DType
from ._base import Buffer, Codec, CodecId
from ._bytegroup import ByteGroupZstdCodec
from ._raw import RawCodec
from ._zstd import ZstdCodec

_REGISTRY: dict[CodecId, Codec] = {
    CodecId.RAW: RawCodec(),
    CodecId.ZSTD: ZstdCodec(),
    CodecId.BYTEGROUP_ZSTD: ByteGroupZstdCodec(),
}


def get_codec(codec_id: int) -> Codec:
    """The codec registered under ``codec_id`` (raises KeyError if unknown)."""
    return _REGISTRY[CodecId(codec_id)]


def codec_for(dtype: DType | None) -> tuple[Codec, int]:
    """The codec and its parameter used to encode chunks of a tensor of ``dtype``.

    ``None`` means opaque bytes. Multi-byte dtypes are byte-grouped with the
    element width as parameter; single-byte and packed dtypes use plain zstd.
    """
    if dtype is None or dtype.bits < 16:
        return _REGISTRY[CodecId.ZSTD], 0
    return _REGISTRY[CodecId.BYTEGROUP_ZSTD], dtype.itemsize


__all__ = [
    "Buffer",
    "ByteGroupZstdCodec",
    "Codec",
    "CodecId",
    "RawCodec",
    "ZstdCodec",
    "codec_for",
    "get_codec",
]
