from __future__ import annotations

from ._base import FileLayout, Format, ReadAt, SegmentSpec


class OpaqueFormat(Format):
    """Any file, stored as plain bytes: one opaque segment."""

    name = "opaque"

    def claims(self, path: str) -> bool:
        return True

    def parse(self, path: str, read_at: ReadAt, size: int) -> FileLayout:
        return FileLayout(self.name, size, (SegmentSpec(0, size),) if size else ())
