"""A remote's layout on a :class:`~wvc.store.Store` (docs/design.md, "Remote layout").

```
<url>/format               {"format": "wvc-remote", "version": 1}
<url>/HEAD                 "ref: refs/heads/main\\n": the branch a clone checks out
<url>/objects/ab/cdef…     object files, byte for byte as in .wvc/objects
<url>/refs/heads/<branch>  "<commit id>\\n"
<url>/refs/tags/<tag>      "<commit id>\\n"
```

A remote is dumb storage: no server runs there. Objects are immutable and
named by content; refs are the only values that change, and only through
:meth:`~wvc.store.Store.swap` (compare-and-swap).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import RemoteError, StoreConflictError, WvcError
from ..objects import is_object_id, object_key
from ..refs import BRANCH_PREFIX, TAG_PREFIX
from ..store import FsspecStore, LocalStore, S3Store, Store

FORMAT_KEY = "format"
HEAD_KEY = "HEAD"
REMOTE_FORMAT = "wvc-remote"
REMOTE_VERSION = 1
OBJECTS_PREFIX = "objects/"
REFS_PREFIX = "refs/"
# A live writer renames its temporary file within seconds; older ones are leftovers.
STALE_TEMP_S = 3600.0

# fsspec protocol → the pip extra that installs its filesystem.
_EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs", "az": "azure", "abfs": "azure"}


def open_store(url: str, options: dict[str, Any] | None = None) -> Store:
    """The store at ``url``: a directory path or ``file://`` URL, or any fsspec URL."""
    options = dict(options or {})
    if "://" not in url or url.startswith("file://"):
        if options:
            raise RemoteError(f"{url}: a directory remote takes no --option", url)
        root = Path(url.removeprefix("file://")).expanduser()
        return LocalStore(root, tmp_dir=root / "tmp")
    import fsspec

    protocol = url.split("://", 1)[0]
    try:
        fs, root = fsspec.core.url_to_fs(url, **options)
    except ImportError as e:
        extra = _EXTRAS.get(protocol)
        hint = f"; install it with: pip install 'wvc[{extra}]'" if extra else ""
        raise RemoteError(f"{url}: {e}{hint}", url) from None
    except (ValueError, TypeError) as e:
        raise RemoteError(f"{url}: cannot open: {e}", url) from None
    if protocol in ("s3", "s3a"):
        return S3Store(fs, root)
    return FsspecStore(fs, root)


@dataclass(frozen=True)
class RemoteRef:
    name: str  # full name: refs/heads/X or refs/tags/X
    target: str


class Remote:
    """Objects and refs of one remote, read and written through a :class:`Store`."""

    def __init__(self, url: str, store: Store, name: str | None = None) -> None:
        self.url = url
        self.store = store
        self.name = name

    @classmethod
    def open(
        cls, url: str, options: dict[str, Any] | None = None, name: str | None = None
    ) -> Remote:
        return cls(url, open_store(url, options), name)

    def _fail(self, problem: str) -> RemoteError:
        return RemoteError(f"{self.url}: {problem}", self.url)

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        """Backend failures (no credentials, connection refused, denied) as one RemoteError."""
        try:
            yield
        except (KeyError, WvcError):
            raise
        except Exception as e:
            text = str(e).strip() or type(e).__name__
            raise self._fail(f"{type(e).__name__}: {text}") from e

    # --- format ----------------------------------------------------------------------

    def check(self, *, create: bool = False) -> bool:
        """Refuse anything but a wvc remote of a version this wvc reads.

        With ``create``, a location with no wvc data becomes an empty remote;
        returns True if it was created.
        """
        try:
            with self._guard():
                raw: bytes | None = self.store.get(FORMAT_KEY)
        except KeyError:
            raw = None
        if raw is None:
            if not create:
                raise self._fail("not a wvc remote (no 'format' file); push to it first")
            for prefix in (OBJECTS_PREFIX, REFS_PREFIX):
                with self._guard():
                    found = next(iter(self.store.list_prefix(prefix)), None)
                if found is not None:
                    raise self._fail(
                        f"has a '{prefix}' folder but no 'format' file: not a wvc remote"
                    )
            fmt_json = {"format": REMOTE_FORMAT, "version": REMOTE_VERSION}
            with self._guard():  # a read-only location fails here, as a RemoteError
                self.store.put(FORMAT_KEY, json.dumps(fmt_json).encode())
                self.store.flush()
            return True
        try:
            fmt = json.loads(raw)
            name, version = fmt.get("format"), fmt.get("version")
        except (ValueError, AttributeError):
            name, version = None, None
        if name != REMOTE_FORMAT or type(version) is not int:
            raise self._fail("'format' is not a wvc remote format file")
        if version != REMOTE_VERSION:
            raise self._fail(
                f"remote format version {version} is not supported by this wvc "
                f"(supports {REMOTE_VERSION}); upgrade wvc"
            )
        return False

    def remove_stale_temp(self) -> None:
        """Delete temporary uploads killed pushes left in a directory remote's ``tmp/``."""
        if isinstance(self.store, LocalStore):
            with self._guard():
                self.store.remove_stale_temp(STALE_TEMP_S)

    # --- refs ----------------------------------------------------------------------

    def refs(self) -> dict[str, str]:
        """Every branch and tag of the remote: full name → commit id."""
        out = {}
        with self._guard():
            keys = list(self.store.list_prefix(REFS_PREFIX))
        for key in keys:
            if key.endswith(".lock") or not key.startswith((BRANCH_PREFIX, TAG_PREFIX)):
                continue
            target = self.read_ref(key)
            if target is not None:
                out[key] = target
        return dict(sorted(out.items()))

    def read_ref(self, name: str) -> str | None:
        try:
            with self._guard():
                raw = self.store.get(name)
        except KeyError:
            return None
        text = raw.decode("ascii", "replace").strip()
        if not is_object_id(text):
            raise self._fail(f"ref {name} is not a commit id: {raw[:80]!r}")
        return text

    def update_ref(self, name: str, old: str | None, new: str) -> None:
        """Move ``name`` from ``old`` (None: absent) to ``new``; StoreConflictError if it moved."""
        expected = None if old is None else f"{old}\n".encode()
        with self._guard():
            self.store.swap(name, expected, f"{new}\n".encode())

    def head_branch(self) -> str | None:
        """The branch a clone checks out (the remote's HEAD), if it names one."""
        try:
            with self._guard():
                text = self.store.get(HEAD_KEY).decode("utf-8", "replace").strip()
        except KeyError:
            return None
        if text.startswith("ref: " + BRANCH_PREFIX):
            return text.removeprefix("ref: " + BRANCH_PREFIX)
        return None

    def set_head_branch(self, branch: str) -> None:
        """Name the remote's default branch if it has none yet."""
        with self._guard():
            if self.store.exists(HEAD_KEY):
                return
        # If someone named it first meanwhile, theirs stays.
        with contextlib.suppress(StoreConflictError), self._guard():
            self.store.swap(HEAD_KEY, None, f"ref: {BRANCH_PREFIX}{branch}\n".encode())

    # --- objects -------------------------------------------------------------------

    @staticmethod
    def object_key(oid: str) -> str:
        return OBJECTS_PREFIX + object_key(oid)

    def has_object(self, oid: str) -> bool:
        with self._guard():
            return self.store.exists(self.object_key(oid))

    def list_objects(self) -> set[str]:
        """The ids of every object on the remote (one listing of ``objects/``)."""
        with self._guard():
            keys = list(self.store.list_prefix(OBJECTS_PREFIX))
        out = set()
        for k in keys:
            oid = k.removeprefix(OBJECTS_PREFIX).replace("/", "")
            if is_object_id(oid):
                out.add(oid)
        return out

    def get_object(self, oid: str) -> bytes:
        """The object file's bytes (not verified here); KeyError if absent."""
        with self._guard():
            return self.store.get(self.object_key(oid))

    def make_durable(self, oid: str) -> None:
        """Have the next :meth:`flush` make an object another writer stored durable."""
        with self._guard():
            self.store.make_durable(self.object_key(oid))

    def put_object(self, oid: str, blob: bytes) -> None:
        with self._guard():
            self.store.put(self.object_key(oid), blob)

    def flush(self) -> None:
        with self._guard():
            self.store.flush()

    def __repr__(self) -> str:
        return f"Remote({self.url!r})"
