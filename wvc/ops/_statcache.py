"""The stat cache: commit an unchanged file without reading it again (like git's index).

After a commit, each file read from disk gets a ``stat_cache`` row: its
absolute path, whether it was committed ``--opaque``, its size, mtime, ctime,
inode and device, and the id of the manifest it produced. The next commit of
that path trusts the row, and reads nothing, only if (docs/design.md,
"Stat cache"):

- all five stat fields are equal (a rewrite, a copy over it, a ``touch``, a
  ``chmod`` or a rename of another file onto the path each change one);
- the row was recorded when the file had not been modified for at least
  ``RACY_S`` seconds: a file written within the timestamp granularity of the
  read could change again without changing its mtime (git's "racy clean"
  problem), so such files are never cached;
- the chunk size is the same, and the manifest and every chunk it names are
  still stored (a ``gc`` may have removed them).

``wvc commit --rehash`` ignores the cache (and refreshes it).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert, select

from ..errors import IntegrityError
from ..index import stat_cache
from ..manifest import FileManifest
from ._read import read_file_manifest

if TYPE_CHECKING:
    from ..repository import Repository

RACY_S = 2.0
_STAT_FIELDS = ("size", "mtime_ns", "ctime_ns", "inode", "device")


@dataclass(frozen=True)
class FileStat:
    path: str  # absolute
    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int
    device: int

    @classmethod
    def of(cls, path: Path) -> FileStat:
        real = os.path.abspath(path)
        st = os.stat(real)
        return cls(real, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


@dataclass(frozen=True)
class Cached:
    format: str
    manifest_id: str
    manifest: FileManifest
    warnings: tuple[str, ...]


def lookup(
    repo: Repository, stats: list[FileStat], opaque: bool, chunk_size: int
) -> dict[str, Cached]:
    """Cache hits by absolute path, each checked as the module docstring says."""
    if not stats:
        return {}
    by_path = {s.path: s for s in stats}
    with repo.index.read() as conn:
        rows: list[Any] = []
        paths = list(by_path)
        for i in range(0, len(paths), 500):
            rows += conn.execute(
                select(stat_cache).where(
                    stat_cache.c.path.in_(paths[i : i + 500]), stat_cache.c.opaque == int(opaque)
                )
            ).all()
    hits: dict[str, Cached] = {}
    for row in rows:
        st = by_path[row.path]
        if any(getattr(st, f) != getattr(row, f) for f in _STAT_FIELDS):
            continue
        if row.chunk_size != chunk_size:
            continue
        try:
            manifest = read_file_manifest(repo.objects, row.manifest)
        except IntegrityError:
            continue
        if manifest.chunk_size != chunk_size or not all(
            repo.objects.has(c) for seg in manifest.segments for c in seg.chunks
        ):
            continue
        hits[row.path] = Cached(row.format, row.manifest, manifest, tuple(json.loads(row.warnings)))
    return hits


def record(
    repo: Repository,
    entries: list[tuple[FileStat, str, str, tuple[str, ...]]],
    opaque: bool,
    chunk_size: int,
    read_started: float,
) -> None:
    """Remember (stat, format, manifest id, warnings) of files just read, except racy ones."""
    limit = int((read_started - RACY_S) * 1e9)
    rows = [
        {
            "path": st.path,
            "opaque": int(opaque),
            "size": st.size,
            "mtime_ns": st.mtime_ns,
            "ctime_ns": st.ctime_ns,
            "inode": st.inode,
            "device": st.device,
            "chunk_size": chunk_size,
            "format": fmt,
            "manifest": manifest_id,
            "warnings": json.dumps(list(warnings)),
        }
        for st, fmt, manifest_id, warnings in entries
        if st.mtime_ns < limit and st.ctime_ns < limit
    ]
    if rows:
        with repo.index.write() as conn:
            conn.execute(insert(stat_cache).prefix_with("OR REPLACE"), rows)
