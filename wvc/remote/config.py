"""The remotes of a repository, kept in ``.wvc/config.json``.

```json
{"remotes": {"origin": {"url": "s3://bucket/models/bert",
                        "options": {"endpoint_url": "http://..."},
                        "partial": false}}}
```

``options`` are fsspec storage options, stored only when the user passes
them (``--option key=value``); credentials normally come from the backend's
own places (environment variables, ``~/.aws``, ``gcloud``), which wvc never
copies. ``partial`` marks a remote a partial fetch took objects from: a
missing object is fetched from it on demand.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import InputError, RemoteError

CONFIG_FILE = "config.json"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# Option names that usually carry a secret: the CLI warns that they are stored in clear.
SECRET_HINTS = ("secret", "password", "token", "key", "credential", "sas", "passphrase")


@dataclass(frozen=True)
class RemoteConfig:
    name: str
    url: str
    options: dict[str, Any] = field(default_factory=dict)
    partial: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"url": self.url, "options": dict(self.options), "partial": self.partial}

    def secret_options(self) -> list[str]:
        return [k for k in self.options if any(h in k.lower() for h in SECRET_HINTS)]


def validate_remote_name(name: str) -> str:
    if not _NAME.fullmatch(name) or name.endswith(".lock"):
        raise InputError(
            f"invalid remote name {name!r}: use letters, digits, '.', '_' or '-' (at most 64)"
        )
    return name


def normalize_url(url: str) -> str:
    """An absolute path for a directory remote (relative paths would move with the cwd)."""
    if not url.strip():
        raise InputError("remote URL is empty")
    if url.startswith("file://"):
        return "file://" + os.path.abspath(os.path.expanduser(url.removeprefix("file://")))
    if "://" not in url:
        return os.path.abspath(os.path.expanduser(url))
    return url.rstrip("/")


def parse_option(text: str) -> tuple[str, Any]:
    """``key=value`` → (key, value); true/false/null and numbers become JSON values."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise InputError(f"--option {text!r}: expected KEY=VALUE")
    parsed: Any = value
    if value in ("true", "false", "null") or re.fullmatch(r"-?\d+(\.\d+)?", value):
        parsed = json.loads(value)
    return key.strip(), parsed


def _config_path(repo_dir: Path) -> Path:
    return repo_dir / CONFIG_FILE


def load_remotes(repo_dir: Path) -> dict[str, RemoteConfig]:
    path = _config_path(repo_dir)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise RemoteError(f"{path}: unreadable remote configuration: {e}") from None
    remotes = data.get("remotes", {}) if isinstance(data, dict) else None
    if not isinstance(remotes, dict):
        raise RemoteError(f"{path}: 'remotes' is not an object")
    out = {}
    for name, r in remotes.items():
        if not isinstance(r, dict) or not isinstance(r.get("url"), str):
            raise RemoteError(f"{path}: remote {name!r} has no url")
        options = r.get("options", {})
        if not isinstance(options, dict):
            raise RemoteError(f"{path}: remote {name!r}: options is not an object")
        out[name] = RemoteConfig(name, r["url"], options, bool(r.get("partial", False)))
    return out


def save_remotes(repo_dir: Path, remotes: dict[str, RemoteConfig]) -> None:
    """Write the configuration atomically (temp file, fsync, rename)."""
    path = _config_path(repo_dir)
    data = {"remotes": {n: r.to_json() for n, r in sorted(remotes.items())}}
    tmp = path.with_name(f"{CONFIG_FILE}.{os.getpid()}.tmp")
    # Options may hold secrets the user chose to store: readable by the owner only.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def mark_partial(repo_dir: Path, name: str) -> None:
    remotes = load_remotes(repo_dir)
    if name in remotes and not remotes[name].partial:
        remotes[name] = replace(remotes[name], partial=True)
        save_remotes(repo_dir, remotes)
