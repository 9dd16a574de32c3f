"""The names of a repository's files and directories (docs/design.md, "Repository layout")."""

from __future__ import annotations

REPO_DIR = ".wvc"
FORMAT_FILE = "format"
DB_FILE = "wvc.db"
OBJECTS_DIR = "objects"
TMP_DIR = "tmp"
