"""The SQLite metadata index (``.wvc/wvc.db``), through SQLAlchemy Core.

Objects are the source of truth for content; this database holds the refs
(the one piece of state that is not an object) and an index of commits,
parents, trees, files, tensors and objects that can be rebuilt from the
objects. Writers take SQLite's write lock up front (``BEGIN IMMEDIATE``) so
two committers serialize instead of losing an update. Schema: docs/design.md,
"Metadata index".
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import blake3
from sqlalchemy import (
    Column,
    Connection,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
)
from sqlalchemy.exc import DatabaseError, OperationalError

from .errors import CorruptIndexError, LockTimeoutError
from .manifest import FileManifest, FileTensor, Tree, is_contiguous

SCHEMA_VERSION = 2
BUSY_TIMEOUT_S = 60.0

metadata = MetaData()

meta_table = Table(
    "meta",
    metadata,
    Column("key", String, primary_key=True),
    Column("value", Text, nullable=False),
)

refs = Table(
    "refs",
    metadata,
    Column("name", String, primary_key=True),  # HEAD, refs/heads/X, refs/tags/X
    Column("target", String(64)),  # commit id (None for a symbolic ref)
    Column("symbolic", String),  # for HEAD on a branch: refs/heads/X
)

commits = Table(
    "commits",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String(64), nullable=False, unique=True),
    Column("tree", String(64), nullable=False),
    Column("message", Text, nullable=False),
    Column("author", String, nullable=False),
    Column("time", Float, nullable=False),
    Column("meta", Text, nullable=False),  # canonical JSON object
    Column("logical_size", Integer, nullable=False),
    Column("new_stored_size", Integer, nullable=False),
    Column("new_objects", Integer, nullable=False),
    # How the new objects were stored (None for commits indexed by schema version 1).
    Column("new_raw_size", Integer),  # raw bytes of the new chunks
    Column("delta_objects", Integer),  # new chunks stored as deltas
    Column("delta_raw_size", Integer),
    Column("delta_stored_size", Integer),
)

commit_parents = Table(
    "commit_parents",
    metadata,
    Column("commit", String(64), ForeignKey("commits.id"), primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("parent", String(64), nullable=False),
    Index("ix_commit_parents_parent", "parent"),
)

tree_files = Table(
    "tree_files",
    metadata,
    Column("tree", String(64), primary_key=True),
    Column("path", String, primary_key=True),
    Column("manifest", String(64), nullable=False),
    Column("size", Integer, nullable=False),
    Column("format", String, nullable=False),
)

tensors = Table(
    "tensors",
    metadata,
    Column("manifest", String(64), primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("name", String, nullable=False),
    Column("dtype", String, nullable=False),
    Column("shape", Text, nullable=False),  # JSON list
    Column("offset", Integer, nullable=False),
    Column("size", Integer, nullable=False),
    Column("digest", String(64), nullable=False),  # blake3 of dtype, shape and chunk ids
    Index("ix_tensors_digest", "digest"),
)

objects = Table(
    "objects",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("kind", Integer, nullable=False),  # ObjectKind
    Column("codec", Integer, nullable=False),
    Column("raw_size", Integer, nullable=False),
    Column("stored_size", Integer, nullable=False),
    Column("base", String(64)),  # the delta base named in the header (None: standalone)
)

# What the last commit of a file on disk found, so an unchanged file is not read again
# (docs/design.md, "Stat cache"). A cache: deleting every row is always safe.
stat_cache = Table(
    "stat_cache",
    metadata,
    Column("path", String, primary_key=True),  # absolute path of the file on disk
    Column("opaque", Integer, primary_key=True),  # committed with --opaque (1) or not (0)
    Column("size", Integer, nullable=False),
    Column("mtime_ns", Integer, nullable=False),
    Column("ctime_ns", Integer, nullable=False),
    Column("inode", Integer, nullable=False),
    Column("device", Integer, nullable=False),
    Column("chunk_size", Integer, nullable=False),
    Column("format", String, nullable=False),
    Column("manifest", String(64), nullable=False),
    Column("warnings", Text, nullable=False),  # JSON list of the format's warnings
)


def _on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite would defer it).
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _on_begin(conn: Connection) -> None:
    mode = conn.get_execution_options().get("wvc_begin", "DEFERRED")
    conn.exec_driver_sql(f"BEGIN {mode}")


class MetadataIndex:
    """Owns the engine; hands out read and write transactions."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # The path goes to sqlite3 as it is: formatted into a URL, a '?' or '%'
        # in a directory name would be read as URL syntax.
        self.engine: Engine = create_engine(
            "sqlite://",
            creator=lambda: sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, check_same_thread=False),
        )
        event.listen(self.engine, "connect", _on_connect)
        event.listen(self.engine, "begin", _on_begin)

    def create(self) -> None:
        with self.write() as conn:
            metadata.create_all(conn)
            conn.execute(
                meta_table.insert().values(key="schema_version", value=str(SCHEMA_VERSION))
            )

    def upgrade(self, found: int) -> None:
        """Bring a schema of an earlier version up to this one, in one transaction.

        Version 1 → 2: ``objects.base`` (delta objects), the ``commits`` columns
        saying how new objects were stored, and the ``stat_cache`` table.
        """
        if found != 1:
            return
        with self.write() as conn:
            version = conn.execute(
                meta_table.select().where(meta_table.c.key == "schema_version")
            ).one()
            if version.value != "1":  # another process upgraded it meanwhile
                return
            conn.exec_driver_sql("ALTER TABLE objects ADD COLUMN base VARCHAR(64)")
            for column in ("new_raw_size", "delta_objects", "delta_raw_size", "delta_stored_size"):
                conn.exec_driver_sql(f"ALTER TABLE commits ADD COLUMN {column} INTEGER")
            metadata.create_all(conn, tables=[stat_cache])
            conn.execute(
                meta_table.update()
                .where(meta_table.c.key == "schema_version")
                .values(value=str(SCHEMA_VERSION))
            )

    def schema_version(self) -> int | None:
        """The schema version recorded in the database; None if it has no schema yet."""
        try:
            with self.read() as conn:
                tables = conn.exec_driver_sql(
                    "SELECT name FROM sqlite_master WHERE type='table' AND name='meta'"
                ).first()
                if tables is None:
                    return None
                row = conn.execute(
                    meta_table.select().where(meta_table.c.key == "schema_version")
                ).first()
        except DatabaseError as e:
            raise CorruptIndexError(str(self.path), str(e.orig)) from None
        if row is None or not str(row.value).isdigit():
            raise CorruptIndexError(str(self.path), "no valid schema_version")
        return int(row.value)

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self._translate(), self.engine.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A transaction that holds SQLite's write lock from its first statement."""
        with (
            self._translate(),
            self.engine.connect().execution_options(wvc_begin="IMMEDIATE") as conn,
            conn.begin(),
        ):
            yield conn

    @contextmanager
    def _translate(self) -> Iterator[None]:
        try:
            yield
        except OperationalError as e:
            if "locked" in str(e) or "busy" in str(e):
                raise LockTimeoutError(str(self.path)) from e
            raise

    def close(self) -> None:
        self.engine.dispose()


def dump_meta(value: Any) -> str:
    """Canonical JSON text for a meta mapping or a shape list."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def tensor_digest(seg_dtype: str, shape: tuple[int, ...], chunks: tuple[str, ...]) -> str:
    """Identity of a tensor's content: equal digests mean equal dtype, shape and bytes."""
    h = blake3.blake3(f"{seg_dtype}:{list(shape)}:".encode())
    for c in chunks:
        h.update(bytes.fromhex(c))
    return h.hexdigest()


def file_tensor_digest(manifest: FileManifest, t: FileTensor) -> str:
    """:func:`tensor_digest` of a file's tensor; a strided or partial view also hashes its layout.

    A view that is exactly its segment's bytes in row-major order gets the
    same digest as a plain tensor with those bytes, so a PyTorch storage and
    the same tensor in a safetensors file compare equal.
    """
    seg = manifest.segments[t.segment]
    v = t.view
    if v is None or (v.offset == 0 and t.size == seg.size and is_contiguous(v.shape, v.stride)):
        return tensor_digest(t.dtype.name, t.shape, seg.chunks)
    layout = f"{t.dtype.name}:{list(t.shape)}:{list(v.stride)}@{v.offset}"
    return tensor_digest(layout, (), seg.chunks)


def index_tree_rows(
    tree_id: str, tree: Tree, manifests: Mapping[str, FileManifest]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Rows for ``tree_files`` and ``tensors`` describing one tree."""
    file_rows = [
        {
            "tree": tree_id,
            "path": e.path,
            "manifest": e.manifest,
            "size": e.size,
            "format": e.format,
        }
        for e in tree.entries
    ]
    tensor_rows = []
    for mid, manifest in manifests.items():
        for pos, t in enumerate(manifest.tensors()):
            tensor_rows.append(
                {
                    "manifest": mid,
                    "position": pos,
                    "name": t.name,
                    "dtype": t.dtype.name,
                    "shape": dump_meta(list(t.shape)),
                    "offset": t.offset,
                    "size": t.size,
                    "digest": file_tensor_digest(manifest, t),
                }
            )
    return file_rows, tensor_rows
