from __future__ import annotations

import abc
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ..dtypes import DType
from ..manifest import SegmentKind, TensorInfo, View

ReadAt = Callable[[int, int], bytes]
"""``read_at(offset, length)``: at most ``length`` bytes of the file from ``offset``."""


@dataclass(frozen=True)
class SegmentSpec:
    """A byte range of a file to store: a tensor's data, a typed storage, or opaque bytes."""

    offset: int
    size: int
    tensor: TensorInfo | None = None
    storage: DType | None = None

    @property
    def dtype(self) -> DType | None:
        return self.tensor.dtype if self.tensor is not None else self.storage

    @property
    def kind(self) -> SegmentKind:
        if self.tensor is not None:
            return SegmentKind.TENSOR
        return SegmentKind.STORAGE if self.storage is not None else SegmentKind.OPAQUE


@dataclass(frozen=True)
class FileLayout:
    """The segments of a file in order; they cover it exactly, with no gaps.

    ``views`` name tensors that read out of a segment by offset and strides
    (segment indexes refer to ``segments``). ``warnings`` say why parts of a
    file that could have been tensors were stored opaque.
    """

    format: str
    size: int
    segments: tuple[SegmentSpec, ...]
    views: tuple[View, ...] = ()
    warnings: tuple[str, ...] = field(default=())

    def tensor_names(self) -> list[View | TensorInfo]:
        """Every named tensor of the file (whole-segment tensors, then views)."""
        return [s.tensor for s in self.segments if s.tensor is not None] + list(self.views)


def fill_gaps(size: int, ranges: Iterable[SegmentSpec]) -> tuple[SegmentSpec, ...]:
    """The typed ``ranges`` (sorted, non-overlapping, in bounds) with opaque segments between."""
    out: list[SegmentSpec] = []
    cursor = 0
    for r in ranges:
        if r.offset < cursor or r.offset + r.size > size:
            raise ValueError("ranges overlap or run past the end of the file")
        if r.offset > cursor:
            out.append(SegmentSpec(cursor, r.offset - cursor))
        out.append(r)
        cursor = r.offset + r.size
    if cursor < size:
        out.append(SegmentSpec(cursor, size - cursor))
    return tuple(out)


def opaque_layout(format_name: str, size: int, warning: str | None = None) -> FileLayout:
    """The whole file as one opaque segment (empty files have no segment)."""
    segments = (SegmentSpec(0, size),) if size else ()
    return FileLayout(format_name, size, segments, (), (warning,) if warning else ())


class Format(abc.ABC):
    name: str

    @abc.abstractmethod
    def claims(self, path: str) -> bool:
        """Whether files named like ``path`` are expected to be in this format."""

    @abc.abstractmethod
    def parse(self, path: str, read_at: ReadAt, size: int) -> FileLayout:
        """The layout of the file; raises MalformedFileError naming ``path`` and the problem."""

    def describe(self, path: str, read_at: ReadAt, size: int) -> dict[str, object]:
        """Format-level metadata worth showing (GGUF key/values, safetensors ``__metadata__``)."""
        return {}
