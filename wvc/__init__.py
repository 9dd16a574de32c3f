"""wvc: version control for neural-network weights."""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import WvcError
from .repository import Repository

__all__ = ["Repository", "WvcError", "__version__"]
