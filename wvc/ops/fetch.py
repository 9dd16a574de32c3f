"""fetch, pull and clone: bring a remote's commits and the objects they need into a repository.

Fetch walks the remote's commit graph from its refs down to commits this
repository already has, reads the new commits' trees and file manifests,
then downloads the chunks it lacks, concurrently. Every object is verified
against its id before it is stored; a remote object whose content does not
match its name stops the fetch and is not kept. Only when every object is
stored and durable does one index transaction add the commits and move the
remote-tracking refs (``refs/remotes/<remote>/<branch>``), so an interrupted
fetch leaves nothing half-indexed and a re-run downloads only what is missing.

A partial fetch (``files`` / ``tensors`` globs) takes every commit, tree and
manifest but only the chunks of the selected files or tensors of the fetched
refs' commits; the remote is marked partial, and the object store fetches
anything else on demand (:class:`~wvc.ops.remotes.OnDemandFetch`).
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection

from .. import refs
from ..errors import (
    CorruptObjectError,
    InputError,
    ObjectRemovedError,
    RefError,
    RemoteError,
    TargetNotEmptyError,
)
from ..layout import REPO_DIR
from ..manifest import (
    Commit,
    FileManifest,
    ManifestError,
    SegmentKind,
    Tree,
    parse_commit,
    parse_file_manifest,
    parse_tree,
)
from ..objects import ObjectHeader, ObjectKind, PutResult, object_key
from ..remote import Remote
from ..remote.config import mark_partial
from ..revision import is_ancestor, known_commits
from ._read import read_commit, read_file_manifest, read_tree
from ._running import running
from ._transfer import RefUpdate, TransferProgress, UpdateStatus, check_jobs, move_all
from .commit import index_commit, index_objects
from .gc import missing_objects
from .remotes import add_remote, open_remote, partial_fallback

if TYPE_CHECKING:
    from ..repository import Repository


@dataclass(frozen=True)
class FetchResult:
    remote: str
    url: str
    updates: tuple[RefUpdate, ...]  # local names: refs/remotes/R/X and refs/tags/X
    commits: int  # new commits indexed
    objects: int  # objects downloaded
    bytes: int  # their stored bytes
    partial: bool
    warnings: tuple[str, ...] = field(default=())

    @property
    def up_to_date(self) -> bool:
        return self.commits == 0 and all(u.status is UpdateStatus.UP_TO_DATE for u in self.updates)

    def to_json(self) -> dict[str, Any]:
        return {
            "remote": self.remote,
            "url": self.url,
            "up_to_date": self.up_to_date,
            "updates": [u.to_json() for u in self.updates],
            "commits": self.commits,
            "objects": self.objects,
            "bytes": self.bytes,
            "partial": self.partial,
            "warnings": list(self.warnings),
        }


@dataclass(frozen=True)
class PullResult:
    fetch: FetchResult
    branch: str
    old: str | None
    new: str
    status: UpdateStatus

    def to_json(self) -> dict[str, Any]:
        return {
            "fetch": self.fetch.to_json(),
            "branch": self.branch,
            "old": self.old,
            "new": self.new,
            "status": self.status.value,
        }


@dataclass(frozen=True)
class CloneResult:
    path: str
    branch: str | None
    head: str | None
    fetch: FetchResult

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "branch": self.branch,
            "head": self.head,
            "fetch": self.fetch.to_json(),
        }


@dataclass(frozen=True)
class Selection:
    """What a partial fetch keeps: files by path glob, tensors by name glob."""

    files: tuple[str, ...] = ()
    tensors: tuple[str, ...] = ()

    @property
    def partial(self) -> bool:
        return bool(self.files or self.tensors)

    def file_matches(self, path: str) -> bool:
        if not self.files:
            return True
        base = path.rsplit("/", 1)[-1]
        return any(
            fnmatch.fnmatchcase(path, g) or ("/" not in g and fnmatch.fnmatchcase(base, g))
            for g in self.files
        )

    def chunks(self, manifest: FileManifest) -> list[str]:
        """The chunks of ``manifest`` the selection needs (opaque segments always)."""
        out: list[str] = []
        for seg in manifest.segments:
            if self.tensors and seg.kind is not SegmentKind.OPAQUE:
                names = [seg.tensor.name] if seg.tensor is not None else []
                names += [v.name for v in manifest.views if manifest.segments[v.segment] is seg]
                if not any(fnmatch.fnmatchcase(n, g) for n in names for g in self.tensors):
                    continue
            out.extend(seg.chunks)
        return out


class _Fetcher:
    """One fetch: downloads verified objects, remembers what it stored."""

    def __init__(self, repo: Repository, remote: Remote, jobs: int) -> None:
        self.repo = repo
        self.remote = remote
        self.jobs = jobs
        self.stored: dict[str, PutResult] = {}  # downloaded now
        self.present: dict[str, PutResult] = {}  # already here (maybe an interrupted fetch's)
        self.kinds: dict[str, ObjectKind] = {}
        self._lock = threading.Lock()
        self._in_flight: dict[str, threading.Event] = {}

    def note_present(self, oid: str) -> None:
        """Remember an object that is already here, for its ``objects`` row."""
        key = object_key(oid)
        self.repo.objects.store.make_durable(key)  # maybe left unflushed by a killed fetch
        self.repo.objects.store.touch(key)  # reused: a concurrent gc must spare it
        header, size = self.repo.objects.read_header(oid)
        self.present[oid] = PutResult(
            oid, header.raw_length, size, header.codec, False, header.base
        )

    def download(self, oid: str, what: str) -> bytes | None:
        """Store the verified object if missing locally; None when it was already here.

        A delta object's base is downloaded first (verified, stored), so that
        the delta can be verified against it. Two threads needing one object
        download it once.
        """
        key = object_key(oid)
        local = self.repo.objects.store
        while True:
            with self._lock:
                busy = self._in_flight.get(oid)
                if busy is None:
                    if local.exists(key):
                        break
                    busy = self._in_flight[oid] = threading.Event()
                    mine = True
                else:
                    mine = False
            if not mine:
                busy.wait()
                continue
            try:
                return self._download(oid, what)
            finally:
                with self._lock:
                    del self._in_flight[oid]
                busy.set()
        self.note_present(oid)
        return None

    def _download(self, oid: str, what: str) -> bytes:
        local = self.repo.objects.store
        try:
            blob = self.remote.get_object(oid)
        except KeyError:
            raise RemoteError(
                f"{self.remote.url}: {what} {oid} is missing on the remote", self.remote.url
            ) from None
        try:
            header = ObjectHeader.unpack(blob, oid)
        except CorruptObjectError as e:
            raise CorruptObjectError(
                oid,
                f"{e.problem}; the remote's copy is damaged and was not stored",
                f"{what} on {self.remote.url}",
            ) from None
        if header.base is not None:
            # The base first (its own errors name it), then this delta against it.
            self.kinds.setdefault(header.base, ObjectKind.CHUNK)
            self.download(header.base, f"delta base of {oid[:12]} ({what})")
        try:
            self.repo.objects.decode(oid, blob, what)
        except CorruptObjectError as e:
            raise CorruptObjectError(
                oid,
                f"{e.problem}; the remote's copy is damaged and was not stored",
                f"{what} on {self.remote.url}",
            ) from None
        local.put(object_key(oid), blob)
        self.stored[oid] = PutResult(
            oid, header.raw_length, len(blob), header.codec, True, header.base
        )
        return blob

    def read(self, oid: str, what: str, kind: ObjectKind) -> bytes:
        """An object's raw bytes: downloaded (and kept) if missing, verified either way."""
        self.kinds[oid] = kind
        blob = self.download(oid, what)
        if blob is None:
            return bytes(self.repo.objects.get(oid, what))
        return bytes(self.repo.objects.decode(oid, blob, what))

    def parse(self, oid: str, what: str, kind: ObjectKind) -> Any:
        raw = self.read(oid, what, kind)
        parser = {
            ObjectKind.COMMIT: parse_commit,
            ObjectKind.TREE: parse_tree,
            ObjectKind.MANIFEST: parse_file_manifest,
        }[kind]
        try:
            return parser(raw)
        except ManifestError as e:
            raise CorruptObjectError(oid, str(e), what) from None

    def parse_all(self, ids: Sequence[tuple[str, str]], kind: ObjectKind) -> dict[str, Any]:
        if not ids:
            return {}
        with ThreadPoolExecutor(self.jobs, thread_name_prefix="wvc-fetch") as pool:
            results = pool.map(lambda item: self.parse(item[0], item[1], kind), ids)
            return dict(zip([i for i, _ in ids], results, strict=True))


def _topological(new: dict[str, Commit]) -> list[str]:
    """New commits, every parent before its children."""
    order: list[str] = []
    done: set[str] = set()
    for start in sorted(new):
        stack = [(start, False)]
        while stack:
            cid, expanded = stack.pop()
            if cid in done or cid not in new:
                continue
            if expanded:
                done.add(cid)
                order.append(cid)
                continue
            stack.append((cid, True))
            stack.extend((p, False) for p in new[cid].parents if p not in done)
    return order


def fetch(
    repo: Repository,
    remote_name: str,
    branches: Sequence[str] | None = None,
    *,
    files: Sequence[str] = (),
    tensors: Sequence[str] = (),
    prune: bool = False,
    force_tags: bool = False,
    jobs: int | None = None,
    progress: TransferProgress | None = None,
) -> FetchResult:
    """Fetch ``branches`` (default: every branch and tag) of the remote ``remote_name``."""
    with running(repo.dir):
        return _fetch(
            repo, remote_name, branches, files, tensors, prune, force_tags, jobs, progress
        )


def _fetch(
    repo: Repository,
    remote_name: str,
    branches: Sequence[str] | None,
    files: Sequence[str],
    tensors: Sequence[str],
    prune: bool,
    force_tags: bool,
    jobs: int | None,
    progress: TransferProgress | None,
) -> FetchResult:
    n_jobs = check_jobs(jobs)
    selection = Selection(tuple(files), tuple(tensors))
    remote = open_remote(repo, remote_name)
    remote.check()
    if branches:
        # Only the refs asked for are read: a damaged ref elsewhere does not matter.
        wanted = {}
        for b in branches:
            full = refs.BRANCH_PREFIX + b.removeprefix(refs.BRANCH_PREFIX)
            target = remote.read_ref(full)
            if target is None:
                raise RefError(f"remote {remote_name!r} has no branch {b!r}")
            wanted[full] = target
        remote_refs = wanted
    else:
        remote_refs = remote.refs()
        wanted = dict(remote_refs)
    fetcher = _Fetcher(repo, remote, n_jobs)

    # 1. Commits: walk down from the refs to what this repository has.
    new: dict[str, Commit] = {}
    with repo.index.read() as conn:
        frontier = sorted(set(wanted.values()) - known_commits(conn, list(wanted.values())))
    named = {target: f"commit of remote ref {full}" for full, target in wanted.items()}
    while frontier:
        items = [(c, named.get(c, "commit")) for c in frontier]
        parsed = fetcher.parse_all(items, ObjectKind.COMMIT)
        new.update(parsed)
        parents = {p for c in parsed.values() for p in c.parents if p not in new}
        with repo.index.read() as conn:
            frontier = sorted(parents - known_commits(conn, list(parents)))
    order = _topological(new)

    # 2. Trees and file manifests of the new commits (and of the tips, for a partial fetch).
    tree_ids = sorted({new[c].tree for c in order})
    trees: dict[str, Tree] = fetcher.parse_all([(t, "tree") for t in tree_ids], ObjectKind.TREE)
    manifest_ids = sorted({(e.manifest, e.path) for t in trees.values() for e in t.entries})
    manifests: dict[str, FileManifest] = fetcher.parse_all(manifest_ids, ObjectKind.MANIFEST)

    # 3. Chunks: a full fetch takes every chunk of the new commits, and of the fetched
    # refs' commits (so a full fetch completes what a partial one left out of them);
    # a partial fetch only the selection's chunks of the fetched refs' commits.
    is_partial = selection.partial
    chunk_ids: dict[str, str] = {}  # id → file path (for messages)
    # Known tips can lack chunks only in a repository a partial fetch made.
    tips = set(wanted.values()) if is_partial or repo.objects.fallback else set(new)
    for tip in sorted(tips & set(wanted.values())):
        tree = trees.get(new[tip].tree) if tip in new else None
        if tree is None:
            tree = read_tree(repo.objects, read_commit(repo.objects, tip).tree)
        for e in tree.entries:
            if not selection.file_matches(e.path):
                continue
            m = manifests.get(e.manifest) or read_file_manifest(repo.objects, e.manifest, e.path)
            chunk_ids.update(dict.fromkeys(selection.chunks(m), e.path))
    if not is_partial:
        for t in tree_ids:
            for e in trees[t].entries:
                m = manifests[e.manifest]
                chunk_ids.update((c, e.path) for seg in m.segments for c in seg.chunks)
    local = repo.objects.store
    missing = []
    for c in chunk_ids:
        if local.exists(object_key(c)):
            fetcher.note_present(c)
        else:
            missing.append(c)
    raw_sizes = _raw_sizes(manifests, set(missing))
    if progress is not None and missing:
        progress.start("fetching", sum(raw_sizes.get(c, 0) for c in missing))

    def one(oid: str) -> int | None:
        fetcher.kinds[oid] = ObjectKind.CHUNK
        blob = fetcher.download(oid, f"chunk of {chunk_ids[oid]}")
        return None if blob is None else len(blob)

    move_all(missing, one, n_jobs, progress, weight=lambda c: raw_sizes.get(c, 0))
    local.flush()

    # 4. One transaction: index the new commits oldest first, move the refs.
    warnings: list[str] = []
    updates: list[RefUpdate] = []
    found = {**fetcher.present, **fetcher.stored}
    owned: dict[str, list[str]] = {}
    for oid, user in _first_users(order, new, trees, manifests).items():
        if oid in found:
            owned.setdefault(user, []).append(oid)
    with repo.index.write() as conn:
        gone = missing_objects(repo, set(fetcher.present))
        if gone:
            raise ObjectRemovedError(gone[0])
        already = known_commits(conn, order)
        for cid in order:
            if cid in already:  # another fetch indexed it meanwhile
                continue
            commit = new[cid]
            tree = trees[commit.tree]
            puts = [(fetcher.kinds.get(o, ObjectKind.CHUNK), found[o]) for o in owned.get(cid, [])]
            index_commit(
                conn,
                cid,
                commit,
                tree,
                {e.manifest: manifests[e.manifest] for e in tree.entries},
                puts,
                sum(p.stored_size for _, p in puts if p.new),
                sum(1 for _, p in puts if p.new),
            )
        # Chunks of commits indexed before (a partial fetch's tips completed) get rows too.
        owned_ids = {o for ids in owned.values() for o in ids}
        index_objects(
            conn,
            [
                (fetcher.kinds.get(o, ObjectKind.CHUNK), p)
                for o, p in found.items()
                if o not in owned_ids
            ],
        )
        for full, target in sorted(wanted.items()):
            if full.startswith(refs.BRANCH_PREFIX):
                local_name = refs.remote_ref(remote_name, full.removeprefix(refs.BRANCH_PREFIX))
                old = refs.get_ref(conn, local_name)
                refs.set_ref(conn, local_name, target)
            else:
                local_name = full
                old = refs.get_ref(conn, full)
                if old is not None and old != target and not force_tags:
                    warnings.append(
                        f"tag {full.removeprefix(refs.TAG_PREFIX)!r} is {target[:12]} on "
                        f"{remote_name} but {old[:12]} here; kept yours (fetch --force-tags "
                        "to take theirs)"
                    )
                    continue
                refs.set_ref(conn, full, target)
            updates.append(RefUpdate(local_name, old, target, _status(conn, old, target)))
        if prune and not branches:
            prefix = refs.remote_ref(remote_name, "")
            for name, target in refs.list_prefixed(conn, prefix).items():
                branch = refs.BRANCH_PREFIX + name.removeprefix(prefix)
                if branch not in remote_refs:
                    refs.delete_ref(conn, name)
                    updates.append(RefUpdate(name, target, None, UpdateStatus.PRUNED))
    if is_partial:
        mark_partial(repo.dir, remote_name)
        repo.objects.fallback = partial_fallback(repo.dir, repo.index)
    stored = list(fetcher.stored.values())
    return FetchResult(
        remote=remote_name,
        url=remote.url,
        updates=tuple(updates),
        commits=len(order) - len(already),
        objects=len(stored),
        bytes=sum(p.stored_size for p in stored),
        partial=is_partial,
        warnings=tuple(warnings),
    )


def _status(conn: Connection, old: str | None, new: str) -> UpdateStatus:
    if old == new:
        return UpdateStatus.UP_TO_DATE
    if old is None:
        return UpdateStatus.CREATED
    if is_ancestor(conn, old, new):
        return UpdateStatus.FAST_FORWARD
    return UpdateStatus.FORCED


def _raw_sizes(manifests: dict[str, FileManifest], wanted: set[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for m in manifests.values():
        for seg in m.segments:
            left = seg.size
            for c in seg.chunks:
                n = min(m.chunk_size, left)
                left -= n
                if c in wanted:
                    out[c] = n
    return out


def _first_users(
    order: list[str],
    new: dict[str, Commit],
    trees: dict[str, Tree],
    manifests: dict[str, FileManifest],
) -> dict[str, str]:
    """object id → the oldest new commit that needs it (whose new_stored_size counts it)."""
    owner: dict[str, str] = {}
    for cid in order:
        commit = new[cid]
        owner.setdefault(cid, cid)
        owner.setdefault(commit.tree, cid)
        for e in trees[commit.tree].entries:
            owner.setdefault(e.manifest, cid)
            for seg in manifests[e.manifest].segments:
                for c in seg.chunks:
                    owner.setdefault(c, cid)
    return owner


def pull(
    repo: Repository,
    remote_name: str,
    branch: str | None = None,
    *,
    files: Sequence[str] = (),
    tensors: Sequence[str] = (),
    jobs: int | None = None,
    progress: TransferProgress | None = None,
) -> PullResult:
    """Fetch ``branch`` (default: the current one) and fast-forward the local branch to it."""
    if branch is None:
        branch = repo.head().branch
        if branch is None:
            raise RefError("HEAD is detached: name the branch to pull")
    refs.validate_name(branch, refs.RefKind.BRANCH)
    result = fetch(
        repo, remote_name, [branch], files=files, tensors=tensors, jobs=jobs, progress=progress
    )
    tracking = refs.remote_ref(remote_name, branch)
    full = refs.BRANCH_PREFIX + branch
    with repo.index.write() as conn:
        new = refs.get_ref(conn, tracking)
        assert new is not None  # fetch just set it
        old = refs.get_ref(conn, full)
        if old is None:
            status = UpdateStatus.CREATED
        elif old == new:
            status = UpdateStatus.UP_TO_DATE
        elif is_ancestor(conn, old, new):
            status = UpdateStatus.FAST_FORWARD
        elif is_ancestor(conn, new, old):  # yours is ahead: nothing to take
            status = UpdateStatus.UP_TO_DATE
            new = old
        else:
            raise RefError(
                f"{branch} and {remote_name}/{branch} have diverged ({old[:12]} vs {new[:12]}); "
                f"wvc does not merge: keep yours on another branch ('wvc branch NAME') and "
                f"move {branch} with 'wvc branch -f {branch} {remote_name}/{branch}'"
            )
        if status is not UpdateStatus.UP_TO_DATE:
            refs.set_ref(conn, full, new)
    return PullResult(result, branch, old, new, status)


def clone(
    url: str,
    path: str | os.PathLike[str] | None = None,
    *,
    branch: str | None = None,
    files: Sequence[str] = (),
    tensors: Sequence[str] = (),
    options: dict[str, Any] | None = None,
    name: str = "origin",
    jobs: int | None = None,
    progress: TransferProgress | None = None,
) -> tuple[Repository, CloneResult]:
    """A new repository at ``path`` with ``url`` as remote ``name``, fetched, on its branch."""
    from ..remote.config import normalize_url, validate_remote_name
    from ..repository import Repository

    check_jobs(jobs)
    validate_remote_name(name)
    url = normalize_url(url)
    probe = Remote.open(url, options, name)
    probe.check()
    target = Path(path) if path is not None else Path(_default_dir(url))
    existed = target.exists()
    if existed and (not target.is_dir() or any(target.iterdir())):
        raise TargetNotEmptyError(str(target))
    repo = None
    try:
        repo = Repository.init(target)
        add_remote(repo, name, url, options)
        result = fetch(repo, name, None, files=files, tensors=tensors, jobs=jobs, progress=progress)
        chosen = branch or probe.head_branch()
        tracked = {
            k.removeprefix(refs.remote_ref(name, "")): v for k, v in _tracking(repo, name).items()
        }
        if chosen is None and tracked:
            chosen = refs.DEFAULT_BRANCH if refs.DEFAULT_BRANCH in tracked else sorted(tracked)[0]
        if branch is not None and branch not in tracked:
            raise RefError(f"remote {url} has no branch {branch!r}")
        head = None
        if chosen is not None and chosen in tracked:
            head = tracked[chosen]
            with repo.index.write() as conn:
                refs.set_ref(conn, refs.BRANCH_PREFIX + chosen, head)
                refs.set_head(conn, branch=chosen)
    except BaseException:
        if repo is not None:
            repo.close()
        if existed:
            shutil.rmtree(target / REPO_DIR, ignore_errors=True)
        else:
            shutil.rmtree(target, ignore_errors=True)
        raise
    assert repo is not None
    return repo, CloneResult(os.path.abspath(target), chosen, head, result)


def _tracking(repo: Repository, name: str) -> dict[str, str]:
    with repo.index.read() as conn:
        return refs.list_prefixed(conn, refs.remote_ref(name, ""))


def _default_dir(url: str) -> str:
    tail = url.rstrip("/").rsplit("/", 1)[-1].split("://")[-1]
    if not tail or tail in (".", ".."):
        raise InputError(f"{url}: name the directory to clone into")
    return tail
