"""Checks shared by the format tests."""

from __future__ import annotations

from wvc.formats import FileLayout


def check_exact_cover(layout: FileLayout, size: int | bytes) -> None:
    """Segments start at 0, are contiguous, end at EOF, and each tensor has its dtype's size."""
    if isinstance(size, bytes):
        size = len(size)
    assert layout.size == size
    pos = 0
    for seg in layout.segments:
        assert seg.offset == pos
        pos += seg.size
        if seg.tensor is not None:
            assert seg.tensor.dtype.nbytes(seg.tensor.shape) == seg.size
    assert pos == size
