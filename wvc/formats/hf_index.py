"""Hugging Face shard indexes (``model.safetensors.index.json``, ``pytorch_model.bin.index.json``).

The index is a small JSON file, stored as it is (one opaque segment). What it
says — which shard holds which tensor — makes the shards one logical model
(see :mod:`wvc.models`): ``load``, ``show`` and ``export`` use it to see
tensor names across shards. A commit checks that the shards it names are in
the commit and hold the tensors listed, and warns when they do not.
"""

from __future__ import annotations

import json
import posixpath
from typing import Any

from ._base import FileLayout, Format, ReadAt, opaque_layout

MAX_INDEX = 64 << 20
SUFFIXES = (".safetensors.index.json", ".bin.index.json", ".pt.index.json", ".pth.index.json")


def is_index_path(path: str) -> bool:
    return path.endswith(SUFFIXES)


def parse_index(raw: bytes) -> dict[str, str]:
    """The weight map (tensor name -> shard file name); raises ValueError naming the problem."""
    try:
        doc: Any = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ValueError(f"not valid JSON: {str(e)[:120]}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("weight_map"), dict):
        raise ValueError("no weight_map object")
    wm = doc["weight_map"]
    for k, v in wm.items():
        if not isinstance(v, str) or not v or "/" in v or "\\" in v or v in (".", ".."):
            raise ValueError(f"tensor {k!r}: shard {v!r} is not a file name")
    return dict(wm)


def shard_path(index_path: str, shard: str) -> str:
    """The stored path of a shard named in the index at ``index_path``."""
    return posixpath.join(posixpath.dirname(index_path), shard)


class HfIndexFormat(Format):
    name = "hf-index"

    def claims(self, path: str) -> bool:
        return is_index_path(path)

    def parse(self, path: str, read_at: ReadAt, size: int) -> FileLayout:
        if size > MAX_INDEX:
            return opaque_layout("opaque", size, f"{path}: shard index over 64 MiB; stored opaque")
        try:
            parse_index(bytes(read_at(0, size)))
        except ValueError as e:
            return opaque_layout("opaque", size, f"{path}: not a usable shard index: {e}")
        return opaque_layout(self.name, size)
