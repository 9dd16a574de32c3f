from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass

from ..manifest import TensorInfo

ReadAt = Callable[[int, int], bytes]
"""``read_at(offset, length)``: at most ``length`` bytes of the file from ``offset``."""


@dataclass(frozen=True)
class SegmentSpec:
    """A byte range of a file to store: a tensor's data or opaque bytes."""

    offset: int
    size: int
    tensor: TensorInfo | None = None


@dataclass(frozen=True)
class FileLayout:
    """The segments of a file in order; they cover it exactly, with no gaps."""

    format: str
    size: int
    segments: tuple[SegmentSpec, ...]


class Format(abc.ABC):
    name: str

    @abc.abstractmethod
    def claims(self, path: str) -> bool:
        """Whether files named like ``path`` are expected to be in this format."""

    @abc.abstractmethod
    def parse(self, path: str, read_at: ReadAt, size: int) -> FileLayout:
        """The layout of the file; raises MalformedFileError naming ``path`` and the problem."""
