"""Background commits: snapshot the tensors now, store them on a worker thread.

A training loop calls ``repo.commit_state_dict(sd, background=True)``: the
tensors are copied (copy-on-commit) in the caller's thread, so training may
change them as soon as the call returns, and the copy is chunked, compressed
and committed on one worker thread per repository.

Memory is bounded by one snapshot: a new background commit first waits for
the previous one to finish, so at most one copy of the state dict exists
beside the live one. Errors surface on :meth:`CommitHandle.result`; one that
was never retrieved is printed to stderr when the interpreter exits, so a
failed checkpoint is never silent.
"""

from __future__ import annotations

import atexit
import sys
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor  # imports .thread: its exit hook
from typing import TypeVar

from .commit import CommitResult

T = TypeVar("T")

# Handles whose commit failed or is still running are held here until their
# error is retrieved or reported at exit, so a dropped handle is never silent.
_unsettled: set[CommitHandle] = set()
_unsettled_lock = threading.Lock()
_committers: weakref.WeakSet[BackgroundCommits] = weakref.WeakSet()


class CommitHandle:
    """A commit running in the background."""

    def __init__(self, future: Future[CommitResult], label: str) -> None:
        self._future = future
        self.label = label
        self._retrieved = False
        with _unsettled_lock:
            _unsettled.add(self)
        future.add_done_callback(self._settle)

    def _settle(self, future: Future[CommitResult]) -> None:
        if not future.cancelled() and future.exception() is None:
            with _unsettled_lock:
                _unsettled.discard(self)

    def result(self, timeout: float | None = None) -> CommitResult:
        """Wait for the commit and return it, or raise the error it failed with."""
        self._retrieved = True
        try:
            return self._future.result(timeout)
        finally:
            if self._future.done():
                with _unsettled_lock:
                    _unsettled.discard(self)

    def done(self) -> bool:
        return self._future.done()

    def wait(self, timeout: float | None = None) -> None:
        """Wait for the commit to finish, without raising its error."""
        self._future.exception(timeout)

    def _unreported_error(self) -> BaseException | None:
        if self._retrieved or not self._future.done() or self._future.cancelled():
            return None
        return self._future.exception()

    def __repr__(self) -> str:
        state = "done" if self.done() else "running"
        return f"CommitHandle({self.label!r}, {state})"


class BackgroundCommits:
    """One worker thread per repository; at most one background commit in flight."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._last: CommitHandle | None = None
        _committers.add(self)

    def submit(
        self, snapshot: Callable[[], T], run: Callable[[T], CommitResult], label: str
    ) -> CommitHandle:
        with self._lock:
            if self._last is not None:
                self._last.wait()  # back-pressure: one snapshot at a time
            data = snapshot()
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="wvc-background-commit")
            handle = CommitHandle(self._pool.submit(run, data), label)
            self._last = handle
            return handle

    def wait_all(self) -> None:
        with self._lock:
            if self._last is not None:
                self._last.wait()
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None


def _finish_pending() -> None:
    """Let running background commits land before thread pools refuse new work at exit."""
    for committer in list(_committers):
        committer.wait_all()


def _report_unretrieved() -> None:
    _finish_pending()
    with _unsettled_lock:
        handles = list(_unsettled)
    for handle in handles:
        handle.wait()
        err = handle._unreported_error()
        if err is not None:
            print(f"wvc: background commit {handle.label} failed: {err}", file=sys.stderr)


# Interpreter exit first runs threading's exit hooks (newest first), where
# concurrent.futures stops accepting work; ours is registered after it, so it
# runs before, while a commit in flight can still use its thread pools.
_register = getattr(threading, "_register_atexit", None)
if _register is not None:
    _register(_finish_pending)
atexit.register(_report_unretrieved)
