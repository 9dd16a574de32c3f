"""Refs: branches, tags and HEAD, kept in the ``refs`` table.

``HEAD`` is either symbolic (``refs/heads/<branch>``, the branch the next
commit extends) or detached (a commit id). Branch and tag names follow git's
rules closely enough that any name wvc accepts is also a valid git ref.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from sqlalchemy import Connection, delete, insert, select, update

from .errors import RefError
from .index import refs

HEAD = "HEAD"
BRANCH_PREFIX = "refs/heads/"
TAG_PREFIX = "refs/tags/"
REMOTE_PREFIX = "refs/remotes/"  # refs/remotes/<remote>/<branch>: where a fetch saw a branch
DEFAULT_BRANCH = "main"

_BAD_NAME = re.compile(r"[\x00-\x20~^:?*\[\\\x7f]|\.\.|@\{|//|/\.|\.lock(/|$)|\.$|/$|^@$")


class RefKind(enum.Enum):
    BRANCH = "branch"
    TAG = "tag"

    @property
    def prefix(self) -> str:
        return BRANCH_PREFIX if self is RefKind.BRANCH else TAG_PREFIX


@dataclass(frozen=True)
class Ref:
    name: str
    kind: RefKind
    target: str

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "kind": self.kind.value, "target": self.target}


@dataclass(frozen=True)
class HeadState:
    branch: str | None  # None when detached
    target: str | None  # None on an unborn branch


def validate_name(name: str, kind: RefKind) -> str:
    if not name or name.startswith(("-", "/", ".")) or _BAD_NAME.search(name) or name == HEAD:
        raise RefError(f"invalid {kind.value} name {name!r}")
    return name


def get_ref(conn: Connection, full_name: str) -> str | None:
    row = conn.execute(select(refs.c.target).where(refs.c.name == full_name)).first()
    return row.target if row else None


def head(conn: Connection) -> HeadState:
    row = conn.execute(select(refs).where(refs.c.name == HEAD)).first()
    if row is None:
        return HeadState(DEFAULT_BRANCH, None)
    if row.symbolic:
        branch = row.symbolic.removeprefix(BRANCH_PREFIX)
        return HeadState(branch, get_ref(conn, row.symbolic))
    return HeadState(None, row.target)


def set_ref(conn: Connection, full_name: str, target: str) -> None:
    if get_ref(conn, full_name) is None and not _exists(conn, full_name):
        conn.execute(insert(refs).values(name=full_name, target=target, symbolic=None))
    else:
        conn.execute(update(refs).where(refs.c.name == full_name).values(target=target))


def _exists(conn: Connection, full_name: str) -> bool:
    return conn.execute(select(refs.c.name).where(refs.c.name == full_name)).first() is not None


def set_head(conn: Connection, *, branch: str | None = None, detached: str | None = None) -> None:
    conn.execute(delete(refs).where(refs.c.name == HEAD))
    if branch is not None:
        conn.execute(insert(refs).values(name=HEAD, target=None, symbolic=BRANCH_PREFIX + branch))
    else:
        conn.execute(insert(refs).values(name=HEAD, target=detached, symbolic=None))


def advance_head(conn: Connection, commit_id: str) -> None:
    """Point the current branch (or detached HEAD) at a new commit."""
    state = head(conn)
    if state.branch is not None:
        set_ref(conn, BRANCH_PREFIX + state.branch, commit_id)
    else:
        set_head(conn, detached=commit_id)


def create(conn: Connection, name: str, kind: RefKind, target: str, *, force: bool = False) -> Ref:
    validate_name(name, kind)
    full = kind.prefix + name
    if _exists(conn, full) and not force:
        raise RefError(f"{kind.value} {name!r} already exists")
    set_ref(conn, full, target)
    return Ref(name, kind, target)


def remove(conn: Connection, name: str, kind: RefKind) -> Ref:
    full = kind.prefix + name
    target = get_ref(conn, full)
    if target is None:
        raise RefError(f"no such {kind.value}: {name!r}")
    if kind is RefKind.BRANCH and head(conn).branch == name:
        raise RefError(f"cannot delete branch {name!r}: it is checked out (HEAD); switch first")
    conn.execute(delete(refs).where(refs.c.name == full))
    return Ref(name, kind, target)


def remote_ref(remote: str, branch: str) -> str:
    return f"{REMOTE_PREFIX}{remote}/{branch}"


def list_prefixed(conn: Connection, prefix: str) -> dict[str, str]:
    """Full ref name → target of every ref whose name starts with ``prefix``."""
    rows = conn.execute(
        select(refs.c.name, refs.c.target).where(refs.c.name.startswith(prefix, autoescape=True))
    ).all()
    return {r.name: r.target for r in rows if r.target is not None}


def delete_ref(conn: Connection, full_name: str) -> None:
    conn.execute(delete(refs).where(refs.c.name == full_name))


def list_refs(conn: Connection, kind: RefKind) -> list[Ref]:
    rows = conn.execute(
        select(refs.c.name, refs.c.target)
        .where(refs.c.name.startswith(kind.prefix))
        .order_by(refs.c.name)
    ).all()
    return [Ref(r.name.removeprefix(kind.prefix), kind, r.target) for r in rows]


def all_targets(conn: Connection) -> dict[str, list[str]]:
    """commit id -> names of the refs pointing at it (for log decorations)."""
    out: dict[str, list[str]] = {}
    for r in conn.execute(select(refs.c.name, refs.c.target).where(refs.c.target.is_not(None))):
        label = (
            r.name.removeprefix(BRANCH_PREFIX).removeprefix(TAG_PREFIX).removeprefix(REMOTE_PREFIX)
        )
        if r.name.startswith(TAG_PREFIX):
            label = "tag: " + label
        out.setdefault(r.target, []).append(label)
    return out
