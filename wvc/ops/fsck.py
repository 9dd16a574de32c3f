"""fsck: trust nothing. Re-hash every object, re-parse every manifest, check every ref and row."""

from __future__ import annotations

import enum
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from .. import refs
from ..errors import BrokenChainError, IntegrityError, MissingObjectError
from ..index import commit_parents, commits, index_tree_rows, objects, tree_files
from ..index import refs as refs_table
from ..index import tensors as tensors_table
from ..ingest import Progress
from ..manifest import ManifestError, parse_commit, parse_file_manifest, parse_tree
from ..objects import ObjectHeader, ObjectKind, ObjectStore, object_key

if TYPE_CHECKING:
    from ..repository import Repository


class ProblemKind(enum.Enum):
    CORRUPT_OBJECT = "corrupt-object"
    MISSING_OBJECT = "missing-object"
    BROKEN_CHAIN = "broken-delta-chain"
    BAD_MANIFEST = "bad-manifest"
    BAD_REF = "bad-ref"
    INDEX_MISMATCH = "index-mismatch"


@dataclass(frozen=True)
class Problem:
    kind: ProblemKind
    object: str | None
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind.value, "object": self.object, "message": self.message}


@dataclass
class FsckResult:
    objects_checked: int = 0
    bytes_checked: int = 0
    commits_checked: int = 0
    dangling: int = 0
    problems: list[Problem] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)  # corrupt objects deleted by repair
    # Chunks a partial fetch left on the remote (fetched on demand): not problems.
    not_fetched: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "objects_checked": self.objects_checked,
            "bytes_checked": self.bytes_checked,
            "commits_checked": self.commits_checked,
            "dangling": self.dangling,
            "problems": [p.to_json() for p in self.problems],
            "removed": list(self.removed),
            "not_fetched": self.not_fetched,
        }


_MAX_TEXT = 64 << 20


def _sorted(rows: list[dict[str, Any]]) -> list[list[tuple[str, Any]]]:
    return sorted(sorted(r.items()) for r in rows)


@dataclass(frozen=True)
class _Checked:
    id: str
    text: bytes | None  # raw bytes if it may be a manifest or commit
    error: IntegrityError | None
    stored: int
    base: str | None  # the delta base its header names


def _verify(objects_: ObjectStore, oid: str) -> _Checked:
    try:
        blob = objects_.store.get(object_key(oid))
    except KeyError:
        return _Checked(oid, None, MissingObjectError(oid, "fsck: vanished during fsck"), 0, None)
    try:
        header = ObjectHeader.unpack(blob, oid)
        raw = objects_.decode(oid, blob)
    except IntegrityError as e:
        return _Checked(oid, None, e, len(blob), None)
    text = bytes(raw) if header.kind != ObjectKind.CHUNK and len(raw) < _MAX_TEXT else None
    return _Checked(oid, text, None, len(blob), header.base)


def fsck(repo: Repository, progress: Progress | None = None, repair: bool = False) -> FsckResult:
    """Check everything; with ``repair``, delete object files whose content is corrupt.

    A deleted corrupt object is missing instead: committing the original
    files again writes it afresh, which heals every commit that needs it.
    """
    res = FsckResult()
    store = repo.objects
    good: dict[str, int] = {}  # id -> stored size
    texts: dict[str, bytes] = {}  # small objects that may be manifests or commits
    bases: dict[str, str] = {}  # delta object -> its base

    with repo.index.read() as conn:
        indexed = {r.id: r for r in conn.execute(select(objects))}
        commit_rows = {r.id: r for r in conn.execute(select(commits))}
        parent_rows = conn.execute(select(commit_parents)).all()
        tree_rows = conn.execute(select(tree_files)).all()
        tensor_rows = conn.execute(select(tensors_table)).all()
        ref_rows = conn.execute(select(refs_table)).all()

    # 1. Every object decodes and hashes to its name.
    ids = list(store.iter_ids())
    with ThreadPoolExecutor(4, thread_name_prefix="wvc-fsck") as pool:
        for c in pool.map(lambda i: _verify(store, i), ids):
            res.objects_checked += 1
            res.bytes_checked += c.stored
            if progress:
                progress(c.stored)
            if isinstance(c.error, BrokenChainError):
                # The object itself may be sound; without its base it cannot be read.
                res.problems.append(Problem(ProblemKind.BROKEN_CHAIN, c.id, c.error.message))
                continue
            if c.error is not None:
                res.problems.append(Problem(ProblemKind.CORRUPT_OBJECT, c.id, c.error.message))
                continue
            good[c.id] = c.stored
            if c.base is not None:
                bases[c.id] = c.base
            if c.text is not None:
                texts[c.id] = c.text

    partial = store.fallback is not None
    not_fetched: set[str] = set()

    def need(oid: str, context: str, chunk: bool = False) -> bool:
        if oid in good:
            return True
        corrupt = any(p.object == oid for p in res.problems)
        if chunk and partial and not corrupt:
            not_fetched.add(oid)
            return False
        if not corrupt:
            res.problems.append(
                Problem(
                    ProblemKind.MISSING_OBJECT, oid, f"missing object {oid} (needed by {context})"
                )
            )
        else:
            res.problems.append(
                Problem(
                    ProblemKind.CORRUPT_OBJECT, oid, f"corrupt object {oid} is needed by {context}"
                )
            )
        return False

    def text_of(oid: str) -> bytes:
        # The kind byte is only a hint: an object stored first as a chunk may be needed as text.
        return texts.get(oid) or bytes(store.get(oid))

    # 2. Every commit in the index: its object, tree, manifests and chunks.
    reachable: set[str] = set()
    parents: dict[str, list[str]] = {}
    for prow in sorted(parent_rows, key=lambda r: r.position):
        parents.setdefault(prow.commit, []).append(prow.parent)
    tree_index: dict[str, list[dict[str, Any]]] = {}
    for t in tree_rows:
        tree_index.setdefault(t.tree, []).append(dict(t._mapping))
    tensor_index: dict[str, list[dict[str, Any]]] = {}
    for tr in tensor_rows:
        tensor_index.setdefault(tr.manifest, []).append(dict(tr._mapping))
    checked_manifests: set[str] = set()
    for cid, row in commit_rows.items():
        res.commits_checked += 1
        reachable.add(cid)
        if not need(cid, "the commit index"):
            continue
        try:
            commit = parse_commit(text_of(cid))
        except ManifestError as e:
            res.problems.append(Problem(ProblemKind.BAD_MANIFEST, cid, f"commit {cid}: {e}"))
            continue
        if commit.tree != row.tree or list(commit.parents) != parents.get(cid, []):
            res.problems.append(
                Problem(
                    ProblemKind.INDEX_MISMATCH, cid, f"commit {cid}: index row differs from object"
                )
            )
        if json.loads(row.meta) != dict(commit.meta) or row.message != commit.message:
            res.problems.append(
                Problem(
                    ProblemKind.INDEX_MISMATCH, cid, f"commit {cid}: indexed message/meta differ"
                )
            )
        for p in commit.parents:
            if p not in commit_rows:
                res.problems.append(
                    Problem(
                        ProblemKind.MISSING_OBJECT, p, f"parent {p} of commit {cid} is not indexed"
                    )
                )
        reachable.add(commit.tree)
        if not need(commit.tree, f"commit {cid[:12]}"):
            continue
        try:
            tree = parse_tree(text_of(commit.tree))
        except ManifestError as e:
            res.problems.append(
                Problem(ProblemKind.BAD_MANIFEST, commit.tree, f"tree {commit.tree}: {e}")
            )
            continue
        expected_files, _ = index_tree_rows(commit.tree, tree, {})
        if _sorted(tree_index.get(commit.tree, [])) != _sorted(expected_files):
            res.problems.append(
                Problem(
                    ProblemKind.INDEX_MISMATCH,
                    commit.tree,
                    f"tree {commit.tree}: index rows differ",
                )
            )
        for entry in tree.entries:
            reachable.add(entry.manifest)
            if entry.manifest in checked_manifests:
                continue
            checked_manifests.add(entry.manifest)
            if not need(entry.manifest, entry.path):
                continue
            try:
                manifest = parse_file_manifest(text_of(entry.manifest))
            except ManifestError as e:
                res.problems.append(
                    Problem(
                        ProblemKind.BAD_MANIFEST, entry.manifest, f"{entry.path}: manifest: {e}"
                    )
                )
                continue
            _, expected_tensors = index_tree_rows(commit.tree, tree, {entry.manifest: manifest})
            if _sorted(tensor_index.get(entry.manifest, [])) != _sorted(expected_tensors):
                res.problems.append(
                    Problem(
                        ProblemKind.INDEX_MISMATCH,
                        entry.manifest,
                        f"{entry.path}: indexed tensors differ from manifest {entry.manifest}",
                    )
                )
            if manifest.size != entry.size:
                res.problems.append(
                    Problem(
                        ProblemKind.BAD_MANIFEST,
                        entry.manifest,
                        f"{entry.path}: size differs from tree",
                    )
                )
            for seg in manifest.segments:
                for chunk in seg.chunks:
                    reachable.add(chunk)
                    need(chunk, entry.path, chunk=True)

    # 3. Refs point at indexed commits.
    for r in ref_rows:
        if r.name == refs.HEAD:
            if r.symbolic is None and r.target not in commit_rows:
                res.problems.append(
                    Problem(ProblemKind.BAD_REF, r.target, "detached HEAD points nowhere")
                )
            continue
        if r.target not in commit_rows:
            res.problems.append(
                Problem(
                    ProblemKind.BAD_REF,
                    r.target,
                    f"ref {r.name} points to unknown commit {r.target}",
                )
            )

    # 4. Index rows describe objects that exist, with the right sizes.
    for oid, row in indexed.items():
        if oid not in good:
            if not any(p.object == oid for p in res.problems):
                res.problems.append(
                    Problem(ProblemKind.MISSING_OBJECT, oid, f"indexed object {oid} is missing")
                )
        elif row.stored_size != good[oid]:
            res.problems.append(
                Problem(ProblemKind.INDEX_MISMATCH, oid, f"object {oid}: indexed size differs")
            )
    # Bases of reachable deltas are reachable (their chains were checked in step 1).
    todo = [o for o in reachable if o in bases]
    while todo:
        b = bases[todo.pop()]
        if b not in reachable:
            reachable.add(b)
            if b in bases:
                todo.append(b)
    res.not_fetched = len(not_fetched)
    res.dangling = len(set(good) - reachable)
    if repair:
        # Deltas whose chain is broken go too: unreadable here, and a re-commit of the
        # original files stores them afresh only if they are absent.
        corrupt = {
            prob.object
            for prob in res.problems
            if prob.kind in (ProblemKind.CORRUPT_OBJECT, ProblemKind.BROKEN_CHAIN)
            and prob.object
            and prob.object not in good
        }
        for oid in sorted(corrupt):
            if store.has(oid):
                store.store.delete(object_key(oid))
                res.removed.append(oid)
        store.flush()
    return res
