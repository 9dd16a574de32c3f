"""The one exception root of wvc and its typed subclasses.

Every error wvc raises on purpose is a :class:`WvcError`. Subclasses carry the
fields a caller needs (a path, a revision, an object id) and, where a builtin
exception means the same thing, inherit it too so ``except FileNotFoundError``
keeps working. The CLI is the only place that turns these into text and exit
codes; ``exit_code`` is documented in docs/cli.md.
"""

from __future__ import annotations


class WvcError(Exception):
    """Root of every error wvc raises on purpose."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class NotARepositoryError(WvcError, FileNotFoundError):
    """No wvc repository at or above the given path."""

    exit_code = 3

    def __init__(self, path: str) -> None:
        super().__init__(f"not a wvc repository (or any parent): {path}; run 'wvc init' first")
        self.path = path


class RepositoryExistsError(WvcError, FileExistsError):
    exit_code = 3

    def __init__(self, path: str) -> None:
        super().__init__(f"a wvc repository already exists at {path}")
        self.path = path


class UnsupportedFormatVersionError(WvcError):
    """The repository was written by a wvc that uses another on-disk format."""

    exit_code = 3

    def __init__(self, path: str, found: object, supported: int) -> None:
        super().__init__(
            f"{path}: repository format version {found!r} is not supported by this wvc "
            f"(supports {supported}); upgrade wvc"
        )
        self.path = path
        self.found = found


class RevisionNotFoundError(WvcError, LookupError):
    exit_code = 4

    def __init__(self, rev: str, reason: str = "unknown revision") -> None:
        super().__init__(f"{reason}: {rev!r}")
        self.rev = rev


class AmbiguousRevisionError(RevisionNotFoundError):
    def __init__(self, rev: str, candidates: list[str]) -> None:
        shown = ", ".join(c[:12] for c in candidates[:5])
        super().__init__(rev, f"ambiguous revision (matches {shown})")
        self.candidates = candidates


class RefError(WvcError, ValueError):
    """A branch or tag name is invalid, missing, or already taken."""

    exit_code = 4


class InputError(WvcError, ValueError):
    """A path or argument given by the user is unusable."""

    exit_code = 5

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class PathNotFoundError(InputError, FileNotFoundError):
    def __init__(self, path: str, what: str = "path not found") -> None:
        super().__init__(f"{path}: {what}", path)


class TargetNotEmptyError(InputError, FileExistsError):
    def __init__(self, path: str) -> None:
        super().__init__(f"{path}: target directory is not empty", path)


class MalformedFileError(InputError):
    """A file claims a format (e.g. safetensors) but breaks its rules."""

    def __init__(self, path: str, format_name: str, problem: str) -> None:
        super().__init__(f"{path}: malformed {format_name} file: {problem}", path)
        self.format_name = format_name
        self.problem = problem


class IntegrityError(WvcError):
    """Stored data does not match its id, or a referenced object is missing."""

    exit_code = 6


class CorruptIndexError(IntegrityError):
    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: metadata index is unreadable: {problem}")
        self.path = path


class CorruptObjectError(IntegrityError):
    def __init__(self, object_id: str, problem: str, context: str | None = None) -> None:
        where = f" (needed by {context})" if context else ""
        super().__init__(f"corrupt object {object_id}{where}: {problem}; run 'wvc fsck'")
        self.object_id = object_id
        self.problem = problem
        self.context = context


class BrokenChainError(CorruptObjectError):
    """A delta object whose base (or a base further down its chain) is missing or corrupt."""

    def __init__(self, object_id: str, base: str, problem: str, context: str | None = None) -> None:
        super().__init__(object_id, f"its delta base {base} {problem}", context)
        self.base = base
        self.base_problem = problem


class MissingObjectError(IntegrityError):
    def __init__(self, object_id: str, context: str | None = None) -> None:
        where = f" (needed by {context})" if context else ""
        super().__init__(f"missing object {object_id}{where}; run 'wvc fsck'")
        self.object_id = object_id
        self.context = context


class LockTimeoutError(WvcError):
    exit_code = 7

    def __init__(self, path: str) -> None:
        super().__init__(
            f"{path}: repository is busy (another wvc process holds the write lock); try again"
        )
        self.path = path


class ObjectRemovedError(WvcError):
    """An object a commit reused was removed by a concurrent ``wvc gc``; nothing was published."""

    exit_code = 7

    def __init__(self, object_id: str) -> None:
        super().__init__(
            f"object {object_id} that this operation reuses was removed by a concurrent "
            "'wvc gc'; nothing was committed: run it again"
        )
        self.object_id = object_id


class RemoteError(WvcError):
    """A remote is unreachable, not a wvc remote, misconfigured, or holds bad data."""

    exit_code = 9

    def __init__(self, message: str, url: str | None = None) -> None:
        super().__init__(message)
        self.url = url


class StoreConflictError(WvcError):
    """A compare-and-swap of a mutable value (a ref) found another value than expected."""

    exit_code = 10

    def __init__(self, key: str, found: bytes | None) -> None:
        super().__init__(f"{key} was changed by someone else")
        self.key = key
        self.found = found


class StoreLockedError(RemoteError):
    """A lock object stayed held by another writer past the wait limit."""

    def __init__(self, key: str, waited_s: float) -> None:
        super().__init__(f"{key} is locked by another writer (waited {waited_s:.0f} s); try again")
        self.key = key


class PushRejectedError(WvcError):
    """A remote ref cannot be moved: not a fast-forward, or moved by someone else meanwhile."""

    exit_code = 10

    def __init__(self, message: str, ref: str) -> None:
        super().__init__(message)
        self.ref = ref
