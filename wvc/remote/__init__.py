"""Remotes: wvc repositories kept as plain objects and refs on any storage fsspec reaches.

:mod:`.config` records a repository's remotes (``.wvc/config.json``);
:mod:`.remote` is the remote's layout (docs/design.md, "Remote layout") on
top of a :class:`~wvc.store.Store`. The transfers themselves are operations:
:mod:`wvc.ops.push` and :mod:`wvc.ops.fetch`.
"""

from .config import RemoteConfig, load_remotes, parse_option, save_remotes
from .remote import Remote, open_store

__all__ = ["Remote", "RemoteConfig", "load_remotes", "open_store", "parse_option", "save_remotes"]
