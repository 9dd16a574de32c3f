"""Reading objects back from the store, verified: manifests, trees and commits parsed, chunks
decoded ahead on a thread pool."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from ..codecs import Buffer
from ..errors import CorruptObjectError
from ..manifest import (
    Commit,
    FileManifest,
    ManifestError,
    Tree,
    parse_commit,
    parse_file_manifest,
    parse_tree,
)
from ..objects import ObjectStore

T = TypeVar("T")


def _read(objects: ObjectStore, oid: str, parse: Callable[[bytes], T], context: str | None) -> T:
    raw = bytes(objects.get(oid, context))
    try:
        return parse(raw)
    except ManifestError as e:
        raise CorruptObjectError(oid, str(e), context) from None


def read_commit(objects: ObjectStore, oid: str) -> Commit:
    return _read(objects, oid, parse_commit, f"commit {oid[:12]}")


def read_tree(objects: ObjectStore, oid: str, context: str | None = None) -> Tree:
    return _read(objects, oid, parse_tree, context)


def read_file_manifest(objects: ObjectStore, oid: str, context: str | None = None) -> FileManifest:
    return _read(objects, oid, parse_file_manifest, context)


def iter_chunks(
    objects: ObjectStore,
    chunk_ids: Sequence[str],
    context: str,
    pool: ThreadPoolExecutor,
    window: int,
) -> Iterator[Buffer]:
    """The decoded, verified bytes of each chunk in order, decoded ahead on ``pool``."""
    pending: deque[Future[Buffer]] = deque()
    it = iter(chunk_ids)
    try:
        for cid in it:
            pending.append(pool.submit(objects.get, cid, context))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for f in pending:
            f.cancel()
