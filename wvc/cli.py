"""The ``wvc`` command line: each command picks one API call and renders its result.

Errors: every :class:`~wvc.errors.WvcError` becomes one line on stderr,
``wvc: error: <message>``, and its documented exit code (docs/cli.md).
``WVC_DEBUG=1`` shows the traceback instead.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import click

from . import __version__
from ._malloc import tune_allocator
from .errors import InputError, WvcError
from .layout import REPO_DIR
from .manifest import parse_meta_value
from .repository import Repository

F = TypeVar("F", bound=Callable[..., Any])
OS_ERROR_EXIT = 8


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def when(t: float) -> str:
    return _dt.datetime.fromtimestamp(t).astimezone().strftime("%Y-%m-%d %H:%M:%S %z")


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False))


def json_option(f: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")(f)


def quiet_option(f: F) -> F:
    return click.option("-q", "--quiet", is_flag=True, help="No progress output.")(f)


def onto_options(f: F) -> F:
    """--onto, -m, --meta, -b and --to: where a rewritten version (apply, lora apply) goes."""
    for option in reversed(
        [
            click.option(
                "--onto", default="HEAD", show_default=True, help="The revision to change."
            ),
            click.option("-m", "--message", default=None, help="Commit message."),
            click.option(
                "--meta", "meta", multiple=True, metavar="KEY=VALUE", help="Metadata (repeatable)."
            ),
            click.option(
                "-b",
                "--branch",
                default=None,
                help="Put the result on this branch (new, or at REV).",
            ),
            click.option(
                "--to",
                type=click.Path(file_okay=False),
                default=None,
                help="Write the result's files into this new or empty directory instead of "
                "committing.",
            ),
        ]
    ):
        f = option(f)
    return f


def open_repo() -> Repository:
    return Repository.open(os.environ.get("WVC_DIR", "."))


@contextmanager
def progress_bar(total: int, label: str, quiet: bool) -> Iterator[Callable[[int], None] | None]:
    """A byte progress bar on stderr when it is a terminal; otherwise nothing."""
    if quiet or not sys.stderr.isatty() or total <= 0:
        yield None
        return
    bar: Any
    with click.progressbar(
        length=total,
        label=label,
        file=sys.stderr,
        show_pos=False,
        show_percent=True,
        show_eta=True,
        item_show_func=None,
    ) as bar:
        yield bar.update


class WvcGroup(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except WvcError as e:
            if os.environ.get("WVC_DEBUG"):
                raise
            click.echo(f"wvc: error: {e.message}", err=True)
            ctx.exit(e.exit_code)
        except BrokenPipeError:
            # The reader went away (`wvc log | head`): stop quietly, as Unix tools do.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            ctx.exit(141)
        except OSError as e:
            # Disk full, permission denied, I/O error: the system's words and the file.
            if os.environ.get("WVC_DEBUG"):
                raise
            where = f"{e.filename}: " if e.filename else ""
            click.echo(f"wvc: error: {where}{e.strerror or e}", err=True)
            ctx.exit(OS_ERROR_EXIT)
        except KeyboardInterrupt:
            click.echo("wvc: interrupted", err=True)
            ctx.exit(130)


@click.group(cls=WvcGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="wvc")
def cli() -> None:
    """wvc: version control for neural-network weights.

    Commit checkpoints, see what changed, restore any version byte for byte.
    Run 'wvc COMMAND --help' for the options of a command.
    """


@cli.command()
@click.argument("path", default=".", type=click.Path(file_okay=False))
def init(path: str) -> None:
    """Create an empty repository (PATH/.wvc).

    Example: wvc init
    """
    repo = Repository.init(path)
    click.echo(f"Initialized empty wvc repository in {repo.dir}")


def _parse_meta(pairs: tuple[str, ...]) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InputError(f"--meta {pair!r}: expected KEY=VALUE")
        meta[key] = parse_meta_value(value)
    return meta


def _size_or_zero(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:  # the commit itself reports unreadable paths
        return 0


def _paths_size(paths: tuple[str, ...]) -> int:
    """Bytes to commit, for the progress bar only."""
    total = 0
    for p in paths:
        if os.path.isdir(p):
            for dirpath, dirnames, filenames in os.walk(p):
                dirnames[:] = [d for d in dirnames if d != REPO_DIR]
                total += sum(_size_or_zero(os.path.join(dirpath, f)) for f in filenames)
        else:
            total += _size_or_zero(p)
    return total


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("-m", "--message", default="", help="Commit message.")
@click.option(
    "--meta",
    "meta",
    multiple=True,
    metavar="KEY=VALUE",
    help="Metadata (repeatable), e.g. loss=2.31.",
)
@click.option(
    "--opaque", is_flag=True, help="Store every file as plain bytes, without parsing tensors."
)
@click.option(
    "-b",
    "--branch",
    default=None,
    help="Commit onto this branch (created from HEAD if new) without switching to it.",
)
@click.option(
    "--no-delta",
    is_flag=True,
    help="Store new chunks whole, not as XOR deltas against the parent commit's.",
)
@click.option(
    "--rehash",
    is_flag=True,
    help="Read every file, even those the stat cache says are unchanged.",
)
@json_option
@quiet_option
def commit(
    paths: tuple[str, ...],
    message: str,
    meta: tuple[str, ...],
    opaque: bool,
    branch: str | None,
    no_delta: bool,
    rehash: bool,
    as_json: bool,
    quiet: bool,
) -> None:
    """Commit a checkpoint directory, or files stored by their names.

    New chunks of tensors the parent commit holds in another version are
    stored as XOR deltas against them when that is clearly smaller. Files
    unchanged since they were last committed (same size, times, inode) are
    not read again.

    Example: wvc commit ckpt/step-100 -m "step 100" --meta loss=2.31
    """
    repo = open_repo()
    meta_d = _parse_meta(meta)
    show_progress = not (quiet or as_json) and sys.stderr.isatty()
    total = _paths_size(paths) if show_progress else 0
    with progress_bar(total, "committing", quiet or as_json) as progress:
        res = repo.commit(
            list(paths),
            message,
            meta_d,
            opaque=opaque,
            progress=progress,
            branch=branch,
            delta=not no_delta,
            rehash=rehash,
        )
    if not quiet:
        for w in res.warnings:
            click.echo(f"warning: {w}", err=True)
    if as_json:
        emit_json(res.to_json())
        return
    where = res.branch or "detached HEAD"
    click.echo(
        f"[{where} {res.id[:12]}] {message or '(no message)'}\n"
        f" {res.files} file(s), {res.tensors} tensor(s), {human(res.logical_size)}; "
        f"{human(res.new_stored_size)} new stored in {res.new_objects} object(s)"
    )


def _meta_table(entries: list[Any], keys: tuple[str, ...]) -> None:
    rows = [
        [e.id[:12], *("-" if k not in e.meta else str(e.meta[k]) for k in keys), e.message]
        for e in entries
    ]
    header = ["commit", *keys, "message"]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(keys) + 1)]
    for r in [header, *rows]:
        cells = [c.ljust(w) for c, w in zip(r, widths, strict=False)]
        click.echo("  ".join([*cells, r[-1]]).rstrip())


def _meta_text(meta: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in meta.items())


@cli.command()
@click.argument("rev", default="HEAD")
@click.option("-n", "--limit", type=click.IntRange(min=0), help="Show at most N commits.")
@click.option("--oneline", is_flag=True, help="One line per commit.")
@click.option(
    "--where",
    default=None,
    metavar="EXPR",
    help="Keep commits whose meta matches, e.g. 'loss<1.5 and lr=1e-4'.",
)
@click.option(
    "--sort", default=None, metavar="KEY", help="Order by a meta key, ascending (missing last)."
)
@click.option("--reverse", is_flag=True, help="Reverse the order.")
@click.option(
    "--meta",
    "meta_keys",
    multiple=True,
    metavar="KEY",
    help="Show these meta keys as columns, one line per commit (repeatable).",
)
@click.option("--ids", is_flag=True, help="Print only full commit ids, one per line.")
@json_option
def log(
    rev: str,
    limit: int | None,
    oneline: bool,
    where: str | None,
    sort: str | None,
    reverse: bool,
    meta_keys: tuple[str, ...],
    ids: bool,
    as_json: bool,
) -> None:
    """Commits reachable from REV, newest first (or by a meta key with --sort).

    Example: wvc log --where 'eval_loss<1.5' --sort eval_loss --meta eval_loss -n 3

    The best checkpoint by eval loss, restored:
    wvc restore "$(wvc log --sort eval_loss -n 1 --ids)" --to best/
    """
    entries = open_repo().log(rev, limit=limit, where=where, sort=sort, reverse=reverse)
    if as_json:
        emit_json([e.to_json() for e in entries])
        return
    if ids:
        for e in entries:
            click.echo(e.id)
        return
    if meta_keys:
        _meta_table(entries, meta_keys)
        return
    for e in entries:
        deco = f" ({', '.join(e.refs)})" if e.refs else ""
        if oneline:
            meta = f"  [{_meta_text(e.meta)}]" if e.meta else ""
            click.echo(f"{e.id[:12]}{deco} {e.message}{meta}")
            continue
        click.echo(click.style(f"commit {e.id}", fg="yellow") + deco)
        if len(e.parents) > 1:
            click.echo("Merge:  " + " ".join(p[:12] for p in e.parents))
        click.echo(f"Author: {e.author}")
        click.echo(f"Date:   {when(e.time)}")
        if e.meta:
            click.echo(f"Meta:   {_meta_text(e.meta)}")
        click.echo(
            f"Size:   {human(e.logical_size)} logical, {human(e.new_stored_size)} new stored"
        )
        click.echo(f"\n    {e.message}\n")


@cli.command()
@click.argument("rev", default="HEAD")
@click.option("--tensors/--no-tensors", default=True, help="List each file's tensors.")
@click.option(
    "--metadata/--no-metadata",
    default=True,
    help="List each file's format metadata (GGUF key/values, safetensors __metadata__).",
)
@json_option
def show(rev: str, tensors: bool, metadata: bool, as_json: bool) -> None:
    """Files and tensors of a commit, with logical and stored bytes.

    Example: wvc show HEAD~1
    """
    res = open_repo().show(rev)
    if as_json:
        emit_json(res.to_json())
        return
    e = res.commit
    click.echo(f"commit {e.id}")
    click.echo(f"Date:   {when(e.time)}")
    if e.meta:
        click.echo(f"Meta:   {_meta_text(e.meta)}")
    click.echo(f"\n    {e.message}\n")
    click.echo(
        f"{len(res.files)} file(s), {human(res.logical_size)} logical, "
        f"{human(res.stored_size)} stored"
    )
    for f in res.files:
        click.echo(f"  {f.path}  [{f.format}]  {human(f.size)} ({human(f.stored_size)} stored)")
        if metadata:
            for k, v in f.metadata.items():
                click.echo(f"      {k} = {v if isinstance(v, str) else json.dumps(v)}")
        if tensors:
            for t in f.tensors:
                shape = "x".join(str(d) for d in t.shape) or "scalar"
                click.echo(f"      {t.name:<48} {t.dtype:<8} {shape}")


@cli.command()
@click.argument("rev")
@click.argument("paths", nargs=-1)
@click.option(
    "--to", "to", required=True, type=click.Path(), help="Directory to write (absent or empty)."
)
@json_option
@quiet_option
def restore(rev: str, paths: tuple[str, ...], to: str, as_json: bool, quiet: bool) -> None:
    """Write the files of REV (or only PATHS) into a new directory, byte-identical.

    Example: wvc restore HEAD~1 --to out/
    """
    repo = open_repo()
    total = 0
    if not (quiet or as_json) and sys.stderr.isatty():
        total = repo.show(rev).logical_size
    with progress_bar(total, "restoring", quiet or as_json) as progress:
        res = repo.restore(rev, to, paths=list(paths) or None, progress=progress)
    if as_json:
        emit_json(res.to_json())
    else:
        click.echo(
            f"Restored {res.files} file(s), {human(res.size)} from {res.commit[:12]} to {res.to}"
        )


@cli.command()
@click.argument("a")
@click.argument("b", default="HEAD")
@click.option("--stat", is_flag=True, help="Only the summary line.")
@click.option("--tensors", "pattern", default=None, metavar="GLOB", help="Only tensors matching.")
@click.option(
    "--path", "select", default=None, help="Only this file, directory or shard index (both sides)."
)
@click.option(
    "--sort",
    type=click.Choice(["name", "relative", "l2"]),
    default="name",
    show_default=True,
    help="Order of the table.",
)
@click.option("--rank", is_flag=True, help="Estimate the rank of each 2-D delta (costs an SVD).")
@click.option("--all", "show_all", is_flag=True, help="List unchanged tensors too.")
@click.option("--exit-code", is_flag=True, help="Exit 1 if the versions differ (like git diff).")
@click.option(
    "--plot",
    type=click.Path(dir_okay=False),
    default=None,
    metavar="FILE.png",
    help="Also draw relative change per tensor, grouped by layer (needs wvc[plot]).",
)
@json_option
def diff(
    a: str,
    b: str,
    stat: bool,
    pattern: str | None,
    select: str | None,
    sort: str,
    rank: bool,
    show_all: bool,
    exit_code: bool,
    plot: str | None,
    as_json: bool,
) -> None:
    """Per-tensor differences between A and B (revisions, or checkpoints on disk).

    Example: wvc diff HEAD~1 HEAD --sort relative

    Also: wvc diff HEAD ./ckpt/step-300   (a directory not yet committed)
    """
    res = open_repo().diff(a, b, tensors=pattern, rank=rank, path=select)
    if plot is not None:
        from .plot import plot_diff

        drawn = plot_diff(res, plot)
        if not as_json:
            click.echo(
                f"plotted {drawn.tensors} tensor(s) in {len(drawn.layers)} group(s) to {plot}",
                err=True,
            )
    if as_json:
        emit_json(res.to_json())
    else:
        _render_diff(res, stat, sort, show_all, rank)
    if exit_code and res.differs:
        sys.exit(1)


def _render_diff(res: Any, stat: bool, sort: str, show_all: bool, rank: bool) -> None:
    c = res.counts
    click.echo(
        f"{c['modified']} modified, {c['added']} added, {c['removed']} removed, "
        f"{c['reshaped'] + c['retyped']} reshaped/retyped, {c['unchanged']} unchanged; "
        f"{human(res.bytes_changed)} in changed tensors"
    )
    if stat:
        return
    rows = [t for t in res.tensors if show_all or t.status != "unchanged"]
    if sort != "name":

        def key(t: Any) -> float:
            v = getattr(t.stats, sort, None) if t.stats else None
            return -(v if isinstance(v, float) and v == v else -1.0)

        rows.sort(key=key)
    if not rows:
        return
    header = ["status", "tensor", "dtype", "shape", "changed", "relative", "l2", "max|d|", "cos"]
    if rank:
        header += ["r90", "r99"]
    table = [header]
    for t in rows:
        s = t.stats
        shape = _shape(t.shape_b if t.shape_b is not None else t.shape_a)
        if t.status == "reshaped":
            shape = f"{_shape(t.shape_a)}->{_shape(t.shape_b)}"
        dtype = t.dtype_b or t.dtype_a or ""
        if t.dtype_a and t.dtype_b and t.dtype_a != t.dtype_b:
            dtype = f"{t.dtype_a}->{t.dtype_b}"
        cells = [t.status, t.name, dtype, shape]
        if s is None:
            cells += [""] * (len(header) - 4)
        else:
            cells += [
                f"{100 * s.changed_fraction:.1f}%",
                _g(s.relative),
                _g(s.l2),
                _g(s.max_abs),
                _g(s.cosine, 6),
            ]
            if rank:
                cells += [_rank(s.rank90, s.rank_bound), _rank(s.rank99, s.rank_bound)]
        table.append(cells)
    _echo_table(table)


def _echo_table(table: list[list[str]]) -> None:
    """Rows of cells in left-aligned columns (the first row is the header)."""
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    for r in table:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def _shape(shape: tuple[int, ...] | None) -> str:
    if shape is None:
        return "-"
    return "x".join(str(d) for d in shape) or "scalar"


def _g(v: float | None, digits: int = 3) -> str:
    return "" if v is None else f"{v:.{digits}g}"


def _rank(r: int | None, bound: int | None) -> str:
    if r is None:
        return ""
    return f">{bound}" if bound is not None and r > bound else str(r)


_SIZE_UNITS = {
    "": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
    "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40,
}  # fmt: skip


@cli.command()
@click.argument("a")
@click.argument("b")
@click.option(
    "-o",
    "--output",
    "out",
    required=True,
    type=click.Path(dir_okay=False),
    help="The delta file to write (a safetensors file).",
)
@click.option(
    "--mode",
    type=click.Choice(["auto", "exact", "sparse", "lowrank"]),
    default="auto",
    show_default=True,
    help="auto: smallest lossless encoding per tensor; lowrank: factors of 2-D changes.",
)
@click.option("--rank", type=click.IntRange(min=1), default=None, help="Rank for --mode lowrank.")
@click.option(
    "--energy",
    type=click.FloatRange(0, 1, min_open=True),
    default=None,
    help="For --mode lowrank: the fewest ranks keeping this fraction of each change.",
)
@click.option(
    "--residual", is_flag=True, help="For --mode lowrank: add the exact remainder (lossless)."
)
@click.option("--tensors", "pattern", default=None, metavar="GLOB", help="Only tensors matching.")
@click.option(
    "--path", "select", default=None, help="Only this file, directory or shard index (both sides)."
)
@json_option
@quiet_option
def delta(
    a: str,
    b: str,
    out: str,
    mode: str,
    rank: int | None,
    energy: float | None,
    residual: bool,
    pattern: str | None,
    select: str | None,
    as_json: bool,
    quiet: bool,
) -> None:
    """Write a delta file that turns A into B (revisions, or checkpoints on disk).

    Example: wvc delta main finetune -o finetune.delta.safetensors

    Also: wvc delta main finetune -o lora.delta.safetensors --mode lowrank --rank 16
    """
    res = open_repo().delta(
        a,
        b,
        out,
        mode=mode,  # type: ignore[arg-type]
        rank=rank,
        energy=energy,
        residual=residual,
        tensors=pattern,
        path=select,
    )
    if as_json:
        emit_json(res.to_json())
        return
    if quiet:
        return
    ops = Counter(t.op.value for t in res.tensors)
    kinds = ", ".join(f"{n} {op}" for op, n in sorted(ops.items())) or "no changes"
    click.echo(
        f"wrote {res.path}: {len(res.tensors)} tensor(s) ({kinds}), {res.unchanged} unchanged; "
        f"{human(res.size)} for {human(res.changed_size)} of changed tensors; "
        + ("LOSSY" if res.lossy else "lossless")
    )
    _echo_delta_tensors(res.tensors)


def _echo_delta_tensors(tensors: Any) -> None:
    if not tensors:
        return
    table = [["op", "encoding", "tensor", "payload", "tensor size", "rank", "energy", "max err"]]
    for t in tensors:
        enc = t.encoding.value + (f"+{t.residual.value}" if t.residual else "")
        table.append(
            [
                t.op.value,
                enc,
                t.name,
                human(t.size),
                human(t.tensor_size),
                "" if t.rank is None else str(t.rank),
                "" if t.energy is None else f"{100 * t.energy:.1f}%",
                "" if t.max_error is None or t.residual else _g(t.max_error),
            ]
        )
    _echo_table(table)


@cli.command()
@click.argument("delta_file", metavar="DELTA", type=click.Path(dir_okay=False))
@onto_options
@json_option
def apply(
    delta_file: str,
    onto: str,
    message: str | None,
    meta: tuple[str, ...],
    branch: str | None,
    to: str | None,
    as_json: bool,
) -> None:
    """Apply a delta file onto a revision and commit the result as its child.

    The revision's tensors must be the delta's base; for a lossless delta the
    result is bit-identical to the version the delta was made to.

    Example: wvc apply finetune.delta.safetensors --onto main -m "fine-tune"
    """
    res = open_repo().apply(
        delta_file, onto, message=message, meta=_parse_meta(meta), branch=branch, to=to
    )
    if as_json:
        emit_json(res.to_json())
        return
    if res.commit is not None:
        c = res.commit
        click.echo(
            f"[{c.branch or 'detached HEAD'} {c.id[:12]}] applied {len(res.tensors)} tensor "
            f"change(s) onto {res.onto[:12]}; {human(c.new_stored_size)} new stored"
        )
    else:
        click.echo(
            f"applied {len(res.tensors)} tensor change(s) onto {res.onto[:12]} into {res.to}"
        )
    if res.lossy:
        worst = max((t.max_error or 0.0 for t in res.tensors), default=0.0)
        click.echo(f"lossy delta: max absolute error {_g(worst)} (see --json per tensor)")


@cli.group()
def lora() -> None:
    """LoRA adapters in PEFT's layout: extract from two versions, merge into one."""


@lora.command("extract")
@click.argument("a")
@click.argument("b")
@click.option("--rank", "-r", type=click.IntRange(min=1), required=True, help="LoRA rank r.")
@click.option(
    "-o",
    "--output",
    "out",
    required=True,
    type=click.Path(),
    help="The adapter directory to write (new or empty).",
)
@click.option("--alpha", type=float, default=None, help="lora_alpha (default: the rank).")
@click.option(
    "--target", default=None, metavar="GLOB", help="Only tensors matching (e.g. '*proj.weight')."
)
@click.option(
    "--path", "select", default=None, help="Only this file, directory or shard index (both sides)."
)
@json_option
def lora_extract(
    a: str,
    b: str,
    rank: int,
    out: str,
    alpha: float | None,
    target: str | None,
    select: str | None,
    as_json: bool,
) -> None:
    """Write a PEFT LoRA adapter of rank R that turns A into (approximately) B.

    Example: wvc lora extract main finetune --rank 16 -o adapter/
    """
    from . import lora as lora_mod

    res = lora_mod.extract(
        open_repo(), a, b, out, rank=rank, alpha=alpha, target=target, path=select
    )
    if as_json:
        emit_json(res.to_json())
        return
    click.echo(
        f"wrote {res.path}: {len(res.modules)} LoRA module(s) at rank {res.rank}, "
        f"{len(res.modules_to_save)} module(s) to save; {human(res.size)}"
    )
    table = [["module", "shape", "kind", "energy kept"]]
    for m in res.modules:
        kind = "embedding" if m.embedding else "linear"
        energy = "" if m.energy is None else f"{100 * m.energy:.1f}%"
        table.append([m.module, _shape(m.shape), kind, energy])
    if len(table) > 1:
        _echo_table(table)
    for saved in res.modules_to_save:
        click.echo(f"saved whole: {saved}")
    for tensor, reason in res.not_representable:
        click.echo(f"not in the adapter: {tensor} ({reason})", err=True)


@lora.command("apply")
@click.argument("adapter", type=click.Path(file_okay=False))
@onto_options
@click.option(
    "--prefix",
    default=None,
    help="Tensor name = PREFIX + module (or OLD=NEW to replace a leading OLD); inferred if unset.",
)
@json_option
def lora_apply(
    adapter: str,
    onto: str,
    message: str | None,
    meta: tuple[str, ...],
    branch: str | None,
    to: str | None,
    prefix: str | None,
    as_json: bool,
) -> None:
    """Merge a PEFT LoRA adapter into a revision (W += alpha/r * B @ A) and commit it.

    Example: wvc lora apply adapter/ --onto main -m "merge adapter"
    """
    from . import lora as lora_mod

    res = lora_mod.merge(
        open_repo(),
        adapter,
        onto,
        message=message,
        meta=_parse_meta(meta),
        branch=branch,
        prefix=prefix,
        to=to,
    )
    if as_json:
        emit_json(res.to_json())
        return
    what = f"merged {len(res.modules)} LoRA module(s), replaced {len(res.replaced)} tensor(s)"
    if res.commit is not None:
        c = res.commit
        click.echo(f"[{c.branch or 'detached HEAD'} {c.id[:12]}] {what} onto {res.onto[:12]}")
    else:
        click.echo(f"{what} onto {res.onto[:12]} into {res.to}")


def parse_size(text: str) -> int:
    """'5GB' (decimal, as Hugging Face counts), '2GiB', '500MB' or a byte count."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", text)
    unit = m.group(2).upper() if m else ""
    if m is None or unit not in _SIZE_UNITS:
        raise click.BadParameter(f"{text!r} is not a size like 5GB, 500MB or 2GiB")
    n = int(float(m.group(1)) * _SIZE_UNITS[unit])
    if n <= 0:
        raise click.BadParameter(f"{text!r} must be more than 0 bytes")
    return n


@cli.command()
@click.argument("rev", default="HEAD")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["safetensors", "npz"]),
    default="safetensors",
    show_default=True,
    help="Output format.",
)
@click.option(
    "--to", "to", required=True, type=click.Path(), help="Directory to write (absent or empty)."
)
@click.option(
    "--path",
    "select",
    default=None,
    help="Export only this file, directory or shard index of the commit.",
)
@click.option(
    "--max-shard-size",
    default=None,
    metavar="SIZE",
    help="Split safetensors output into shards of at most SIZE (5GB, 500MB, 2GiB) "
    "with a model.safetensors.index.json.",
)
@click.option(
    "--tensors-only", is_flag=True, help="Do not copy files without tensors (config, tokenizer)."
)
@json_option
@quiet_option
def export(
    rev: str,
    fmt: str,
    to: str,
    select: str | None,
    max_shard_size: str | None,
    tensors_only: bool,
    as_json: bool,
    quiet: bool,
) -> None:
    """Write the tensors of REV as a safetensors checkpoint (or an npz), whatever format they
    were committed in: PyTorch, NumPy, GGUF float tensors, safetensors, sharded or not.

    Example: wvc export HEAD --format safetensors --to out/ --max-shard-size 5GB
    """
    shard = parse_size(max_shard_size) if max_shard_size is not None else None
    repo = open_repo()
    total = 0
    if not (quiet or as_json) and sys.stderr.isatty():
        total = sum(t.size for f in repo.show(rev).files for t in f.tensors)
    with progress_bar(total, "exporting", quiet or as_json) as progress:
        res = repo.export(
            rev,
            to,
            format=fmt,
            path=select,
            max_shard_size=shard,
            tensors_only=tensors_only,
            progress=progress,
        )
    if as_json:
        emit_json(res.to_json())
        return
    click.echo(
        f"Exported {res.tensors} tensor(s) from {res.commit[:12]} as {res.format}: "
        f"{len(res.files)} file(s), {human(res.size)} in {res.to}"
    )


@cli.command()
@click.argument("name", required=False)
@click.argument("rev", default="HEAD")
@click.option("-d", "--delete", is_flag=True, help="Delete branch NAME.")
@click.option("-f", "--force", is_flag=True, help="Move NAME if it exists.")
@click.option(
    "-r", "--remotes", "remote_branches", is_flag=True, help="List remote-tracking branches."
)
@json_option
def branch(
    name: str | None, rev: str, delete: bool, force: bool, remote_branches: bool, as_json: bool
) -> None:
    """List branches, or create branch NAME at REV.

    Example: wvc branch exp HEAD~1
    """
    if delete and name is None:
        raise click.UsageError("--delete needs a branch NAME")
    repo = open_repo()
    if remote_branches:
        tracked = [
            {"name": f"{r.name}/{b}", "remote": r.name, "target": t}
            for r in repo.remotes()
            for b, t in r.branches.items()
        ]
        if as_json:
            emit_json(tracked)
        for item in [] if as_json else tracked:
            click.echo(f"  {item['name']:<24} {item['target'][:12]}")
        return
    if name is None:
        current = repo.head().branch
        items = repo.branches()
        if as_json:
            emit_json([{**b.to_json(), "current": b.name == current} for b in items])
            return
        for b in items:
            mark = "*" if b.name == current else " "
            click.echo(f"{mark} {b.name:<24} {b.target[:12]}")
        return
    if delete:
        ref = repo.delete_branch(name)
        click.echo(f"Deleted branch {ref.name} (was {ref.target[:12]})")
        return
    ref = repo.branch(name, rev, force=force)
    click.echo(f"Branch {ref.name} at {ref.target[:12]}")


@cli.command()
@click.argument("target")
@click.option("-c", "--create", is_flag=True, help="Create branch TARGET at HEAD first.")
def switch(target: str, create: bool) -> None:
    """Make TARGET the current branch; the next commit extends it.

    wvc keeps no working copy, so switching moves HEAD only; use 'wvc restore'
    to write files. A commit id or tag detaches HEAD.

    Example: wvc switch exp
    """
    state = open_repo().switch(target, create=create)
    if state.branch:
        click.echo(f"Switched to branch {state.branch}")
    else:
        click.echo(f"HEAD is now detached at {(state.target or '')[:12]}")


@cli.command()
@click.argument("name", required=False)
@click.argument("rev", default="HEAD")
@click.option("-d", "--delete", is_flag=True, help="Delete tag NAME.")
@click.option("-f", "--force", is_flag=True, help="Move NAME if it exists.")
@json_option
def tag(name: str | None, rev: str, delete: bool, force: bool, as_json: bool) -> None:
    """List tags, or tag REV as NAME.

    Example: wvc tag v1
    """
    if delete and name is None:
        raise click.UsageError("--delete needs a tag NAME")
    repo = open_repo()
    if name is None:
        items = repo.tags()
        if as_json:
            emit_json([t.to_json() for t in items])
            return
        for t in items:
            click.echo(f"{t.name:<24} {t.target[:12]}")
        return
    if delete:
        ref = repo.delete_tag(name)
        click.echo(f"Deleted tag {ref.name} (was {ref.target[:12]})")
        return
    ref = repo.tag(name, rev, force=force)
    click.echo(f"Tagged {ref.target[:12]} as {ref.name}")


@cli.command()
@click.argument("rev", required=False)
@json_option
def stats(rev: str | None, as_json: bool) -> None:
    """Logical vs stored bytes: per commit, dedup and compression ratios.

    Per commit: logical bytes; deduped (bytes already stored, nothing new
    written); delta (raw -> stored bytes of new chunks stored as XOR deltas
    against the parent's); standalone (stored bytes of other new objects);
    new stored bytes in all. Example: wvc stats
    """
    res = open_repo().stats(rev)
    if as_json:
        emit_json(res.to_json())
        return
    click.echo(
        f"{'commit':<12}  {'logical':>9}  {'deduped':>9}  {'delta':>19}  {'standalone':>9}  "
        f"{'new stored':>10}  message"
    )

    def known(n: int | None) -> str:
        return "?" if n is None else human(n)

    for c in res.commits:
        if c.delta_raw_size is None or c.delta_stored_size is None:
            delta = "?"
        elif not c.delta_objects:
            delta = "-"
        else:
            delta = f"{human(c.delta_raw_size)} -> {human(c.delta_stored_size)}"
        click.echo(
            f"{c.id[:12]}  {human(c.logical_size):>9}  {known(c.deduped_size):>9}  {delta:>19}  "
            f"{known(c.standalone_size):>9}  {human(c.new_stored_size):>10}  {c.message}"
        )
    click.echo(
        f"\nlogical {human(res.logical_size)} in {len(res.commits)} commit(s); "
        f"unique {human(res.unique_size)}; "
        f"stored {human(res.stored_size)} in {res.objects} object(s)\n"
        f"dedup {res.dedup_ratio:.2f}x, compression {res.compression_ratio:.2f}x, "
        f"overall {res.total_ratio:.2f}x"
    )


@cli.command()
@click.option("-n", "--dry-run", is_flag=True, help="Report what would be removed; remove nothing.")
@json_option
@quiet_option
def gc(dry_run: bool, as_json: bool, quiet: bool) -> None:
    """Remove objects that no branch, tag or HEAD reaches, and report the bytes freed.

    Delta bases that kept objects need are kept. Safe while other commands
    run: objects modified in the last hour, or since the oldest running
    commit or fetch started, are never removed. Example: wvc gc --dry-run
    """
    res = open_repo().gc(dry_run=dry_run)
    if as_json:
        emit_json(res.to_json())
        return
    if quiet:
        return
    verb = "would remove" if dry_run else "removed"
    click.echo(
        f"{verb} {res.removed} object(s), {human(res.freed)}; kept {res.reachable} reachable "
        f"and {res.recent} recent unreachable object(s)"
    )


@cli.command()
@click.option(
    "--repair",
    is_flag=True,
    help="Delete corrupt object files, so that committing the original files again rewrites them.",
)
@json_option
@quiet_option
def fsck(repair: bool, as_json: bool, quiet: bool) -> None:
    """Verify everything: re-hash every object, check every manifest, ref and index row.

    Exits 6 if any problem is found. Example: wvc fsck
    """
    repo = open_repo()
    total = 0 if quiet or as_json else repo.stats().stored_size
    with progress_bar(total, "verifying", quiet or as_json) as progress:
        res = repo.fsck(progress=progress, repair=repair)
    if as_json:
        emit_json(res.to_json())
    else:
        for p in res.problems:
            click.echo(f"{p.kind.value}: {p.message}")
        click.echo(
            f"checked {res.objects_checked} object(s), {human(res.bytes_checked)}, "
            f"{res.commits_checked} commit(s); {len(res.problems)} problem(s), "
            f"{res.dangling} unreferenced object(s)"
            + (
                f"; {res.not_fetched} chunk(s) not fetched yet (partial fetch)"
                if res.not_fetched
                else ""
            )
        )
        if res.removed:
            click.echo(
                f"removed {len(res.removed)} corrupt object(s); commit the original files "
                "again to restore them"
            )
    if not res.ok:
        sys.exit(6)


@cli.command()
@click.argument("path", required=False, type=click.Path(file_okay=False))
def demo(path: str | None) -> None:
    """Run the main job end to end on a small model it makes itself.

    Writes a safetensors model and two "training steps", commits them, and
    restores the first byte for byte. Example: wvc demo /tmp/wvc-demo
    """
    from .demo import run

    run(path, echo=click.echo)


# The remote commands live in their own module and register themselves on `cli`.
from . import cli_remote  # noqa: E402, F401


def main() -> None:
    tune_allocator()
    cli(prog_name="wvc")
