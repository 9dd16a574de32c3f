"""The remote commands: ``remote add/list/remove``, ``push``, ``fetch``, ``pull``, ``clone``.

Registered on the main group by :mod:`wvc.cli`; like every command they pick
one API call and render its result.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import click

from .cli import cli, emit_json, human, json_option, open_repo, quiet_option
from .ops._transfer import RefUpdate, UpdateStatus
from .refs import BRANCH_PREFIX, REMOTE_PREFIX, TAG_PREFIX
from .remote import parse_option
from .repository import Repository

F = TypeVar("F", bound=Callable[..., Any])


class TransferBar:
    """Bytes, percent, rate and ETA on stderr, redrawn at most ten times a second."""

    def __init__(self) -> None:
        self.label = ""
        self.total = 0
        self.done = 0
        self.started = 0.0
        self.drawn = 0.0
        self.active = False

    def start(self, label: str, total: int) -> None:
        self.label, self.total, self.done = label, total, 0
        self.started = time.monotonic()
        self.active = total > 0
        self._draw(force=True)

    def __call__(self, n: int) -> None:
        self.done += n
        self._draw()

    def _draw(self, force: bool = False) -> None:
        if not self.active:
            return
        now = time.monotonic()
        if not force and now - self.drawn < 0.1 and self.done < self.total:
            return
        self.drawn = now
        elapsed = max(now - self.started, 1e-6)
        rate = self.done / elapsed
        pct = 100.0 * self.done / self.total if self.total else 100.0
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        width = 24
        fill = int(width * min(self.done, self.total) / self.total) if self.total else width
        line = (
            f"\r{self.label:<9} [{'#' * fill}{'-' * (width - fill)}] {pct:5.1f}%  "
            f"{human(self.done)} / {human(self.total)}  {human(rate)}/s  "
            f"ETA {int(eta) // 60}:{int(eta) % 60:02d}"
        )
        click.echo(line.ljust(100), nl=False, err=True)

    def close(self) -> None:
        if self.active:
            self._draw(force=True)
            click.echo("", err=True)
            self.active = False


@contextmanager
def transfer_bar(quiet: bool) -> Iterator[TransferBar | None]:
    """A :class:`TransferBar` when stderr is a terminal and not ``quiet``; closed after."""
    bar = None if quiet or not sys.stderr.isatty() else TransferBar()
    try:
        yield bar
    finally:
        if bar is not None:
            bar.close()


def jobs_option(f: F) -> F:
    return click.option(
        "-j",
        "--jobs",
        type=click.IntRange(min=1),
        default=None,
        help="Objects transferred at once (default: 4 per core + 4, at most 32).",
    )(f)


def _options(pairs: tuple[str, ...]) -> dict[str, Any]:
    return dict(parse_option(p) for p in pairs)


def _short(ref: str) -> str:
    for prefix in (BRANCH_PREFIX, TAG_PREFIX, REMOTE_PREFIX):
        ref = ref.removeprefix(prefix)
    return ref


def _echo_updates(updates: tuple[RefUpdate, ...]) -> None:
    for u in updates:
        old = (u.old or "")[:12]
        new = (u.new or "")[:12]
        if u.status is UpdateStatus.UP_TO_DATE:
            arrow = f"{new} (up to date)"
        elif u.status is UpdateStatus.PRUNED:
            arrow = f"{old} deleted"
        elif u.old is None:
            arrow = f"{new} (new)"
        else:
            arrow = f"{old}..{new} ({u.status.value})"
        kind = "tag" if u.ref.startswith(TAG_PREFIX) else "branch"
        click.echo(f"  {kind} {_short(u.ref):<24} {arrow}")


@cli.group()
def remote() -> None:
    """Name remote storage to push to and fetch from.

    A remote is a directory (a removable drive, a network mount) or any fsspec
    URL: s3://, gs://, az://, ssh://, memory:// ...
    """


@remote.command("add")
@click.argument("name")
@click.argument("url")
@click.option(
    "-o",
    "--option",
    "options",
    multiple=True,
    metavar="KEY=VALUE",
    help="fsspec storage option (repeatable), e.g. endpoint_url=http://host:9000. "
    "Stored in .wvc/config.json as given.",
)
def remote_add(name: str, url: str, options: tuple[str, ...]) -> None:
    """Add remote NAME at URL.

    Credentials come from the storage's usual places (AWS_* variables,
    ~/.aws, gcloud, ...); wvc does not copy them. Example:
    wvc remote add origin s3://team-bucket/models/bert
    """
    config = open_repo().add_remote(name, url, _options(options))
    click.echo(f"Added remote {config.name}: {config.url}")
    secrets = config.secret_options()
    if secrets:
        click.echo(
            f"warning: option(s) {', '.join(secrets)} are stored in clear text in "
            ".wvc/config.json (readable by you only); prefer the storage's own credential "
            "files or environment variables",
            err=True,
        )


@remote.command("list")
@json_option
def remote_list(as_json: bool) -> None:
    """List remotes, their URLs and the branches last seen there.

    Example: wvc remote list
    """
    items = open_repo().remotes()
    if as_json:
        emit_json([r.to_json() for r in items])
        return
    for r in items:
        extra = " (partial)" if r.partial else ""
        click.echo(f"{r.name:<12} {r.url}{extra}")
        for b, target in r.branches.items():
            click.echo(f"  {r.name}/{b:<22} {target[:12]}")


@remote.command("remove")
@click.argument("name")
@click.option(
    "-f", "--force", is_flag=True, help="Remove it even if a partial fetch left chunks there."
)
def remote_remove(name: str, force: bool) -> None:
    """Forget remote NAME and its remote-tracking branches (the storage is not touched).

    Example: wvc remote remove origin
    """
    config = open_repo().remove_remote(name, force=force)
    click.echo(f"Removed remote {config.name} ({config.url})")


@cli.command()
@click.argument("remote_name", metavar="REMOTE", required=False)
@click.argument("refs", nargs=-1)
@click.option("-f", "--force", is_flag=True, help="Overwrite remote branches that moved.")
@click.option("--tags", is_flag=True, help="Push every tag too.")
@jobs_option
@json_option
@quiet_option
def push(
    remote_name: str | None,
    refs: tuple[str, ...],
    force: bool,
    tags: bool,
    jobs: int | None,
    as_json: bool,
    quiet: bool,
) -> None:
    """Upload the objects REMOTE lacks, then move its branches (default: the current one).

    Refuses to move a remote branch that is not an ancestor of yours
    (exit 10: fetch first) unless --force. Example: wvc push origin main
    """
    repo = open_repo()
    name = remote_name or _default(repo)
    with transfer_bar(quiet or as_json) as bar:
        res = repo.push(name, list(refs) or None, force=force, tags=tags, jobs=jobs, progress=bar)
    if as_json:
        emit_json(res.to_json())
        return
    if res.created_remote:
        click.echo(f"Created remote storage at {res.url}")
    if res.up_to_date:
        click.echo(f"{name}: up to date")
        return
    else:
        click.echo(
            f"Pushed to {name} ({res.url}): {res.commits} commit(s), {res.objects} object(s), "
            f"{human(res.bytes)}"
            + (f"; {res.present} object(s) were already there" if res.present else "")
        )
    _echo_updates(res.updates)


@cli.command()
@click.argument("remote_name", metavar="REMOTE", required=False)
@click.argument("branches", nargs=-1)
@click.option("--files", multiple=True, metavar="GLOB", help="Partial: only these files' chunks.")
@click.option(
    "--tensors", multiple=True, metavar="GLOB", help="Partial: only these tensors' chunks."
)
@click.option("--prune", is_flag=True, help="Drop REMOTE/BRANCH refs the remote no longer has.")
@click.option("--force-tags", is_flag=True, help="Take the remote's tag when they differ.")
@jobs_option
@json_option
@quiet_option
def fetch(
    remote_name: str | None,
    branches: tuple[str, ...],
    files: tuple[str, ...],
    tensors: tuple[str, ...],
    prune: bool,
    force_tags: bool,
    jobs: int | None,
    as_json: bool,
    quiet: bool,
) -> None:
    """Download REMOTE's branches (as REMOTE/BRANCH) and tags with the objects they need.

    Local branches do not move ('wvc pull' does that). Example: wvc fetch origin;
    wvc log origin/main
    """
    repo = open_repo()
    name = remote_name or _default(repo)
    with transfer_bar(quiet or as_json) as bar:
        res = repo.fetch(
            name,
            list(branches) or None,
            files=files,
            tensors=tensors,
            prune=prune,
            force_tags=force_tags,
            jobs=jobs,
            progress=bar,
        )
    if as_json:
        emit_json(res.to_json())
        return
    _echo_fetch(name, res)


def _echo_fetch(name: str, res: Any) -> None:
    for w in res.warnings:
        click.echo(f"warning: {w}", err=True)
    if res.up_to_date:
        click.echo(f"{name}: up to date")
    else:
        partial = " (partial: other chunks are fetched when needed)" if res.partial else ""
        click.echo(
            f"Fetched from {name}: {res.commits} commit(s), {res.objects} object(s), "
            f"{human(res.bytes)}{partial}"
        )
        _echo_updates(tuple(u for u in res.updates if u.status is not UpdateStatus.UP_TO_DATE))


@cli.command()
@click.argument("remote_name", metavar="REMOTE", required=False)
@click.argument("branch", required=False)
@click.option("--files", multiple=True, metavar="GLOB", help="Partial: only these files' chunks.")
@click.option(
    "--tensors", multiple=True, metavar="GLOB", help="Partial: only these tensors' chunks."
)
@jobs_option
@json_option
@quiet_option
def pull(
    remote_name: str | None,
    branch: str | None,
    files: tuple[str, ...],
    tensors: tuple[str, ...],
    jobs: int | None,
    as_json: bool,
    quiet: bool,
) -> None:
    """Fetch BRANCH (default: the current branch) from REMOTE and fast-forward yours to it.

    wvc does not merge: if both sides have new commits, pull says so and moves
    nothing. Example: wvc pull origin main
    """
    repo = open_repo()
    name = remote_name or _default(repo)
    with transfer_bar(quiet or as_json) as bar:
        res = repo.pull(name, branch, files=files, tensors=tensors, jobs=jobs, progress=bar)
    if as_json:
        emit_json(res.to_json())
        return
    _echo_fetch(name, res.fetch)
    if res.status is UpdateStatus.UP_TO_DATE:
        click.echo(f"{res.branch}: up to date ({res.new[:12]})")
    elif res.old is None:
        click.echo(f"{res.branch}: created at {res.new[:12]}")
    else:
        click.echo(f"{res.branch}: {res.old[:12]}..{res.new[:12]} (fast-forward)")


@cli.command()
@click.argument("url")
@click.argument("directory", required=False, type=click.Path(file_okay=False))
@click.option("-b", "--branch", default=None, help="Branch to check out (default: the remote's).")
@click.option(
    "--filter",
    "files",
    multiple=True,
    metavar="GLOB",
    help="Partial clone: only these files' chunks (others are fetched when needed).",
)
@click.option(
    "--tensors", multiple=True, metavar="GLOB", help="Partial clone: only these tensors' chunks."
)
@click.option(
    "-o", "--option", "options", multiple=True, metavar="KEY=VALUE", help="fsspec storage option."
)
@jobs_option
@json_option
@quiet_option
def clone(
    url: str,
    directory: str | None,
    branch: str | None,
    files: tuple[str, ...],
    tensors: tuple[str, ...],
    options: tuple[str, ...],
    jobs: int | None,
    as_json: bool,
    quiet: bool,
) -> None:
    """Make a new repository in DIRECTORY from the remote at URL (named 'origin').

    Example: wvc clone s3://team-bucket/models/bert bert && cd bert && wvc restore main --to out/
    """
    with transfer_bar(quiet or as_json) as bar:
        repo = Repository.clone(
            url,
            directory,
            branch=branch,
            files=files,
            tensors=tensors,
            options=_options(options),
            jobs=jobs,
            progress=bar,
        )
    res = repo.last_clone
    assert res is not None
    repo.close()
    if as_json:
        emit_json(res.to_json())
        return
    f = res.fetch
    click.echo(
        f"Cloned {url} into {res.path}: {f.commits} commit(s), {f.objects} object(s), "
        f"{human(f.bytes)}" + (" (partial)" if f.partial else "")
    )
    if res.branch:
        click.echo(f"On branch {res.branch} at {(res.head or '')[:12]}")
    else:
        click.echo("The remote has no branches yet.")


def _default(repo: Repository) -> str:
    from .ops.remotes import default_remote

    return default_remote(repo)
