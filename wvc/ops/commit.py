"""Commit: store a checkpoint's chunks, then its manifests, then the commit, then move the ref.

Write order (docs/design.md, "Write order"): every chunk object, every file
manifest, the tree; directories fsynced; then one SQLite write transaction
that reads the branch head, writes the commit object, indexes everything and
moves the ref. A crash before that transaction commits leaves only
unreferenced objects; a reader never sees a ref to something missing.
"""

from __future__ import annotations

import getpass
import math
import os
import stat
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import Connection, insert

from .. import refs
from ..codecs import CodecId, get_codec
from ..dtypes import DType, plain_array, raw_bytes
from ..errors import InputError, ObjectRemovedError, PathNotFoundError, RefError
from ..formats import OPAQUE, FileLayout, SegmentSpec, detect
from ..formats.hf_index import parse_index, shard_path
from ..formats.safetensors import build_header
from ..index import (
    commit_parents,
    commits,
    dump_meta,
    index_tree_rows,
    objects,
    tensors,
    tree_files,
)
from ..ingest import DEFAULT_CHUNK_SIZE, BufferSource, FileSource, Progress, Source, ingest
from ..interop.torch import from_torch, is_torch_tensor
from ..layout import REPO_DIR
from ..manifest import (
    Commit,
    FileManifest,
    MetaValue,
    TensorInfo,
    Tree,
    TreeEntry,
    canonical,
    normalize_path,
    path_conflict,
)
from ..objects import ObjectKind, PutResult, hash_bytes, object_key
from ._bases import head_parent, parent_chunks
from ._running import running
from ._statcache import FileStat, lookup, record
from .gc import missing_objects

if TYPE_CHECKING:
    from ..repository import Repository


@dataclass(frozen=True)
class CommitResult:
    id: str
    parents: tuple[str, ...]
    branch: str | None
    files: int
    tensors: int
    logical_size: int
    new_stored_size: int
    new_objects: int
    warnings: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "parents": list(self.parents),
            "branch": self.branch,
            "files": self.files,
            "tensors": self.tensors,
            "logical_size": self.logical_size,
            "new_stored_size": self.new_stored_size,
            "new_objects": self.new_objects,
            "warnings": list(self.warnings),
        }


def _check_text(text: str, what: str) -> str:
    """Stored text must be valid Unicode (no lone surrogates from undecodable bytes)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(f"{what} {text!r} is not valid UTF-8 text") from None
    return text


def _check_meta(meta: Mapping[str, MetaValue]) -> dict[str, MetaValue]:
    out: dict[str, MetaValue] = {}
    for k, v in meta.items():
        if not isinstance(k, str) or not k:
            raise InputError(f"meta key {k!r} must be a non-empty string")
        _check_text(k, "meta key")
        if isinstance(v, np.generic):
            v = v.item()
        if isinstance(v, float) and not math.isfinite(v):
            raise InputError(f"meta {k}: {v} is not a finite number")
        if isinstance(v, str):
            _check_text(v, f"meta {k}:")
        elif not isinstance(v, int | float | bool) and v is not None:
            raise InputError(f"meta {k}: value must be a string, number, boolean or null")
        out[k] = v
    return out


def collect_files(paths: list[str | os.PathLike[str]]) -> list[tuple[str, Path]]:
    """(stored path, file on disk) for the inputs, sorted by stored path."""
    if not paths:
        raise InputError("nothing to commit: no paths given")
    found: dict[str, Path] = {}

    def add(stored: str, real: Path) -> None:
        stored = normalize_path(_check_text(stored, "file name"))
        if stored in found:
            raise InputError(f"{real}: two inputs would be stored as {stored!r}", str(real))
        found[stored] = real

    single_dir = len(paths) == 1 and Path(paths[0]).is_dir()
    for p in paths:
        path = Path(p)
        if not path.exists():
            raise PathNotFoundError(str(path))
        if path.is_dir():
            prefix = "" if single_dir else path.resolve().name + "/"
            for dirpath, dirnames, filenames in os.walk(path, onerror=_walk_error):
                if Path(dirpath) == path:  # a repository inside the checkpoint root
                    dirnames[:] = [d for d in dirnames if d != REPO_DIR]
                dirnames.sort()
                for d in dirnames:
                    if Path(dirpath, d).is_symlink():
                        raise InputError(
                            f"{Path(dirpath, d)}: symlinked directories are not followed"
                        )
                for name in filenames:
                    real = Path(dirpath, name)
                    rel = real.relative_to(path).as_posix()
                    add(prefix + rel, real)
        else:
            add(path.name, path)
    for real in found.values():
        try:
            mode = real.stat().st_mode
        except OSError as e:
            raise InputError(f"{real}: cannot read: {e.strerror}", str(real)) from None
        if not stat.S_ISREG(mode):
            raise InputError(f"{real}: not a regular file", str(real))
    if not found:
        raise InputError(f"nothing to commit: {paths[0]} holds no files")
    conflict = path_conflict(found)
    if conflict:
        raise InputError(f"{found[conflict]}: {conflict!r} would be both a file and a directory")
    return sorted(found.items())


def _walk_error(err: OSError) -> None:
    raise InputError(f"{err.filename}: cannot list directory: {err.strerror}", err.filename)


def commit_paths(
    repo: Repository,
    paths: list[str | os.PathLike[str]],
    message: str,
    meta: dict[str, MetaValue],
    opaque: bool,
    progress: Progress | None,
    branch: str | None = None,
    delta: bool = True,
    rehash: bool = False,
) -> CommitResult:
    meta = _check_meta(meta)
    _check_text(message, "commit message")
    files = collect_files(paths)
    read_started = time.time()
    stats = {stored: FileStat.of(real) for stored, real in files}
    hits = {} if rehash else lookup(repo, list(stats.values()), opaque, DEFAULT_CHUNK_SIZE)
    cached: list[tuple[str, str, FileManifest]] = []
    sources: list[FileSource] = []
    try:
        inputs: list[tuple[str, Source, FileLayout]] = []
        cached_warnings: list[str] = []
        for stored, real in files:
            hit = hits.get(stats[stored].path)
            if hit is not None and hit.format != "hf-index":  # indexes are re-checked below
                cached.append((stored, hit.format, hit.manifest))
                cached_warnings += hit.warnings
                continue
            src = FileSource(str(real))
            sources.append(src)
            fmt = OPAQUE if opaque else detect(stored)
            layout = fmt.parse(str(real), src.read_at, src.size)
            if layout.warnings:  # name the file as it is stored, not where it was on disk
                layout = replace(
                    layout,
                    warnings=tuple(
                        stored + w[len(str(real)) :] if w.startswith(str(real)) else w
                        for w in layout.warnings
                    ),
                )
            inputs.append((stored, src, layout))
            src.close()  # reopened when its chunks are read
        names = {stored: {t.name for t in m.tensors()} for stored, _, m in cached}
        warnings = cached_warnings + _check_shard_indexes(inputs, names)
        ingested: list[tuple[str, str, FileManifest]] = []
        result = _commit(
            repo, inputs, message, meta, progress, branch, warnings, delta, cached, ingested
        )
    finally:
        for opened in sources:
            opened.close()
    by_stored = {stored: layout for stored, _, layout in inputs}
    record(
        repo,
        [
            (stats[stored], fmt, hash_bytes(canonical(m)), by_stored[stored].warnings)
            for stored, fmt, m in ingested
        ],
        opaque,
        DEFAULT_CHUNK_SIZE,
        read_started,
    )
    return result


def snapshot_arrays(state_dict: Mapping[str, Any], *, copy: bool) -> dict[str, np.ndarray]:
    """Numpy arrays with the exact bits of each value (numpy arrays or torch tensors).

    With ``copy`` every array is a private copy (what a background commit
    needs while training goes on); otherwise arrays may share memory with the
    caller's tensors.
    """
    if not isinstance(state_dict, Mapping):
        raise InputError("state_dict must be a mapping of tensor name to array or tensor")
    out: dict[str, np.ndarray] = {}
    for name, value in state_dict.items():
        if not isinstance(name, str) or not name or name == "__metadata__":
            raise InputError(f"invalid tensor name {name!r}")
        if is_torch_tensor(value):
            try:
                a = from_torch(value, copy=copy)
            except InputError as e:
                raise InputError(f"tensor {name!r}: {e}") from None
        elif isinstance(value, np.ndarray | np.generic):
            a = np.array(value, copy=True) if copy else np.asarray(value)
        else:
            raise InputError(
                f"value for {name!r} is a {type(value).__name__}, not an array or tensor "
                "(put scalars in meta)"
            )
        out[name] = a
    return out


def commit_state_dict(
    repo: Repository,
    arrays: Mapping[str, np.ndarray],
    path: str,
    message: str,
    meta: dict[str, MetaValue],
    metadata: Mapping[str, str] | None,
    branch: str | None = None,
    delta: bool = True,
) -> CommitResult:
    """Commit arrays as one safetensors file, streamed from memory (no file is written)."""
    meta = _check_meta(meta)
    _check_text(message, "commit message")
    stored = normalize_path(_check_text(path, "path"))
    if metadata is not None and not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise InputError("metadata must map strings to strings (safetensors __metadata__)")
    if not arrays:
        raise InputError("nothing to commit: no tensors given")
    specs: dict[str, tuple[DType, tuple[int, ...], int]] = {}
    pieces: list[memoryview] = []
    for name, arr in arrays.items():
        a = plain_array(arr)
        try:
            dtype = DType.from_numpy(a.dtype)
        except InputError:
            raise InputError(f"tensor {name!r}: numpy dtype {a.dtype} cannot be stored") from None
        specs[name] = (dtype, tuple(a.shape), a.nbytes)
        pieces.append(raw_bytes(a))
    header = build_header(specs, metadata)
    segments = [SegmentSpec(0, len(header))]
    offset = len(header)
    for name, (dtype, shape, nbytes) in specs.items():
        segments.append(SegmentSpec(offset, nbytes, TensorInfo(name, dtype, shape)))
        offset += nbytes
    source = BufferSource(stored, [memoryview(header), *pieces])
    layout = FileLayout("safetensors", source.size, tuple(segments))
    return _commit(repo, [(stored, source, layout)], message, meta, None, branch, delta=delta)


def _check_shard_indexes(
    inputs: list[tuple[str, Source, FileLayout]], other_names: dict[str, set[str]] | None = None
) -> list[str]:
    """Warnings for shard indexes whose shards or tensors are not in the commit.

    ``other_names``: tensor names of the commit's files that are not in ``inputs``.
    """
    names = dict(other_names or {})
    names.update({stored: {t.name for t in layout.tensor_names()} for stored, _, layout in inputs})
    warnings = []
    for stored, src, layout in inputs:
        if layout.format != "hf-index":
            continue
        weight_map = parse_index(bytes(src.read_at(0, src.size)))
        src.close()
        missing_shards = sorted({shard_path(stored, f) for f in weight_map.values()} - set(names))
        if missing_shards:
            warnings.append(f"{stored}: names shard {missing_shards[0]} that is not in the commit")
            continue
        absent = [t for t, f in weight_map.items() if t not in names[shard_path(stored, f)]]
        if absent:
            warnings.append(
                f"{stored}: {len(absent)} tensor(s) are not in the shard the index names "
                f"(first: {absent[0]!r})"
            )
    return warnings


def _commit(
    repo: Repository,
    inputs: list[tuple[str, Source, FileLayout]],
    message: str,
    meta: dict[str, MetaValue],
    progress: Progress | None,
    branch: str | None = None,
    warnings: list[str] | None = None,
    delta: bool = True,
    cached: list[tuple[str, str, FileManifest]] | None = None,
    ingested: list[tuple[str, str, FileManifest]] | None = None,
) -> CommitResult:
    """Store ``inputs`` and commit them with the ``cached`` files (path, format, manifest).

    ``ingested``, if given, receives (path, format, manifest) of each input.
    """
    if branch is not None:
        refs.validate_name(branch, refs.RefKind.BRANCH)
    with running(repo.dir):
        return _ingest_and_record(
            repo, inputs, message, meta, progress, branch, warnings, delta, cached or [], ingested
        )


def _ingest_and_record(
    repo: Repository,
    inputs: list[tuple[str, Source, FileLayout]],
    message: str,
    meta: dict[str, MetaValue],
    progress: Progress | None,
    branch: str | None,
    warnings: list[str] | None,
    delta: bool,
    cached: list[tuple[str, str, FileManifest]],
    ingested: list[tuple[str, str, FileManifest]] | None,
) -> CommitResult:
    store = repo.objects
    bases = None
    if delta and inputs:
        parent = parent_chunks(repo, head_parent(repo, branch))
        bases = [parent.bases(stored, layout, DEFAULT_CHUNK_SIZE) for stored, _, layout in inputs]
    result = ingest(
        store, [(src, layout) for _, src, layout in inputs], progress=progress, bases=bases
    )
    files = [
        (stored, layout.format, manifest)
        for (stored, _src, layout), manifest in zip(inputs, result.manifests, strict=True)
    ]
    if ingested is not None:
        ingested.extend(files)
    reused = {c for _, _, m in cached for seg in m.segments for c in seg.chunks}
    for c in reused:
        store.store.touch(object_key(c))  # reused: a concurrent gc must spare it
    if progress is not None:
        progress(sum(m.size for _, _, m in cached))
    all_warnings = [w for _, _, layout in inputs for w in layout.warnings] + (warnings or [])
    return record_commit(
        repo,
        files + cached,
        result.puts,
        message,
        meta,
        Target(branch=branch),
        all_warnings,
        reused=reused,
    )


@dataclass(frozen=True)
class Target:
    """Where a new commit goes.

    ``onto=None``: its parent is the tip of ``branch`` (or HEAD) and that ref
    moves. ``onto=<commit id>``: its parent is that commit, and the ref that
    moves is ``branch`` (created if missing, else it must point at ``onto``),
    or the branch named ``onto_name``, or HEAD if HEAD is at ``onto``.
    """

    branch: str | None = None
    onto: str | None = None
    onto_name: str | None = None


def record_commit(
    repo: Repository,
    files: list[tuple[str, str, FileManifest]],
    chunk_puts: list[PutResult],
    message: str,
    meta: dict[str, MetaValue],
    target: Target,
    warnings: list[str] | None = None,
    reused: set[str] | None = None,
) -> CommitResult:
    """Store the manifests and tree of ``files`` (path, format, manifest), then commit.

    The chunks the manifests name must already be stored (``chunk_puts``, or
    ``reused``: ids of objects stored before, checked again under the lock).
    """
    meta = _check_meta(meta)
    _check_text(message, "commit message")
    if target.branch is not None:
        refs.validate_name(target.branch, refs.RefKind.BRANCH)
    store = repo.objects
    puts: list[tuple[ObjectKind, PutResult]] = [(ObjectKind.CHUNK, p) for p in chunk_puts]
    zstd = get_codec(CodecId.ZSTD)
    entries = []
    manifests: dict[str, FileManifest] = {}
    for stored, fmt, manifest in sorted(files, key=lambda f: f[0]):
        put = store.put(canonical(manifest), ObjectKind.MANIFEST, zstd)
        puts.append((ObjectKind.MANIFEST, put))
        manifests[put.id] = manifest
        entries.append(TreeEntry(stored, put.id, manifest.size, fmt))
    tree = Tree(tuple(entries))
    tree_put = store.put(canonical(tree), ObjectKind.TREE, zstd)
    puts.append((ObjectKind.TREE, tree_put))
    store.flush()

    # Objects this commit did not write itself: a concurrent gc may have removed one
    # (gc sweeps inside a write transaction, so the check below is decisive).
    reused = (
        (reused or set())
        | {p.id for _, p in puts if not p.new}
        | {p.base for _, p in puts if p.base}
    )
    with repo.index.write() as conn:
        gone = missing_objects(repo, reused)
        if gone:
            raise ObjectRemovedError(gone[0])
        state = refs.head(conn)
        move = _ref_to_move(conn, target, state)
        if target.onto is not None:
            parent: str | None = target.onto
        elif target.branch is not None:
            parent = refs.get_ref(conn, refs.BRANCH_PREFIX + target.branch) or state.target
        else:
            parent = state.target
        parents = (parent,) if parent else ()
        commit = Commit(
            tree=tree_put.id,
            parents=parents,
            message=message,
            author=os.environ.get("WVC_AUTHOR") or _default_author(),
            time=time.time(),
            meta=meta,
        )
        commit_put = store.put(canonical(commit), ObjectKind.COMMIT, zstd)
        store.flush()
        puts.append((ObjectKind.COMMIT, commit_put))
        new_puts = [p for _, p in puts if p.new]
        new_stored = sum(p.stored_size for p in new_puts)
        index_commit(conn, commit_put.id, commit, tree, manifests, puts, new_stored, len(new_puts))
        if move is not None:
            refs.set_ref(conn, move, commit_put.id)
        else:
            refs.advance_head(conn, commit_put.id)
    n_tensors = sum(len(m.tensors()) for m in manifests.values())
    branch = move.removeprefix(refs.BRANCH_PREFIX) if move is not None else state.branch
    return CommitResult(
        id=commit_put.id,
        parents=parents,
        branch=branch,
        files=len(entries),
        tensors=n_tensors,
        logical_size=tree.size,
        new_stored_size=new_stored,
        new_objects=len(new_puts),
        warnings=tuple(warnings or ()),
    )


def check_target(repo: Repository, target: Target) -> None:
    """Raise now (before anything is stored) if a commit to ``target`` would be refused."""
    if target.branch is not None:
        refs.validate_name(target.branch, refs.RefKind.BRANCH)
    with repo.index.read() as conn:
        _ref_to_move(conn, target, refs.head(conn))


def _ref_to_move(conn: Connection, target: Target, state: refs.HeadState) -> str | None:
    """The full name of the branch the commit moves, or None to advance HEAD."""
    if target.onto is None:
        return refs.BRANCH_PREFIX + target.branch if target.branch is not None else None
    onto = target.onto
    if target.branch is not None:
        full = refs.BRANCH_PREFIX + target.branch
        tip = refs.get_ref(conn, full)
        if tip is not None and tip != onto:
            raise RefError(
                f"branch {target.branch!r} is at {tip[:12]}, not at {onto[:12]}; "
                "name a new branch or the branch's tip"
            )
        return full
    if target.onto_name is not None:
        full = refs.BRANCH_PREFIX + target.onto_name
        tip = refs.get_ref(conn, full)
        if tip is not None:
            if tip != onto:
                raise RefError(f"branch {target.onto_name!r} moved while the commit was made")
            return full
    if state.target == onto:
        return None
    raise RefError(
        f"{target.onto_name or onto[:12]} is neither HEAD nor a branch tip; "
        "name a branch for the result with --branch"
    )


def _default_author() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user database entry (containers)
        return "unknown"


def index_commit(
    conn: Connection,
    commit_id: str,
    commit: Commit,
    tree: Tree,
    manifests: Mapping[str, FileManifest],
    puts: list[tuple[ObjectKind, PutResult]],
    new_stored_size: int,
    new_objects: int,
) -> None:
    """The index rows of one commit (docs/design.md, "Metadata index"), in ``conn``'s transaction.

    ``manifests`` are the tree's file manifests by id; ``puts`` the objects to
    list in the ``objects`` table.
    """
    index_objects(conn, puts)
    _index_tree(conn, commit.tree, tree, manifests)
    new_chunks = [p for kind, p in puts if p.new and kind is ObjectKind.CHUNK]
    deltas = [p for p in new_chunks if p.base is not None]
    conn.execute(
        insert(commits).values(
            new_raw_size=sum(p.raw_size for p in new_chunks),
            delta_objects=len(deltas),
            delta_raw_size=sum(p.raw_size for p in deltas),
            delta_stored_size=sum(p.stored_size for p in deltas),
            id=commit_id,
            tree=commit.tree,
            message=commit.message,
            author=commit.author,
            time=commit.time,
            meta=dump_meta(dict(commit.meta)),
            logical_size=tree.size,
            new_stored_size=new_stored_size,
            new_objects=new_objects,
        )
    )
    if commit.parents:
        conn.execute(
            insert(commit_parents),
            [
                {"commit": commit_id, "position": i, "parent": p}
                for i, p in enumerate(commit.parents)
            ],
        )


def index_objects(conn: Connection, puts: list[tuple[ObjectKind, PutResult]]) -> None:
    rows = {
        p.id: {
            "id": p.id,
            "kind": int(kind),
            "codec": int(p.codec),
            "raw_size": p.raw_size,
            "stored_size": p.stored_size,
            "base": p.base,
        }
        for kind, p in puts
    }
    if rows:
        # REPLACE: an object rewritten after `fsck --repair` may differ in stored size.
        conn.execute(insert(objects).prefix_with("OR REPLACE"), list(rows.values()))


def _index_tree(
    conn: Connection, tree_id: str, tree: Tree, manifests: Mapping[str, FileManifest]
) -> None:
    file_rows, tensor_rows = index_tree_rows(tree_id, tree, manifests)
    if file_rows:
        conn.execute(insert(tree_files).prefix_with("OR IGNORE"), file_rows)
    if tensor_rows:
        conn.execute(insert(tensors).prefix_with("OR IGNORE"), tensor_rows)
