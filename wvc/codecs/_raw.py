from __future__ import annotations

from ._base import Buffer, Codec, CodecError, CodecId


class RawCodec(Codec):
    """Stores bytes as they are; the fallback when nothing compresses."""

    codec_id = CodecId.RAW

    def encode_parts(self, data: memoryview, param: int) -> list[Buffer]:
        return [data]

    def decode(self, payload: memoryview, raw_length: int) -> Buffer:
        if len(payload) != raw_length:
            raise CodecError(f"raw payload is {len(payload)} bytes, header says {raw_length}")
        return payload
