"""Rewrite: a commit's files with some tensors replaced, added or removed.

The new files are built as manifests, not byte streams: untouched segments
keep their chunk ids (nothing is read or stored again) and only the new
tensor data is chunked and stored. A tensor replaced by one of the same dtype
and shape is swapped in place, which keeps any file valid whose format has no
checksum over tensor data (safetensors, GGUF, npy). Adding, removing,
retyping or reshaping rebuilds a safetensors file's header; the other formats
refuse such changes. Shard indexes (``*.index.json``) that list a changed
tensor are updated to match. ``apply`` and ``lora apply`` build on this.
"""

from __future__ import annotations

import json
import os
import posixpath
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..dtypes import DType, raw_bytes
from ..errors import InputError, MalformedFileError
from ..formats import detect
from ..formats._base import FileLayout, SegmentSpec
from ..formats.hf_index import shard_path
from ..formats.safetensors import SafetensorsFormat, build_header
from ..ingest import DEFAULT_CHUNK_SIZE, BufferSource, ingest
from ..manifest import (
    FileManifest,
    FileTensor,
    MetaValue,
    Segment,
    SegmentKind,
    TensorInfo,
    Tree,
)
from ..objects import PutResult
from ._read import read_file_manifest
from ._running import running
from .commit import CommitResult, Target, check_target, record_commit
from .restore import restore_files
from .tensors import StoredFile

if TYPE_CHECKING:
    from ..repository import Repository

# Formats whose files stay valid when a tensor's bytes change in place.
IN_PLACE_FORMATS = frozenset({"safetensors", "gguf", "npy"})


@dataclass(frozen=True)
class NewTensor:
    dtype: DType
    shape: tuple[int, ...]
    raw: memoryview  # the tensor's bytes


def new_tensor(dtype: DType, shape: tuple[int, ...], data: np.ndarray) -> NewTensor:
    """Checks that ``data`` holds exactly ``dtype`` x ``shape`` bytes."""
    raw = raw_bytes(data)
    expect = dtype.nbytes(shape)
    if expect != raw.nbytes:
        raise InputError(f"{dtype.name}{list(shape)} needs {expect} bytes, got {raw.nbytes}")
    return NewTensor(dtype, shape, raw)


def commit_edits(
    repo: Repository,
    onto: str,
    onto_name: str,
    tree: Tree,
    edits: dict[str, NewTensor | None],
    placement: dict[str, str] | None = None,
    *,
    message: str,
    meta: dict[str, MetaValue] | None,
    branch: str | None,
    to: str | os.PathLike[str] | None,
) -> tuple[tuple[str, ...], CommitResult | None]:
    """Make ``edits`` to commit ``onto`` (whose tree is ``tree``) and commit the result as its
    child, or, with ``to``, write the result's files there without a commit.

    The ref the commit would move is checked before anything is stored. Returns the
    changed files and the commit.
    """
    target = Target(branch=branch, onto=onto, onto_name=onto_name)
    if to is None:
        check_target(repo, target)
    with running(repo.dir):
        done = rewrite(repo, tree, edits, placement)
        if to is not None:
            restore_files(repo, [(p, m) for p, _, m in done.files], Path(to))
            return done.changed_files, None
        result = record_commit(repo, done.files, done.puts, message, dict(meta or {}), target)
    return done.changed_files, result


@dataclass(frozen=True)
class Rewritten:
    files: list[tuple[str, str, FileManifest]]  # (path, format, manifest) of every file
    puts: list[PutResult]
    changed_files: tuple[str, ...]


def rewrite(
    repo: Repository,
    tree: Tree,
    edits: dict[str, NewTensor | None],
    placement: dict[str, str] | None = None,
) -> Rewritten:
    """The files of ``tree`` with ``edits`` (name -> new tensor, or None to remove) made.

    ``placement`` names the file for each tensor the tree does not have.
    """
    placement = placement or {}
    manifests = {e.path: read_file_manifest(repo.objects, e.manifest, e.path) for e in tree.entries}
    formats = {e.path: e.format for e in tree.entries}
    where: dict[str, tuple[str, FileTensor]] = {}
    for path, m in manifests.items():
        for t in m.tensors():
            if t.name in where:
                raise InputError(f"tensor {t.name!r} is in both {where[t.name][0]} and {path}")
            where[t.name] = (path, t)
    by_file: dict[str, dict[str, NewTensor | None]] = defaultdict(dict)
    for name, new in edits.items():
        if name in where:
            by_file[where[name][0]][name] = new
        elif new is None:
            raise InputError(f"tensor {name!r} is not in the commit, so it cannot be removed")
        elif name in placement:
            by_file[placement[name]][name] = new
        else:
            raise InputError(f"tensor {name!r} is not in the commit and no file was named for it")
    puts: list[PutResult] = []
    out = dict(manifests)
    for path, file_edits in sorted(by_file.items()):
        if path in manifests:
            out[path] = _edit_file(repo, path, formats[path], manifests[path], file_edits, puts)
        else:
            if not path.endswith(".safetensors"):
                raise InputError(f"{path}: new tensors can only go into a new .safetensors file")
            if any(v is None for v in file_edits.values()):
                raise InputError(f"{path}: not in the commit")
            formats[path] = "safetensors"
            out[path] = _rebuild_safetensors(repo, path, None, file_edits, puts)
    changed = set(by_file)
    for e in tree.entries:
        if e.format == "hf-index":
            new_index = _update_index(repo, e.path, manifests[e.path], where, edits, placement)
            if new_index is not None:
                out[e.path] = _store_file(repo, e.path, new_index, puts)
                changed.add(e.path)
    files = [(p, formats[p], m) for p, m in sorted(out.items())]
    return Rewritten(files, puts, tuple(sorted(changed)))


def _edit_file(
    repo: Repository,
    path: str,
    fmt: str,
    manifest: FileManifest,
    edits: dict[str, NewTensor | None],
    puts: list[PutResult],
) -> FileManifest:
    tensors = {t.name: t for t in manifest.tensors()}
    in_place = all(
        new is not None
        and name in tensors
        and tensors[name].view is None
        and tensors[name].dtype is new.dtype
        and tensors[name].shape == new.shape
        for name, new in edits.items()
    )
    if in_place and fmt in IN_PLACE_FORMATS:
        segments = list(manifest.segments)
        news = [(tensors[name].segment, new) for name, new in edits.items() if new is not None]
        # Each new version may be stored as XOR deltas against the one it replaces.
        bases = [segments[i].chunks for i, _ in news]
        stored = _store_tensors(
            repo, path, [new for _, new in news], manifest.chunk_size, puts, bases
        )
        for (i, _), chunks in zip(news, stored, strict=True):
            segments[i] = replace(segments[i], chunks=chunks)
        return replace(manifest, segments=tuple(segments))
    if fmt == "safetensors":
        return _rebuild_safetensors(repo, path, manifest, edits, puts)
    what = "change tensors in place" if in_place else "add, remove, retype or reshape tensors"
    raise InputError(
        f"{path}: wvc cannot yet {what} in {fmt} files "
        "(export the model to safetensors with `wvc export` and commit that)",
        path,
    )


def _store_tensors(
    repo: Repository,
    path: str,
    news: list[NewTensor],
    chunk_size: int,
    puts: list[PutResult],
    bases: list[tuple[str, ...]] | None = None,
) -> list[tuple[str, ...]]:
    """Store the tensors' chunks (one pass through the ingest pool); their chunk ids.

    ``bases[i]``: the chunks of the version tensor ``i`` replaces (same dtype and shape).
    """
    specs = []
    offset = 0
    for i, new in enumerate(news):
        info = TensorInfo(str(i), new.dtype, new.shape)
        specs.append(SegmentSpec(offset, new.raw.nbytes, info))
        offset += new.raw.nbytes
    layout = FileLayout("raw", offset, tuple(specs))
    source = BufferSource(path, [new.raw for new in news])
    chunk_bases = [list(b) for b in bases] if bases is not None else None
    result = ingest(
        repo.objects,
        [(source, layout)],
        chunk_size=chunk_size,
        bases=[chunk_bases] if chunk_bases is not None else None,
    )
    puts.extend(result.puts)
    return [seg.chunks for seg in result.manifests[0].segments]


def _store_file(repo: Repository, path: str, data: bytes, puts: list[PutResult]) -> FileManifest:
    view = memoryview(data)
    layout = detect(path).parse(path, lambda o, n: data[o : o + n], len(data))
    source = BufferSource(path, [view[s.offset : s.offset + s.size] for s in layout.segments])
    result = ingest(repo.objects, [(source, layout)])
    puts.extend(result.puts)
    return result.manifests[0]


def _rebuild_safetensors(
    repo: Repository,
    path: str,
    manifest: FileManifest | None,
    edits: dict[str, NewTensor | None],
    puts: list[PutResult],
) -> FileManifest:
    """A safetensors file: the old tensors in their order (edited), then the new ones."""
    chunk_size = manifest.chunk_size if manifest is not None else DEFAULT_CHUNK_SIZE
    metadata: dict[str, str] | None = None
    if manifest is not None:  # keep the file's __metadata__
        old = StoredFile(repo.objects, manifest, path)
        described = SafetensorsFormat().describe(path, old.read_at, manifest.size)
        metadata = {str(k): str(v) for k, v in described.items()}
    order: list[tuple[str, DType, tuple[int, ...], Segment | NewTensor]] = []
    if manifest is not None:
        for t in manifest.tensors():
            if t.name in edits:
                continue
            order.append((t.name, t.dtype, t.shape, manifest.segments[t.segment]))
    for name, new in edits.items():
        if new is not None:
            order.append((name, new.dtype, new.shape, new))
    specs = {}
    for name, dtype, shape, src in order:
        size = src.size if isinstance(src, Segment) else src.raw.nbytes
        specs[name] = (dtype, shape, size)
    header = build_header(
        specs, {str(k): str(v) for k, v in metadata.items()} if metadata else None
    )
    head = NewTensor(DType.U8, (len(header),), memoryview(header))
    news = [head] + [src for *_, src in order if isinstance(src, NewTensor)]
    stored_chunks = iter(_store_tensors(repo, path, news, chunk_size, puts))
    segments = [Segment(SegmentKind.OPAQUE, len(header), next(stored_chunks))]
    for name, dtype, shape, src in order:
        info = TensorInfo(name, dtype, shape)
        if isinstance(src, Segment):
            segments.append(Segment(SegmentKind.TENSOR, src.size, src.chunks, info))
        else:
            segments.append(Segment(SegmentKind.TENSOR, src.raw.nbytes, next(stored_chunks), info))
    size = sum(s.size for s in segments)
    new_manifest = FileManifest("safetensors", size, chunk_size, tuple(segments), ())
    # The rebuilt file must parse as exactly these segments.
    stored = StoredFile(repo.objects, new_manifest, path)
    try:
        layout = SafetensorsFormat().parse(path, stored.read_at, size)
    except MalformedFileError as e:  # pragma: no cover - build_header and this parser agree
        raise InputError(f"{path}: rebuilt file does not parse: {e}") from None
    if [s.size for s in layout.segments] != [s.size for s in segments]:  # pragma: no cover
        raise InputError(f"{path}: rebuilt file does not match its manifest")
    return new_manifest


def _index_relative(index_path: str, file: str) -> str | None:
    """``file`` relative to the index's directory, if it is a safetensors file in it."""
    folder = posixpath.dirname(index_path)
    if posixpath.dirname(file) != folder or not file.endswith(".safetensors"):
        return None
    return posixpath.basename(file)


def _update_index(
    repo: Repository,
    path: str,
    manifest: FileManifest,
    where: dict[str, tuple[str, FileTensor]],
    edits: dict[str, NewTensor | None],
    placement: dict[str, str],
) -> bytes | None:
    """The shard index with removed tensors dropped and added ones listed, or None if unchanged."""
    raw = StoredFile(repo.objects, manifest, path).read_at(0, manifest.size)
    try:
        data: Any = json.loads(raw)
        weight_map = data["weight_map"]
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(weight_map, dict):
        return None
    shards = {shard_path(path, f): f for f in weight_map.values() if isinstance(f, str)}
    changed = False
    size_change = 0
    for name, new in edits.items():
        old = where.get(name)
        old_size = old[1].size if old is not None else 0
        new_size = new.raw.nbytes if new is not None else 0
        if name in weight_map:
            if new is None:
                del weight_map[name]
                changed = True
            elif new_size != old_size:
                changed = True
            size_change += new_size - old_size
        elif new is not None and name in placement:
            file = placement[name]
            rel = _index_relative(path, file)
            if file in shards or (rel is not None and path.endswith(".safetensors.index.json")):
                # a shard it names, or a new safetensors shard next to it
                weight_map[name] = shards.get(file, rel)
                size_change += new_size
                changed = True
    if not changed:
        return None
    meta = data.get("metadata")
    if isinstance(meta, dict) and isinstance(meta.get("total_size"), int):
        meta["total_size"] += size_change
    data["weight_map"] = dict(sorted(weight_map.items()))
    return (json.dumps(data, indent=2) + "\n").encode()
