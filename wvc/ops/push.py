"""push: upload the objects a remote lacks, then move its refs (compare-and-swap).

What the remote lacks is found from the commit graph: commits reachable from
the pushed refs but not from any remote ref this repository knows, and of
their objects those not already in the commits they build on. Each candidate
is checked on the remote before it is uploaded, so an interrupted push
re-run uploads only what is still missing. Refs move only after every object
they need is on the remote, each with a compare-and-swap against the value
read at the start: a concurrent push to the same branch makes this one fail
with "fetch first", never lose the other's commits (docs/remotes.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, select

from .. import refs
from ..errors import (
    InputError,
    MissingObjectError,
    PushRejectedError,
    RefError,
    StoreConflictError,
)
from ..index import commits, tree_files
from ..objects import MAX_CHAIN_READ, object_key
from ..remote import Remote
from ..revision import ancestors, commit_exists, is_ancestor, known_commits, parents_of_all
from ._read import read_file_manifest
from ._transfer import Moved, RefUpdate, TransferProgress, UpdateStatus, check_jobs, move_all
from .remotes import open_remote

if TYPE_CHECKING:
    from ..repository import Repository


@dataclass(frozen=True)
class PushResult:
    remote: str
    url: str
    updates: tuple[RefUpdate, ...]
    objects: int  # objects uploaded
    bytes: int  # their stored bytes
    present: int  # candidates the remote already had (an earlier, interrupted push)
    commits: int  # commits the remote did not have
    created_remote: bool = False
    warnings: tuple[str, ...] = field(default=())

    @property
    def up_to_date(self) -> bool:
        return all(u.status is UpdateStatus.UP_TO_DATE for u in self.updates)

    def to_json(self) -> dict[str, Any]:
        return {
            "remote": self.remote,
            "url": self.url,
            "up_to_date": self.up_to_date,
            "updates": [u.to_json() for u in self.updates],
            "commits": self.commits,
            "objects": self.objects,
            "bytes": self.bytes,
            "present": self.present,
            "created_remote": self.created_remote,
        }


@dataclass(frozen=True)
class PushPlan:
    """What a push will do, computed before anything is uploaded."""

    remote: Remote
    updates: tuple[RefUpdate, ...]
    send_commits: tuple[str, ...]
    # Candidates in upload waves: chunks by delta depth (a base's wave completes before
    # its deltas'), then manifests, trees and commits.
    waves: tuple[tuple[str, ...], ...]
    created_remote: bool
    # The remote had no refs: what it holds can only be what interrupted pushes left,
    # so one listing of objects/ replaces an existence check per candidate.
    remote_empty: bool = False

    @property
    def objects(self) -> tuple[str, ...]:
        """Every candidate, in upload order."""
        return tuple(oid for wave in self.waves for oid in wave)


def _select_refs(
    conn: Connection, names: Sequence[str] | None, tags: bool
) -> list[tuple[str, str]]:
    """(full ref name, commit id) of each ref to push."""
    chosen: dict[str, str] = {}
    if not names and not tags:
        state = refs.head(conn)
        if state.branch is None:
            raise RefError("HEAD is detached: name the branch to push")
        names = [state.branch]
    for name in names or ():
        for prefix in (refs.BRANCH_PREFIX, refs.TAG_PREFIX):
            full = name if name.startswith(prefix) else prefix + name
            target = refs.get_ref(conn, full)
            if target is not None:
                chosen[full] = target
                break
        else:
            raise RefError(f"no such branch or tag: {name!r}")
    if tags:
        for t in refs.list_refs(conn, refs.RefKind.TAG):
            chosen[refs.TAG_PREFIX + t.name] = t.target
    return sorted(chosen.items())


def _short(full: str) -> str:
    return full.removeprefix(refs.BRANCH_PREFIX).removeprefix(refs.TAG_PREFIX)


def _classify(
    conn: Connection, full: str, old: str | None, new: str, force: bool, remote_name: str
) -> UpdateStatus:
    if old == new:
        return UpdateStatus.UP_TO_DATE
    if old is None:
        return UpdateStatus.CREATED
    if full.startswith(refs.TAG_PREFIX):
        if force:
            return UpdateStatus.FORCED
        raise PushRejectedError(
            f"rejected: tag {_short(full)!r} is at {old[:12]} on {remote_name}, here at "
            f"{new[:12]}; tags do not move (use --force to move it)",
            full,
        )
    if commit_exists(conn, old) and is_ancestor(conn, old, new):
        return UpdateStatus.FAST_FORWARD
    if force:
        return UpdateStatus.FORCED
    if not commit_exists(conn, old):
        raise PushRejectedError(
            f"rejected: {_short(full)} on {remote_name} is at {old[:12]}, which you do not "
            f"have; fetch first ('wvc pull {remote_name} {_short(full)}')",
            full,
        )
    if is_ancestor(conn, new, old):
        raise PushRejectedError(
            f"rejected: {_short(full)} on {remote_name} ({old[:12]}) is ahead of yours "
            f"({new[:12]}); pull first ('wvc pull {remote_name} {_short(full)}')",
            full,
        )
    raise PushRejectedError(
        f"rejected: {_short(full)} on {remote_name} ({old[:12]}) and yours ({new[:12]}) have "
        f"diverged (not a fast-forward); keep yours on another branch, or --force to "
        "overwrite theirs",
        full,
    )


def _commit_objects(
    repo: Repository, conn: Connection, cids: Sequence[str], skip: frozenset[str] = frozenset()
) -> dict[str, set[str]]:
    """Objects of commits by kind: 'commit', 'tree', 'manifest', 'chunk'.

    Manifests in ``skip`` are listed but not read (their chunks are known already).
    """
    out: dict[str, set[str]] = {"commit": set(), "tree": set(), "manifest": set(), "chunk": set()}
    if not cids:
        return out
    for i in range(0, len(cids), 500):
        batch = list(cids[i : i + 500])
        for row in conn.execute(
            select(commits.c.id, commits.c.tree).where(commits.c.id.in_(batch))
        ):
            out["commit"].add(row.id)
            out["tree"].add(row.tree)
    trees = list(out["tree"])
    for i in range(0, len(trees), 500):
        rows = conn.execute(
            select(tree_files.c.manifest, tree_files.c.path).where(
                tree_files.c.tree.in_(trees[i : i + 500])
            )
        ).all()
        for r in rows:
            if r.manifest not in out["manifest"]:
                out["manifest"].add(r.manifest)
                if r.manifest in skip:
                    continue
                manifest = read_file_manifest(repo.objects, r.manifest, r.path)
                out["chunk"].update(c for seg in manifest.segments for c in seg.chunks)
    return out


def plan_push(
    repo: Repository,
    remote_name: str,
    names: Sequence[str] | None = None,
    *,
    force: bool = False,
    tags: bool = False,
) -> PushPlan:
    """Decide which refs move and which objects are candidates; nothing is uploaded."""
    remote = open_remote(repo, remote_name)
    with repo.index.read() as conn:
        chosen = _select_refs(conn, names, tags)
    created = remote.check(create=True)
    remote.remove_stale_temp()
    remote_refs = remote.refs()
    with repo.index.read() as conn:
        updates = tuple(
            RefUpdate(
                full,
                remote_refs.get(full),
                new,
                _classify(conn, full, remote_refs.get(full), new, force, remote_name),
            )
            for full, new in chosen
        )
        moving = [u.new for u in updates if u.status is not UpdateStatus.UP_TO_DATE and u.new]
        if not moving:
            return PushPlan(remote, updates, (), (), created)
        have_tips = list(known_commits(conn, list(set(remote_refs.values()))))
        have = ancestors(conn, have_tips)
        send = ancestors(conn, moving, stop=have)
        # The commits the new ones build on are on the remote with all their objects.
        boundary = parents_of_all(conn, list(send)) & have
        base = _commit_objects(repo, conn, sorted(boundary))
        # A file unchanged since the base has its manifest, and all its chunks, in base.
        wanted = _commit_objects(repo, conn, sorted(send), frozenset(base["manifest"]))
    waves = _with_bases(repo, remote, wanted["chunk"] - base["chunk"], base["chunk"])
    rest = [o for kind in ("manifest", "tree", "commit") for o in sorted(wanted[kind] - base[kind])]
    if rest:
        waves.append(tuple(rest))
    return PushPlan(remote, updates, tuple(sorted(send)), tuple(waves), created, not remote_refs)


def _with_bases(
    repo: Repository, remote: Remote, chunks: set[str], there: set[str]
) -> list[tuple[str, ...]]:
    """The chunks to send plus the delta bases the remote lacks, in waves by chain depth.

    A chunk's base is usually a chunk of the parent commit (sent too, or
    among ``there``, the objects of commits the remote has); a base from
    elsewhere (a chunk first stored on another branch) is looked up on the
    remote and sent if absent. Wave *d* holds the chunks *d* levels above a
    base that is not sent, so each base is in an earlier wave than its deltas.
    """
    base_of: dict[str, str | None] = {}
    todo = sorted(chunks)
    while todo:
        oid = todo.pop()
        if oid in base_of:
            continue
        if not repo.objects.has(oid):
            repo.objects.get(oid)  # a partial repository fetches it (and its bases), verified
        header, _ = repo.objects.read_header(oid)
        base_of[oid] = b = header.base
        if b is not None and b not in base_of and b not in there and not remote.has_object(b):
            todo.append(b)

    depth: dict[str, int] = {}

    def depth_of(oid: str) -> int:
        path: list[str] = []
        while oid not in depth:
            b = base_of[oid]
            if b is None or b not in base_of or len(path) > MAX_CHAIN_READ:
                depth[oid] = 0  # a cyclic chain is reported when it is read for upload
                break
            path.append(oid)
            oid = b
        d = depth[oid]
        for c in reversed(path):
            d += 1
            depth[c] = d
        return d

    waves: list[list[str]] = []
    for oid in sorted(base_of):
        d = depth_of(oid)
        waves.extend([] for _ in range(d + 1 - len(waves)))
        waves[d].append(oid)
    return [tuple(w) for w in waves if w]


def upload(
    repo: Repository,
    plan: PushPlan,
    *,
    jobs: int | None = None,
    progress: TransferProgress | None = None,
) -> Moved:
    """Copy every candidate object the remote lacks, each verified as it is read."""
    remote = plan.remote
    local = repo.objects

    def size(oid: str) -> int:
        try:
            return local.store.size(object_key(oid))
        except KeyError:
            return 0

    listed = remote.list_objects() if plan.remote_empty else None

    def one(oid: str) -> int | None:
        if oid in listed if listed is not None else remote.has_object(oid):
            # Left by an interrupted push, perhaps never flushed: flush it before a ref
            # names it.
            remote.make_durable(oid)
            return None
        key = object_key(oid)
        try:
            blob = local.store.get(key)
        except KeyError:
            local.get(oid)  # a partial repository fetches it from its remote, verified
            try:
                blob = local.store.get(key)
            except KeyError:
                raise MissingObjectError(oid, f"push to {remote.url}") from None
        local.decode(oid, blob, f"push to {remote.url}")
        remote.put_object(oid, blob)
        return len(blob)

    n_jobs = check_jobs(jobs)
    tick = None
    if progress is not None:
        progress.start("pushing", sum(size(o) for o in plan.objects))
        tick = progress
    # Wave by wave: the remote never holds a delta whose base is still to come.
    moved = Moved(0, 0, 0)
    for wave in plan.waves:
        m = move_all(wave, one, n_jobs, tick, weight=size)
        moved = Moved(moved.objects + m.objects, moved.bytes + m.bytes, moved.present + m.present)
    remote.flush()
    return moved


def update_refs(repo: Repository, plan: PushPlan, remote_name: str) -> None:
    """Move each remote ref by compare-and-swap, then the local remote-tracking refs."""
    remote = plan.remote
    done: list[RefUpdate] = []
    for u in plan.updates:
        if u.status is UpdateStatus.UP_TO_DATE or u.new is None:
            continue
        try:
            remote.update_ref(u.ref, u.old, u.new)
        except StoreConflictError as e:
            found = e.found.decode("ascii", "replace").strip() if e.found else None
            now = (found or remote.read_ref(u.ref) or "deleted")[:12]
            raise PushRejectedError(
                f"rejected: {_short(u.ref)} on {remote_name} moved while pushing (now at "
                f"{now}); fetch first ('wvc pull {remote_name} {_short(u.ref)}')",
                u.ref,
            ) from None
        done.append(u)
    branches = [_short(u.ref) for u in plan.updates if u.ref.startswith(refs.BRANCH_PREFIX)]
    if branches:
        # Name the remote's default branch if it has none (also after a first push that
        # was interrupted before its refs moved): the current branch if pushed.
        current = repo.head().branch
        remote.set_head_branch(current if current in branches else branches[0])
    with repo.index.write() as conn:
        for u in plan.updates:
            if u.ref.startswith(refs.BRANCH_PREFIX) and u.new is not None:
                refs.set_ref(conn, refs.remote_ref(remote_name, _short(u.ref)), u.new)


def push(
    repo: Repository,
    remote_name: str,
    names: Sequence[str] | None = None,
    *,
    force: bool = False,
    tags: bool = False,
    jobs: int | None = None,
    progress: TransferProgress | None = None,
) -> PushResult:
    check_jobs(jobs)
    if names is not None and any(not n for n in names):
        raise InputError("empty ref name")
    plan = plan_push(repo, remote_name, names, force=force, tags=tags)
    moved = Moved(0, 0, 0)
    if plan.objects:
        moved = upload(repo, plan, jobs=jobs, progress=progress)
    update_refs(repo, plan, remote_name)
    return PushResult(
        remote=remote_name,
        url=plan.remote.url,
        updates=plan.updates,
        objects=moved.objects,
        bytes=moved.bytes,
        present=moved.present,
        commits=len(plan.send_commits),
        created_remote=plan.created_remote,
    )
