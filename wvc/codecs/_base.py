from __future__ import annotations

import abc
import enum

from ..errors import WvcError

Buffer = bytes | memoryview


class CodecId(enum.IntEnum):
    """Codec ids as written in object headers. Never renumber; only append."""

    RAW = 0
    ZSTD = 1
    BYTEGROUP_ZSTD = 2


class CodecError(WvcError):
    """A payload cannot be decoded (raised inside codecs, wrapped by the object layer)."""


class Codec(abc.ABC):
    """Turns raw chunk bytes into a payload and back. Stateless and thread-safe."""

    codec_id: CodecId

    @property
    def name(self) -> str:
        return self.codec_id.name.lower().replace("_", "-")

    def encode(self, data: memoryview, param: int) -> bytes:
        """Encode ``data``. ``param`` is codec-specific (element width for byte grouping)."""
        return b"".join(self.encode_parts(data, param))

    @abc.abstractmethod
    def encode_parts(self, data: memoryview, param: int) -> list[Buffer]:
        """The payload as pieces to write one after another (saves joining big buffers).

        Pieces may be views of ``data``; they are valid while ``data`` is.
        """

    @abc.abstractmethod
    def decode(self, payload: memoryview, raw_length: int) -> Buffer:
        """Decode a payload to exactly ``raw_length`` bytes, or raise CodecError.

        The result may be a read-only view (no copy); callers needing ``bytes``
        convert it.
        """
