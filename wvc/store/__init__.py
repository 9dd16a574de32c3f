"""Key/value byte stores: one interface, several places to keep bytes.

A :class:`Store` maps string keys (``objects/ab/cdef...``) to immutable byte
values. The object layer (:mod:`wvc.objects`) sits on top and never knows
where bytes live. Implementations: :class:`LocalStore` (a directory, atomic
writes) and :class:`MemoryStore` (tests, scratch work).
"""

from ._base import Store
from ._local import LocalStore
from ._memory import MemoryStore

__all__ = ["LocalStore", "MemoryStore", "Store"]
