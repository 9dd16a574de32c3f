"""export: write a commit's tensors as a safetensors checkpoint (sharded or not) or an npz.

Works for every tensor-aware format (PyTorch, NumPy, GGUF float tensors,
safetensors, sharded or not): tensors are read by name from the store,
verified, and written one at a time, so memory stays at about the largest
tensor. Files without tensors (config.json, tokenizer files) are copied
unless ``tensors_only``; shard indexes of the source are replaced by the
export's own. The output directory appears only when complete.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..dtypes import DType
from ..errors import InputError
from ..formats.hf_index import is_index_path
from ..formats.safetensors import build_header
from ..ingest import Progress, default_workers
from ._read import read_file_manifest
from ._staging import staged_directory, write_file
from .restore import snapshot
from .tensors import (
    TensorLocation,
    read_segment,
    read_tensor,
    select_files,
    stream_tensor,
    tensor_map,
)

if TYPE_CHECKING:
    from ..repository import Repository

FORMATS = ("safetensors", "npz")
# dtypes np.save writes with a standard descr (bf16 and float8 have none).
_NPZ_DTYPES = {
    DType.BOOL, DType.U8, DType.I8, DType.U16, DType.I16, DType.U32, DType.I32, DType.U64,
    DType.I64, DType.F16, DType.F32, DType.F64, DType.C64,
}  # fmt: skip


@dataclass(frozen=True)
class ExportResult:
    commit: str
    to: str
    format: str
    files: tuple[str, ...]
    tensors: int
    size: int

    def to_json(self) -> dict[str, Any]:
        return {
            "commit": self.commit,
            "to": self.to,
            "format": self.format,
            "files": list(self.files),
            "tensors": self.tensors,
            "size": self.size,
        }


def export(
    repo: Repository,
    rev: str,
    to: Path,
    fmt: str,
    *,
    select: str | None = None,
    max_shard_size: int | None = None,
    tensors_only: bool = False,
    progress: Progress | None = None,
) -> ExportResult:
    if fmt not in FORMATS:
        raise InputError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if max_shard_size is not None and (max_shard_size <= 0 or fmt != "safetensors"):
        raise InputError("--max-shard-size must be positive and applies to safetensors only")
    cid, tree = snapshot(repo, rev)
    locations = tensor_map(repo, tree, select)
    if not locations:
        where = f" in {select}" if select else ""
        raise InputError(f"commit {cid[:12]} has no tensors to export{where}")
    _check_dtypes(locations, fmt)
    others = [] if tensors_only else _other_files(repo, tree, select, locations)
    written: list[str] = []
    total = 0
    with (
        staged_directory(to) as staging,
        ThreadPoolExecutor(default_workers(), thread_name_prefix="wvc-export") as pool,
    ):
        if fmt == "safetensors":
            shards = _shards(locations, max_shard_size)
            names = _shard_names(len(shards))
            weight_map: dict[str, str] = {}
            for shard, name in zip(shards, names, strict=True):
                total += _write_safetensors(repo, staging.file(name), shard, pool, progress)
                written.append(name)
                weight_map.update({t: name for t in shard})
            if len(shards) > 1:
                index = {
                    "metadata": {"total_size": _tensor_bytes(locations)},
                    "weight_map": weight_map,
                }
                text = (json.dumps(index, indent=2, sort_keys=True) + "\n").encode()
                total += write_file(staging.file("model.safetensors.index.json"), iter([text]))
                written.append("model.safetensors.index.json")
        else:
            total += _write_npz(repo, staging.file("model.npz"), locations, progress)
            written.append("model.npz")
        for rel, entry_manifest, path in others:
            if rel in written:
                raise InputError(f"{path}: would overwrite the exported {rel}; use --tensors-only")
            m = read_file_manifest(repo.objects, entry_manifest, path)
            data = (read_segment(repo.objects, seg, path) for seg in m.segments)
            total += write_file(staging.file(rel), data)
            written.append(rel)
    return ExportResult(cid, str(to), fmt, tuple(written), len(locations), total)


def _check_dtypes(locations: dict[str, TensorLocation], fmt: str) -> None:
    for name, loc in locations.items():
        d = loc.tensor.dtype
        if d.is_quantized:
            raise InputError(
                f"tensor {name!r} is {d.name}-quantized (GGML); {fmt} has no such dtype. "
                "Export a float GGUF, or dequantize it first"
            )
        if fmt == "npz" and d not in _NPZ_DTYPES:
            raise InputError(
                f"tensor {name!r} is {d.name}, which .npy has no standard type for; "
                "export to safetensors instead"
            )


def _other_files(
    repo: Repository, tree: Any, select: str | None, locations: dict[str, TensorLocation]
) -> list[tuple[str, str, str]]:
    """(path relative to the selection, manifest id, path) of files with no tensors."""
    tensor_files = {loc.path for loc in locations.values()}
    base = select.strip("/") + "/" if select else ""
    out = []
    for e in select_files(tree, select):
        if e.path in tensor_files or is_index_path(e.path):
            continue
        m = read_file_manifest(repo.objects, e.manifest, e.path)
        if m.tensors():
            continue  # another model's tensors (not selected)
        rel = e.path[len(base) :] if base and e.path.startswith(base) else e.path.rsplit("/", 1)[-1]
        out.append((rel, e.manifest, e.path))
    return out


def _tensor_bytes(locations: dict[str, TensorLocation]) -> int:
    return sum(loc.tensor.size for loc in locations.values())


def _shards(
    locations: dict[str, TensorLocation], max_size: int | None
) -> list[dict[str, TensorLocation]]:
    shards: list[dict[str, TensorLocation]] = [{}]
    size = 0
    for name, loc in locations.items():
        n = loc.tensor.size
        if max_size is not None and shards[-1] and size + n > max_size:
            shards.append({})
            size = 0
        shards[-1][name] = loc
        size += n
    return shards


def _shard_names(n: int) -> list[str]:
    if n == 1:
        return ["model.safetensors"]
    return [f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]


def _write_safetensors(
    repo: Repository,
    path: Path,
    shard: dict[str, TensorLocation],
    pool: ThreadPoolExecutor,
    progress: Progress | None,
) -> int:
    specs = {
        name: (loc.tensor.dtype, loc.tensor.shape, loc.tensor.size) for name, loc in shard.items()
    }
    header = build_header(specs, {"format": "pt"})

    def pieces() -> Iterator[bytes | memoryview]:
        yield header
        for loc in shard.values():
            for data in stream_tensor(repo.objects, loc, pool):
                if progress:
                    progress(len(data))
                yield data

    return write_file(path, pieces())


def _write_npz(
    repo: Repository, path: Path, locations: dict[str, TensorLocation], progress: Progress | None
) -> int:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, loc in locations.items():
            arr = read_tensor(repo.objects, loc)
            with zf.open(name + ".npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, arr, allow_pickle=False)
            if progress:
                progress(arr.nbytes)
    with open(path, "rb+") as f:
        os.fsync(f.fileno())
    return path.stat().st_size
