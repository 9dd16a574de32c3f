"""Revision expressions: ``HEAD``, branch, tag, full id, id prefix, ``REV~N``, ``REV^N``.

Names resolve in the order HEAD, branch, tag, remote-tracking branch
(``origin/main``), full commit id, unique commit id prefix of at least 4 hex
digits. Suffixes apply left to right: ``~N`` follows
first parents N times, ``^N`` takes the N-th parent (``^`` = ``^1``).
"""

from __future__ import annotations

import re

from sqlalchemy import Connection, select

from . import refs
from .errors import AmbiguousRevisionError, RevisionNotFoundError
from .index import commit_parents, commits

MIN_PREFIX = 4
_SUFFIX = re.compile(r"([~^])(\d{0,9})(?!\d)")
_HEX = re.compile(r"^[0-9a-f]+$")


def _split(rev: str) -> tuple[str, list[tuple[str, int]]]:
    cut = len(rev)
    for i, ch in enumerate(rev):
        if ch in "~^":
            cut = i
            break
    base, rest = rev[:cut], rev[cut:]
    steps: list[tuple[str, int]] = []
    pos = 0
    while pos < len(rest):
        m = _SUFFIX.match(rest, pos)
        if not m:
            raise RevisionNotFoundError(rev, "invalid revision syntax")
        op, num = m.group(1), m.group(2)
        n = int(num) if num else 1
        steps.append((op, n))
        pos = m.end()
    if not base:
        raise RevisionNotFoundError(rev, "invalid revision syntax")
    return base, steps


def commit_exists(conn: Connection, commit_id: str) -> bool:
    return conn.execute(select(commits.c.id).where(commits.c.id == commit_id)).first() is not None


def _resolve_base(conn: Connection, rev: str, base: str) -> str:
    if base == refs.HEAD:
        state = refs.head(conn)
        if state.target is None:
            raise RevisionNotFoundError(rev, f"HEAD has no commits yet (branch {state.branch!r})")
        return state.target
    for prefix in (refs.BRANCH_PREFIX, refs.TAG_PREFIX, refs.REMOTE_PREFIX):
        target = refs.get_ref(conn, prefix + base)
        if target is not None:
            return target
    lowered = base.lower()
    if len(lowered) >= MIN_PREFIX and _HEX.match(lowered):
        rows = conn.execute(
            select(commits.c.id).where(commits.c.id.startswith(lowered)).limit(6)
        ).all()
        ids = [r.id for r in rows]
        if len(ids) == 1:
            return str(ids[0])
        if len(ids) > 1:
            raise AmbiguousRevisionError(rev, ids)
    raise RevisionNotFoundError(rev)


def parents_of(conn: Connection, commit_id: str) -> list[str]:
    rows = conn.execute(
        select(commit_parents.c.parent)
        .where(commit_parents.c.commit == commit_id)
        .order_by(commit_parents.c.position)
    ).all()
    return [r.parent for r in rows]


def _batched(ids: list[str], size: int = 500) -> list[list[str]]:
    return [ids[i : i + size] for i in range(0, len(ids), size)]


def known_commits(conn: Connection, ids: list[str]) -> set[str]:
    """The ids among ``ids`` that the index has."""
    return {
        r.id
        for batch in _batched(ids)
        for r in conn.execute(select(commits.c.id).where(commits.c.id.in_(batch)))
    }


def parents_of_all(conn: Connection, ids: list[str]) -> set[str]:
    """Every parent of the commits ``ids``."""
    return {
        r.parent
        for batch in _batched(ids)
        for r in conn.execute(
            select(commit_parents.c.parent).where(commit_parents.c.commit.in_(batch))
        )
    }


def ancestors(conn: Connection, tips: list[str], stop: set[str] | None = None) -> set[str]:
    """``tips`` and every commit reachable from them through parents.

    The walk does not enter commits in ``stop`` (nor include them): with
    ``stop`` = what a remote has, this is what it lacks. One query per
    generation, in batches.
    """
    stop = stop or set()
    seen = {t for t in tips if t not in stop}
    frontier = list(seen)
    while frontier:
        frontier = [p for p in parents_of_all(conn, frontier) if p not in seen and p not in stop]
        seen.update(frontier)
    return seen


def is_ancestor(conn: Connection, old: str, new: str) -> bool:
    """True if ``old`` is ``new`` or reachable from it through parents."""
    seen: set[str] = set()
    todo = [new]
    while todo:
        cid = todo.pop()
        if cid == old:
            return True
        if cid in seen:
            continue
        seen.add(cid)
        todo.extend(parents_of(conn, cid))
    return False


def resolve(conn: Connection, rev: str) -> str:
    """The full commit id that ``rev`` names; RevisionNotFoundError otherwise."""
    rev = rev.strip()
    base, steps = _split(rev)
    commit = _resolve_base(conn, rev, base)
    for op, n in steps:
        if op == "~":
            for _ in range(n):
                ps = parents_of(conn, commit)
                if not ps:
                    raise RevisionNotFoundError(rev, f"commit {commit[:12]} has no parent")
                commit = ps[0]
        elif n > 0:
            ps = parents_of(conn, commit)
            if len(ps) < n:
                raise RevisionNotFoundError(rev, f"commit {commit[:12]} has no parent #{n}")
            commit = ps[n - 1]
    if not commit_exists(conn, commit):
        raise RevisionNotFoundError(
            rev, f"ref points to commit {commit[:12]} missing from the index"
        )
    return commit
