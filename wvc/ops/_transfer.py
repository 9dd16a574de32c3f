"""Moving objects between a repository and a remote: concurrently, verified, with progress."""

from __future__ import annotations

import enum
import os
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Protocol

DEFAULT_JOBS = min(32, 4 * (os.cpu_count() or 1) + 4)


class TransferProgress(Protocol):
    """What a transfer reports: ``start`` once the byte total is known, then each advance."""

    def start(self, label: str, total: int) -> None: ...

    def __call__(self, n: int) -> None: ...


class UpdateStatus(enum.Enum):
    UP_TO_DATE = "up to date"
    CREATED = "new"
    FAST_FORWARD = "fast-forward"
    FORCED = "forced"
    PRUNED = "deleted"


@dataclass(frozen=True)
class RefUpdate:
    """One ref a push or fetch moved (or found already right)."""

    ref: str  # full name: refs/heads/X, refs/tags/X, refs/remotes/R/X
    old: str | None
    new: str | None
    status: UpdateStatus

    def to_json(self) -> dict[str, Any]:
        return {"ref": self.ref, "old": self.old, "new": self.new, "status": self.status.value}


@dataclass(frozen=True)
class Moved:
    objects: int  # objects copied
    bytes: int  # their stored bytes
    present: int  # objects the destination already had


def check_jobs(jobs: int | None) -> int:
    from ..errors import InputError

    if jobs is None:
        return DEFAULT_JOBS
    if jobs < 1:
        raise InputError(f"--jobs {jobs}: must be at least 1")
    return jobs


def move_all(
    ids: Sequence[str],
    move_one: Callable[[str], int | None],
    jobs: int,
    progress: Callable[[int], None] | None,
    weight: Callable[[str], int] | None = None,
) -> Moved:
    """Run ``move_one`` for every id on ``jobs`` threads.

    ``move_one`` returns the stored bytes it copied, or None when the
    destination already had the object. Memory stays bounded by ``jobs``
    objects in flight. The first error stops the transfer (objects copied so
    far stay: they are immutable and a re-run skips them) and is raised.
    ``weight(id)`` is what the progress bar advances per object (default: the
    bytes copied).
    """
    copied = present = nbytes = 0
    if not ids:
        return Moved(0, 0, 0)
    with ThreadPoolExecutor(jobs, thread_name_prefix="wvc-transfer") as pool:
        futures: dict[Future[int | None], str] = {pool.submit(move_one, oid): oid for oid in ids}
        try:
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_EXCEPTION, timeout=0.2)
                for f in done:
                    result = f.result()  # raises the object's error
                    if result is None:
                        present += 1
                    else:
                        copied += 1
                        nbytes += result
                    if progress is not None:
                        w = weight(futures[f]) if weight is not None else (result or 0)
                        progress(w)
        except BaseException:
            for f in futures:
                f.cancel()
            raise
    return Moved(copied, nbytes, present)
