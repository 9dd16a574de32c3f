"""The format registry: which files wvc can see tensors in, and how.

A format turns a file's header into a :class:`FileLayout`: the byte ranges of
its tensors and of everything else. Adding a format is one new module with a
:class:`Format` subclass, listed in ``_FORMATS``.
"""

from __future__ import annotations

from ._base import FileLayout, Format, ReadAt, SegmentSpec
from .gguf import GgufFormat
from .hf_index import HfIndexFormat
from .numpy import NpyFormat, NpzFormat
from .opaque import OpaqueFormat
from .pytorch import PyTorchFormat
from .safetensors import SafetensorsFormat

OPAQUE = OpaqueFormat()
_FORMATS: tuple[Format, ...] = (
    SafetensorsFormat(),
    PyTorchFormat(),
    GgufFormat(),
    NpyFormat(),
    NpzFormat(),
    HfIndexFormat(),
)


def detect(path: str) -> Format:
    """The format that claims ``path`` by its name, else the opaque format."""
    for fmt in _FORMATS:
        if fmt.claims(path):
            return fmt
    return OPAQUE


def by_name(name: str) -> Format:
    for fmt in (*_FORMATS, OPAQUE):
        if fmt.name == name:
            return fmt
    raise KeyError(name)


__all__ = ["OPAQUE", "FileLayout", "Format", "ReadAt", "SegmentSpec", "by_name", "detect"]
