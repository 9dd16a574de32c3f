"""remote add / remove / list, opening a configured remote, and on-demand fetch of objects
a partial fetch left on the remote."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert

from .. import refs
from ..errors import InputError, RemoteError
from ..index import MetadataIndex, objects
from ..objects import ObjectHeader
from ..remote import Remote, RemoteConfig, load_remotes, save_remotes
from ..remote.config import normalize_url, validate_remote_name

if TYPE_CHECKING:
    from pathlib import Path

    from ..repository import Repository


@dataclass(frozen=True)
class RemoteInfo:
    name: str
    url: str
    options: dict[str, Any]
    partial: bool
    branches: dict[str, str]  # branch → commit id, as last fetched or pushed

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "url": self.url,
            "options": sorted(self.options),  # names only: values may be secrets
            "partial": self.partial,
            "branches": self.branches,
        }


def add_remote(
    repo: Repository, name: str, url: str, options: dict[str, Any] | None = None
) -> RemoteConfig:
    validate_remote_name(name)
    remotes = load_remotes(repo.dir)
    if name in remotes:
        raise InputError(f"remote {name!r} already exists ({remotes[name].url})")
    config = RemoteConfig(name, normalize_url(url), dict(options or {}))
    remotes[name] = config
    save_remotes(repo.dir, remotes)
    return config


def remove_remote(repo: Repository, name: str, *, force: bool = False) -> RemoteConfig:
    remotes = load_remotes(repo.dir)
    if name not in remotes:
        raise InputError(f"no such remote: {name!r}")
    if remotes[name].partial and not force:
        raise InputError(
            f"remote {name!r} holds chunks a partial fetch left there; fetch them first "
            f"('wvc fetch {name}' fetches every chunk of its branches) or remove it with --force"
        )
    config = remotes.pop(name)
    with repo.index.write() as conn:
        for full in refs.list_prefixed(conn, refs.remote_ref(name, "")):
            refs.delete_ref(conn, full)
    save_remotes(repo.dir, remotes)
    return config


def list_remotes(repo: Repository) -> list[RemoteInfo]:
    out = []
    with repo.index.read() as conn:
        for r in load_remotes(repo.dir).values():
            prefix = refs.remote_ref(r.name, "")
            tracked = {
                k.removeprefix(prefix): v for k, v in refs.list_prefixed(conn, prefix).items()
            }
            out.append(
                RemoteInfo(r.name, r.url, dict(r.options), r.partial, dict(sorted(tracked.items())))
            )
    return out


def remote_config(repo_dir: Path, name: str) -> RemoteConfig:
    remotes = load_remotes(repo_dir)
    if name not in remotes:
        known = ", ".join(sorted(remotes)) or "none; add one with 'wvc remote add NAME URL'"
        raise InputError(f"no such remote: {name!r} (remotes: {known})")
    return remotes[name]


def open_remote(repo: Repository, name: str) -> Remote:
    config = remote_config(repo.dir, name)
    return Remote.open(config.url, config.options, name)


def default_remote(repo: Repository) -> str:
    """'origin', or the only remote there is."""
    remotes = load_remotes(repo.dir)
    if "origin" in remotes or not remotes:
        return "origin"
    if len(remotes) == 1:
        return next(iter(remotes))
    raise InputError(f"several remotes ({', '.join(sorted(remotes))}): name one")


class OnDemandFetch:
    """The object store's fallback in a repository made by a partial fetch.

    An object the repository lacks is read from the remotes marked partial,
    in name order; the object store verifies it before keeping it.
    """

    def __init__(self, repo_dir: Path, index: MetadataIndex) -> None:
        self.repo_dir = repo_dir
        self.index = index
        self._remotes: list[Remote] | None = None
        self._lock = threading.Lock()

    def _open(self) -> list[Remote]:
        with self._lock:
            if self._remotes is None:
                configs = [r for r in load_remotes(self.repo_dir).values() if r.partial]
                self._remotes = [Remote.open(r.url, r.options, r.name) for r in configs]
            return self._remotes

    def kept(self, oid: str, blob: bytes) -> None:
        """List the object in the index, as a fetch would have (``wvc stats`` counts it)."""
        header = ObjectHeader.unpack(blob, oid)
        row = {
            "id": oid,
            "kind": int(header.kind),
            "codec": int(header.codec),
            "raw_size": header.raw_length,
            "stored_size": len(blob),
            "base": header.base,
        }
        with self.index.write() as conn:
            conn.execute(insert(objects).prefix_with("OR IGNORE"), [row])

    def fetch(self, oid: str) -> bytes | None:
        problems = []
        for remote in self._open():
            try:
                return remote.get_object(oid)
            except KeyError:
                continue
            except (OSError, RemoteError) as e:
                problems.append(f"{remote.name}: {e}")
        for remote in self._open():
            # Not there, or the remote itself gone (an unplugged drive)? Say which.
            try:
                remote.check()
            except RemoteError as e:
                problems.append(f"{remote.name}: {e}")
        if problems:
            raise RemoteError(
                f"object {oid} was left on the remote by a partial fetch and could not be "
                f"fetched ({'; '.join(problems)})"
            )
        return None


def partial_fallback(repo_dir: Path, index: MetadataIndex) -> OnDemandFetch | None:
    """The fallback for ``repo_dir`` if any remote is marked partial, else None."""
    try:
        partial = any(r.partial for r in load_remotes(repo_dir).values())
    except RemoteError:
        return None
    return OnDemandFetch(repo_dir, index) if partial else None
