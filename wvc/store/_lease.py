"""A lock object with a lease, for stores whose backend has no conditional write.

The lock is a small value created only if absent (an exclusive create on
object storage). It holds a unique token and the time it was taken; its
holder keeps it for the few milliseconds of a read-compare-write. A lock
older than :data:`LEASE_S` was left by a killed process and is broken, but
only if it still holds the token that was judged stale, so a waiter never
removes a lock someone else has just taken. docs/remotes.md states what this
does and does not guarantee per backend.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ..errors import StoreLockedError

LEASE_S = 30.0
WAIT_S = 60.0


def lock_payload() -> bytes:
    return json.dumps(
        {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "time": time.time(),
            "token": uuid.uuid4().hex,
        }
    ).encode()


def is_stale(payload: bytes, now: float | None = None) -> bool:
    """True if the lock ``payload`` is past its lease (or is not a lock any writer made)."""
    try:
        taken = float(json.loads(payload)["time"])
    except (ValueError, KeyError, TypeError):
        return True
    return (now if now is not None else time.time()) - taken > LEASE_S


@contextmanager
def lease_lock(
    key: str,
    create: Callable[[bytes], bool],
    read: Callable[[], bytes | None],
    remove_if: Callable[[bytes], None],
    *,
    wait_s: float | None = None,
) -> Iterator[None]:
    """Hold the lock ``key``.

    ``create(payload)`` makes the lock if absent (True) or reports it taken
    (False); ``read()`` is the payload of the lock present (None if gone);
    ``remove_if(payload)`` removes the lock only if it still is ``payload``.
    """
    limit = WAIT_S if wait_s is None else wait_s
    start = time.monotonic()
    delay = 0.005
    mine = lock_payload()
    while not create(mine):
        held = read()
        if held is not None and is_stale(held):
            remove_if(held)  # left by a killed writer: its lease is over
            continue
        waited = time.monotonic() - start
        if waited > limit:
            raise StoreLockedError(key, waited)
        time.sleep(delay)
        delay = min(delay * 2, 0.2)
    try:
        yield
    finally:
        remove_if(mine)
