"""Reading manifests, trees and commits back from the object store, verified and parsed."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

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
