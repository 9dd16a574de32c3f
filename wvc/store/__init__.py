"""Key/value byte stores: one interface, several places to keep bytes.

A :class:`Store` maps string keys (``objects/ab/cdef...``) to immutable byte
values. The object layer (:mod:`wvc.objects`) sits on top and never knows
where bytes live. Implementations: :class:`LocalStore` (a directory, atomic
writes), :class:`MemoryStore` (tests, scratch work) and
:class:`FsspecStore` / :class:`S3Store` (any fsspec filesystem: remotes).
"""

from ._base import Store
from ._fsspec import FsspecStore, S3Store
from ._local import LocalStore
from ._memory import MemoryStore

__all__ = ["FsspecStore", "LocalStore", "MemoryStore", "S3Store", "Store"]
