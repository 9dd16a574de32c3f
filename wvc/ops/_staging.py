"""Writing a new output directory all at once: build it beside the target, then rename.

Used by restore and export. A failure at any point (a corrupt object, a full
disk, Ctrl-C) leaves nothing behind, and a success leaves every file and
directory fsynced before the directory appears under its name.
"""

from __future__ import annotations

import os
import shutil
import stat
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import PathNotFoundError, TargetNotEmptyError
from ..store._local import fsync_dir


def _make_parents(directory: Path) -> Path | None:
    """Create ``directory`` and missing parents; the topmost one created, to undo on failure."""
    missing = [directory, *directory.parents]
    missing = [p for p in missing if not p.exists()]
    for p in [directory, *directory.parents]:
        if p.exists() and not p.is_dir():
            raise PathNotFoundError(str(p), "is not a directory, cannot write below it")
        if p.exists():
            break
    if not missing:
        return None
    directory.mkdir(parents=True)
    return missing[-1]


class Staging:
    """A directory being built; :meth:`file` gives paths inside it, creating parents."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.dirs = [path]

    def file(self, rel: str) -> Path:
        out = self.path / rel
        for d in reversed(out.relative_to(self.path).parents[:-1]):
            if not (self.path / d).is_dir():
                os.mkdir(self.path / d, 0o777)
                self.dirs.append(self.path / d)
        return out


@contextmanager
def staged_directory(to: Path) -> Iterator[Staging]:
    """Build the contents of ``to`` (absent or empty) in a staging directory, then move it."""
    target = to.absolute()
    if target.is_symlink():
        target = target.resolve()
    mode: int | None = None
    if target.exists():
        if not target.is_dir() or any(target.iterdir()):
            raise TargetNotEmptyError(str(to))
        mode = stat.S_IMODE(target.stat().st_mode)
    created = _make_parents(target.parent)
    # os.mkdir applies the umask, as creating the target directly would.
    staging = target.parent / f".{target.name}.wvc-staging-{uuid.uuid4().hex[:12]}"
    try:
        os.mkdir(staging, 0o777)
    except BaseException:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        raise
    st = Staging(staging)
    try:
        yield st
        for d in reversed(st.dirs):  # children first: every entry durable before the move
            fsync_dir(d)
        if mode is not None:
            os.chmod(staging, mode)
            target.rmdir()
        os.replace(staging, target)
        fsync_dir(target.parent)
    except BaseException:
        shutil.rmtree(created or staging, ignore_errors=True)
        raise


def write_file(path: Path, pieces: Iterable[bytes | bytearray | memoryview]) -> int:
    """Write ``pieces`` to a new file, fsynced; the number of bytes written."""
    written = 0
    with open(path, "wb") as f:
        for data in pieces:
            f.write(data)
            written += len(data)
        f.flush()
        os.fsync(f.fileno())
    return written
