"""A lock object with a lease, for stores whose backend has no conditional write.

The lock is a small value created only if absent (``O_EXCL`` on a directory,
an exclusive create on object storage). Its holder keeps it for the few
milliseconds of a read-compare-write; a lock older than :data:`LEASE_S` was
left by a killed process and is broken. docs/remotes.md states what this does
and does not guarantee per backend.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ..errors import StoreLockedError

LEASE_S = 30.0
WAIT_S = 60.0


def lock_payload() -> bytes:
    return json.dumps(
        {"host": socket.gethostname(), "pid": os.getpid(), "time": time.time()}
    ).encode()


@contextmanager
def lease_lock(
    key: str,
    create: Callable[[bytes], bool],
    age: Callable[[], float | None],
    remove: Callable[[], None],
    *,
    wait_s: float = WAIT_S,
) -> Iterator[None]:
    """Hold the lock ``key``: ``create(payload)`` makes it if absent (True) or reports it
    taken (False); ``age()`` is the age in seconds of the lock present (None if gone)."""
    start = time.monotonic()
    delay = 0.005
    while not create(lock_payload()):
        held = age()
        if held is not None and held > LEASE_S:
            remove()  # left by a killed writer: its lease is over
            continue
        waited = time.monotonic() - start
        if waited > wait_s:
            raise StoreLockedError(key, waited)
        time.sleep(delay)
        delay = min(delay * 2, 0.2)
    try:
        yield
    finally:
        remove()
