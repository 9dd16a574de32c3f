"""The repository: where objects and the metadata index live, and the typed API over them.

Each public method is a thin call into one operation module (``wvc.ops.*``)
that returns a typed result; the CLI renders those results and nothing more.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

import numpy as np

from . import refs as refs_mod
from .errors import (
    CorruptIndexError,
    NotARepositoryError,
    RefError,
    RepositoryExistsError,
    UnsupportedFormatVersionError,
)
from .index import SCHEMA_VERSION, MetadataIndex
from .layout import DB_FILE, FORMAT_FILE, OBJECTS_DIR, REPO_DIR, TMP_DIR
from .manifest import MetaValue
from .objects import ObjectStore
from .ops import commit as commit_op
from .ops import delta as delta_op
from .ops import diff as diff_op
from .ops import export as export_op
from .ops import fetch as fetch_op
from .ops import fsck as fsck_op
from .ops import gc as gc_op
from .ops import history as history_op
from .ops import push as push_op
from .ops import remotes as remotes_op
from .ops import restore as restore_op
from .ops import stats as stats_op
from .ops._transfer import TransferProgress
from .ops.background import BackgroundCommits, CommitHandle
from .ops.commit import CommitResult
from .ops.delta import ApplyResult, DeltaResult, Mode
from .ops.diff import DiffResult
from .ops.export import ExportResult
from .ops.fetch import CloneResult, FetchResult, PullResult
from .ops.fsck import FsckResult
from .ops.history import LogEntry, ShowResult
from .ops.push import PushResult
from .ops.remotes import RemoteInfo, partial_fallback
from .ops.restore import RestoreResult
from .ops.stats import StatsResult
from .ops.tensors import LazyStateDict, tensor_map
from .remote import RemoteConfig
from .revision import resolve as resolve_rev
from .store import LocalStore
from .store._local import fsync_dir

if TYPE_CHECKING:
    from .ingest import Progress

FORMAT_NAME = "wvc"
FORMAT_VERSION = 1
# Temporary files older than this are leftovers of killed writers (docs/design.md).
STALE_TEMP_S = 3600.0


class Repository:
    """A wvc repository: ``<root>/.wvc`` with ``format``, ``wvc.db``, ``objects/`` and ``tmp/``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.dir = root / REPO_DIR
        self.tmp_dir = self.dir / TMP_DIR
        self._local = LocalStore(self.dir / OBJECTS_DIR, tmp_dir=self.tmp_dir)
        self.index = MetadataIndex(self.dir / DB_FILE)
        self.objects = ObjectStore(self._local, partial_fallback(self.dir, self.index))
        self._background = BackgroundCommits()

    # --- lifecycle -------------------------------------------------------------

    @classmethod
    def init(cls, path: str | os.PathLike[str] = ".") -> Repository:
        """Create an empty repository at ``path`` (which may exist and hold files)."""
        root = Path(path).absolute()
        d = root / REPO_DIR
        if (d / FORMAT_FILE).exists():
            raise RepositoryExistsError(str(d))
        (d / OBJECTS_DIR).mkdir(parents=True, exist_ok=True)
        (d / TMP_DIR).mkdir(exist_ok=True)
        repo = cls(root)
        if not (d / DB_FILE).exists() or repo.index.schema_version() is None:
            repo.index.create()
            with repo.index.write() as conn:
                refs_mod.set_head(conn, branch=refs_mod.DEFAULT_BRANCH)
        # The format file is written last: its presence marks a complete repository.
        fmt = json.dumps({"format": FORMAT_NAME, "version": FORMAT_VERSION}) + "\n"
        tmp = d / TMP_DIR / f"format.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            f.write(fmt)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, d / FORMAT_FILE)
        fsync_dir(d)
        return repo

    @classmethod
    def open(cls, path: str | os.PathLike[str] = ".", *, search_parents: bool = True) -> Repository:
        """Open the repository at ``path`` or, with ``search_parents``, its nearest parent."""
        start = Path(path).absolute()
        for candidate in (start, *start.parents) if search_parents else (start,):
            if (candidate / REPO_DIR / FORMAT_FILE).is_file():
                return cls._open_at(candidate)
        raise NotARepositoryError(str(start))

    @classmethod
    def _open_at(cls, root: Path) -> Repository:
        fmt_path = root / REPO_DIR / FORMAT_FILE
        try:
            fmt = json.loads(fmt_path.read_text())
            name, version = fmt.get("format"), fmt.get("version")
        except (ValueError, AttributeError):
            name, version = None, None
        if name != FORMAT_NAME or type(version) is not int or version != FORMAT_VERSION:
            raise UnsupportedFormatVersionError(str(fmt_path), version, FORMAT_VERSION)
        db = root / REPO_DIR / DB_FILE
        if not db.is_file():
            raise CorruptIndexError(str(db), "the file is missing")
        repo = cls(root)
        schema = repo.index.schema_version()
        if schema == 1:  # written by an earlier wvc: upgraded in place
            repo.index.upgrade(schema)
            schema = repo.index.schema_version()
        if schema != SCHEMA_VERSION:
            raise UnsupportedFormatVersionError(str(repo.index.path), schema, SCHEMA_VERSION)
        return repo

    def close(self) -> None:
        """Wait for background commits, then release the index."""
        self._background.wait_all()
        self.index.close()

    def __enter__(self) -> Repository:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- revisions and refs ------------------------------------------------------

    def resolve(self, rev: str) -> str:
        """The full commit id named by ``rev`` (see :mod:`wvc.revision`)."""
        with self.index.read() as conn:
            return resolve_rev(conn, rev)

    def head(self) -> refs_mod.HeadState:
        with self.index.read() as conn:
            return refs_mod.head(conn)

    def branch(self, name: str, rev: str = "HEAD", *, force: bool = False) -> refs_mod.Ref:
        with self.index.write() as conn:
            return refs_mod.create(
                conn, name, refs_mod.RefKind.BRANCH, resolve_rev(conn, rev), force=force
            )

    def delete_branch(self, name: str) -> refs_mod.Ref:
        with self.index.write() as conn:
            return refs_mod.remove(conn, name, refs_mod.RefKind.BRANCH)

    def branches(self) -> list[refs_mod.Ref]:
        with self.index.read() as conn:
            return refs_mod.list_refs(conn, refs_mod.RefKind.BRANCH)

    def tag(self, name: str, rev: str = "HEAD", *, force: bool = False) -> refs_mod.Ref:
        with self.index.write() as conn:
            return refs_mod.create(
                conn, name, refs_mod.RefKind.TAG, resolve_rev(conn, rev), force=force
            )

    def delete_tag(self, name: str) -> refs_mod.Ref:
        with self.index.write() as conn:
            return refs_mod.remove(conn, name, refs_mod.RefKind.TAG)

    def tags(self) -> list[refs_mod.Ref]:
        with self.index.read() as conn:
            return refs_mod.list_refs(conn, refs_mod.RefKind.TAG)

    def switch(self, target: str, *, create: bool = False) -> refs_mod.HeadState:
        """Make ``target`` the current branch (or detach HEAD at a commit)."""
        with self.index.write() as conn:
            if create:
                state = refs_mod.head(conn)
                if state.target is None:
                    raise RefError("cannot create a branch: HEAD has no commits yet")
                refs_mod.create(conn, target, refs_mod.RefKind.BRANCH, state.target)
            if refs_mod.get_ref(conn, refs_mod.BRANCH_PREFIX + target) is not None:
                refs_mod.set_head(conn, branch=target)
            else:
                refs_mod.set_head(conn, detached=resolve_rev(conn, target))
            return refs_mod.head(conn)

    # --- operations ----------------------------------------------------------------

    def commit(
        self,
        paths: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
        message: str = "",
        meta: Mapping[str, MetaValue] | None = None,
        *,
        opaque: bool = False,
        progress: Progress | None = None,
        branch: str | None = None,
        delta: bool = True,
        rehash: bool = False,
    ) -> CommitResult:
        """Commit a checkpoint directory, or files stored by their names.

        ``branch`` commits onto that branch (created from HEAD if it does not
        exist) without moving HEAD. Files a format could not read as tensors
        are stored opaque and named in ``CommitResult.warnings``. New chunks
        of tensors the parent commit holds in another version are stored as
        XOR deltas against them where that is clearly smaller (``delta=False``:
        never). A file whose size, times, inode and device are those recorded
        when it was last committed is not read again (``rehash=True``: read
        everything).
        """
        if isinstance(paths, str | os.PathLike):
            paths = [paths]
        self._local.remove_stale_temp(STALE_TEMP_S)
        return commit_op.commit_paths(
            self, list(paths), message, dict(meta or {}), opaque, progress, branch, delta, rehash
        )

    @overload
    def commit_state_dict(
        self,
        state_dict: Mapping[str, Any],
        path: str = ...,
        message: str = ...,
        meta: Mapping[str, MetaValue] | None = ...,
        *,
        metadata: Mapping[str, str] | None = ...,
        branch: str | None = ...,
        background: Literal[False] = ...,
        delta: bool = ...,
    ) -> CommitResult: ...

    @overload
    def commit_state_dict(
        self,
        state_dict: Mapping[str, Any],
        path: str = ...,
        message: str = ...,
        meta: Mapping[str, MetaValue] | None = ...,
        *,
        metadata: Mapping[str, str] | None = ...,
        branch: str | None = ...,
        background: Literal[True],
        delta: bool = ...,
    ) -> CommitHandle: ...

    def commit_state_dict(
        self,
        state_dict: Mapping[str, Any],
        path: str = "model.safetensors",
        message: str = "",
        meta: Mapping[str, MetaValue] | None = None,
        *,
        metadata: Mapping[str, str] | None = None,
        branch: str | None = None,
        background: bool = False,
        delta: bool = True,
    ) -> CommitResult | CommitHandle:
        """Commit tensors from memory (numpy arrays or CPU torch tensors) as one safetensors file.

        No file is written first. Every dtype keeps its exact bits (torch
        bfloat16 and float8 included). With ``background=True`` the tensors
        are copied now and committed on a worker thread: training can go on
        and change them; the returned :class:`CommitHandle`'s ``result()``
        gives the commit or raises its error (see :mod:`wvc.ops.background`
        for the memory bound).
        """
        meta_d = dict(meta or {})
        if branch is not None:
            refs_mod.validate_name(branch, refs_mod.RefKind.BRANCH)
        self._local.remove_stale_temp(STALE_TEMP_S)

        def run(arrays: dict[str, np.ndarray]) -> CommitResult:
            return commit_op.commit_state_dict(
                self, arrays, path, message, meta_d, metadata, branch, delta
            )

        if not background:
            return run(commit_op.snapshot_arrays(state_dict, copy=False))
        return self._background.submit(
            lambda: commit_op.snapshot_arrays(state_dict, copy=True), run, path
        )

    def commit_tensors(
        self,
        tensors: Mapping[str, np.ndarray],
        path: str = "model.safetensors",
        message: str = "",
        meta: Mapping[str, MetaValue] | None = None,
        *,
        metadata: Mapping[str, str] | None = None,
    ) -> CommitResult:
        """Commit in-memory arrays as one safetensors file (same as :meth:`commit_state_dict`)."""
        return self.commit_state_dict(tensors, path, message, meta, metadata=metadata)

    def load_state_dict(
        self, rev: str = "HEAD", file: str | None = None, *, framework: str = "numpy"
    ) -> LazyStateDict:
        """The tensors of ``rev`` (or of one file, directory or shard index), read lazily.

        Each tensor is read from the store, verified, when it is accessed;
        ``framework="torch"`` gives torch tensors with exact dtypes.
        """
        _, tree = restore_op.snapshot(self, rev)
        return LazyStateDict(self.objects, tensor_map(self, tree, file), framework)

    def log(
        self,
        rev: str = "HEAD",
        *,
        limit: int | None = None,
        where: str | None = None,
        sort: str | None = None,
        reverse: bool = False,
    ) -> list[LogEntry]:
        """Commits reachable from ``rev``, newest first.

        ``where="loss<1.5 and lr=1e-4"`` keeps commits whose meta matches;
        ``sort="eval_loss"`` orders by a meta key (ascending, missing last).
        """
        return history_op.log(self, rev, limit, where, sort, reverse)

    def show(self, rev: str = "HEAD") -> ShowResult:
        return history_op.show(self, rev)

    def restore(
        self,
        rev: str,
        to: str | os.PathLike[str],
        *,
        paths: Sequence[str] | None = None,
        progress: Progress | None = None,
    ) -> RestoreResult:
        """Write the files of ``rev`` into ``to`` (absent or empty), byte-identical."""
        return restore_op.restore(self, rev, Path(to), paths, progress)

    def diff(
        self,
        a: str,
        b: str = "HEAD",
        *,
        tensors: str | None = None,
        rank: bool = False,
        path: str | None = None,
    ) -> DiffResult:
        """Per-tensor differences between ``a`` and ``b`` (revisions or checkpoints on disk).

        Tensors are matched by name across files and shards; unchanged ones are
        found from stored digests without reading data. ``tensors`` filters
        names by a glob, ``rank`` estimates the delta rank of 2-D tensors,
        ``path`` restricts both sides to one file, directory or shard index.
        """
        return diff_op.diff(self, a, b, tensors=tensors, rank=rank, path=path)

    def delta(
        self,
        a: str,
        b: str,
        out: str | os.PathLike[str],
        *,
        mode: Mode = "auto",
        rank: int | None = None,
        energy: float | None = None,
        residual: bool = False,
        tensors: str | None = None,
        path: str | None = None,
        progress: Progress | None = None,
    ) -> DeltaResult:
        """Write a delta file at ``out`` that turns ``a`` into ``b``.

        ``mode="auto"`` picks the smaller lossless encoding per tensor (XOR or
        sparse); ``"lowrank"`` factors 2-D float changes (``rank`` or
        ``energy``), lossy unless ``residual``. ``tensors`` is a glob: other
        tensors are left out of the delta but must match on apply.
        """
        return delta_op.make_delta(
            self,
            a,
            b,
            out,
            mode=mode,
            rank=rank,
            energy=energy,
            residual=residual,
            tensors=tensors,
            path=path,
            progress=progress,
        )

    def apply(
        self,
        delta: str | os.PathLike[str],
        onto: str = "HEAD",
        *,
        message: str | None = None,
        meta: dict[str, MetaValue] | None = None,
        branch: str | None = None,
        to: str | os.PathLike[str] | None = None,
    ) -> ApplyResult:
        """Apply a delta file onto ``onto`` after checking it is the delta's base.

        The result is committed as a child of ``onto`` (moving ``branch``, the
        branch ``onto`` names, or HEAD when it is at ``onto``), or written to
        the new directory ``to`` without a commit.
        """
        return delta_op.apply_delta(
            self, delta, onto, message=message, meta=meta, branch=branch, to=to
        )

    def export(
        self,
        rev: str,
        to: str | os.PathLike[str],
        *,
        format: str = "safetensors",
        path: str | None = None,
        max_shard_size: int | None = None,
        tensors_only: bool = False,
        progress: Progress | None = None,
    ) -> ExportResult:
        """Write the tensors of ``rev`` (or of ``path`` in it) as safetensors or npz into ``to``."""
        return export_op.export(
            self,
            rev,
            Path(to),
            format,
            select=path,
            max_shard_size=max_shard_size,
            tensors_only=tensors_only,
            progress=progress,
        )

    def load(self, rev: str = "HEAD", file: str | None = None) -> dict[str, np.ndarray]:
        """The tensors of ``rev`` as numpy arrays, read now (see :meth:`load_state_dict`).

        ``file`` selects one file, a directory, or a shard index (whose shards
        are read as one model); by default every file's tensors, whose names
        must then be unique across files.
        """
        return restore_op.load(self, rev, file)

    def stats(self, rev: str | None = None) -> StatsResult:
        return stats_op.stats(self, rev)

    def gc(
        self,
        *,
        dry_run: bool = False,
        grace_s: float = gc_op.GRACE_S,
        progress: Progress | None = None,
    ) -> gc_op.GcResult:
        """Remove objects no ref reaches, older than ``grace_s`` and than any running writer.

        Every delta base a kept object needs is kept. See :mod:`wvc.ops.gc`.
        """
        return gc_op.gc(self, dry_run=dry_run, grace_s=grace_s, progress=progress)

    def fsck(self, *, progress: Progress | None = None, repair: bool = False) -> FsckResult:
        """Verify every object, manifest, ref and index row (see :mod:`wvc.ops.fsck`)."""
        return fsck_op.fsck(self, progress, repair)

    # --- remotes -----------------------------------------------------------------------

    def add_remote(
        self, name: str, url: str, options: Mapping[str, Any] | None = None
    ) -> RemoteConfig:
        """Record remote ``name`` at ``url`` (a directory or any fsspec URL).

        ``options`` are fsspec storage options, stored in ``.wvc/config.json``
        as given; credentials are better left to the backend's own
        configuration (environment, ``~/.aws``, ...).
        """
        return remotes_op.add_remote(self, name, url, dict(options or {}))

    def remove_remote(self, name: str, *, force: bool = False) -> RemoteConfig:
        """Forget remote ``name`` and its remote-tracking branches (the remote is untouched).

        A remote a partial fetch left chunks on is kept unless ``force``.
        """
        return remotes_op.remove_remote(self, name, force=force)

    def remotes(self) -> list[RemoteInfo]:
        return remotes_op.list_remotes(self)

    def push(
        self,
        remote: str = "origin",
        refs: Sequence[str] | None = None,
        *,
        force: bool = False,
        tags: bool = False,
        jobs: int | None = None,
        progress: TransferProgress | None = None,
    ) -> PushResult:
        """Upload what ``remote`` lacks for ``refs`` (default: the current branch), then move them.

        A remote branch moves only by fast-forward unless ``force``; a
        concurrent push that moved it first makes this one raise
        :class:`~wvc.errors.PushRejectedError` ("fetch first").
        """
        return push_op.push(
            self, remote, refs, force=force, tags=tags, jobs=jobs, progress=progress
        )

    def fetch(
        self,
        remote: str = "origin",
        branches: Sequence[str] | None = None,
        *,
        files: Sequence[str] = (),
        tensors: Sequence[str] = (),
        prune: bool = False,
        force_tags: bool = False,
        jobs: int | None = None,
        progress: TransferProgress | None = None,
    ) -> FetchResult:
        """Fetch the remote's branches (as ``REMOTE/BRANCH``) and tags with the objects they need.

        ``files`` / ``tensors`` (globs) make a partial fetch: only those chunks
        of the fetched commits are downloaded; others are fetched on demand.
        """
        return fetch_op.fetch(
            self,
            remote,
            branches,
            files=files,
            tensors=tensors,
            prune=prune,
            force_tags=force_tags,
            jobs=jobs,
            progress=progress,
        )

    def pull(
        self,
        remote: str = "origin",
        branch: str | None = None,
        *,
        files: Sequence[str] = (),
        tensors: Sequence[str] = (),
        jobs: int | None = None,
        progress: TransferProgress | None = None,
    ) -> PullResult:
        """Fetch ``branch`` (default: the current branch) and fast-forward it to the remote's."""
        return fetch_op.pull(
            self, remote, branch, files=files, tensors=tensors, jobs=jobs, progress=progress
        )

    @classmethod
    def clone(
        cls,
        url: str,
        path: str | os.PathLike[str] | None = None,
        *,
        branch: str | None = None,
        files: Sequence[str] = (),
        tensors: Sequence[str] = (),
        options: Mapping[str, Any] | None = None,
        jobs: int | None = None,
        progress: TransferProgress | None = None,
    ) -> Repository:
        """A new repository at ``path`` from the remote at ``url`` (remote ``origin``).

        ``files`` / ``tensors`` make a partial clone; see :meth:`fetch`. The
        clone's result is :attr:`last_clone`.
        """
        repo, result = fetch_op.clone(
            url,
            path,
            branch=branch,
            files=files,
            tensors=tensors,
            options=dict(options or {}),
            jobs=jobs,
            progress=progress,
        )
        repo.last_clone = result
        return repo

    last_clone: CloneResult | None = None

    def __repr__(self) -> str:
        return f"Repository({str(self.root)!r})"
