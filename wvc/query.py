"""Filters over commit meta: ``loss<1.5 and name=run-1``.

A where-expression is clauses joined by ``and`` (or commas); a clause is
``KEY OP VALUE`` with OP one of ``< <= > >= = == !=``, or a bare ``KEY``
(the key is present). Values are read as ``--meta`` values are (numbers,
true/false/null, else text; quote text to keep ``1.0`` a string). A commit
without the key, or with a value of another kind (text against a number),
does not match an ordering clause.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import InputError
from .manifest import MetaValue, parse_meta_value

_CLAUSE = re.compile(r"\s*([^\s<>=!]+)\s*(<=|>=|==|!=|=|<|>)\s*(.*?)\s*")
_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "=": operator.eq,
    "==": operator.eq,
    "!=": operator.ne,
}


@dataclass(frozen=True)
class Clause:
    key: str
    op: str | None  # None: the key is present
    value: MetaValue = None

    def matches(self, meta: Mapping[str, MetaValue]) -> bool:
        if self.key not in meta:
            return False
        if self.op is None:
            return True
        have = meta[self.key]
        if self.op in ("=", "==", "!="):
            same = _kind(have) == _kind(self.value) and have == self.value
            return same if self.op != "!=" else not same
        if _kind(have) != _kind(self.value) or _kind(have) not in ("number", "text"):
            return False
        return _OPS[self.op](have, self.value)


def _kind(v: MetaValue) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int | float):
        return "number"
    if isinstance(v, str):
        return "text"
    return "null"


def parse_where(text: str) -> list[Clause]:
    """Parse a where-expression; raises InputError naming the clause that is wrong."""
    clauses = []
    for part in _split_clauses(text.strip()):
        if not part.strip():
            raise InputError(f"--where {text!r}: empty clause")
        m = _CLAUSE.fullmatch(part)
        if m is None:
            key = part.strip()
            if re.fullmatch(r"[^\s<>=!]+", key):
                clauses.append(Clause(key, None))
                continue
            raise InputError(f"--where: cannot read clause {part.strip()!r} (use KEY<VALUE etc.)")
        key, op, raw = m.groups()
        if not raw or raw[0] in "<>=!":
            raise InputError(f"--where: clause {part.strip()!r} has no value after {op!r}")
        if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"":
            value: MetaValue = raw[1:-1]
        else:
            value = parse_meta_value(raw)
        clauses.append(Clause(key, op, value))
    return clauses


def _split_clauses(text: str) -> list[str]:
    """Split at commas and ``and`` outside quotes; a trailing separator leaves an empty clause."""
    masked = re.sub(r"'[^']*'|\"[^\"]*\"", lambda m: "x" * len(m.group()), text)
    parts = []
    start = 0
    for m in re.finditer(r",|\s+and(?:\s+|$)|^and(?:\s+|$)", masked):
        parts.append(text[start : m.start()])
        start = m.end()
    parts.append(text[start:])
    return parts


def matches_all(clauses: list[Clause], meta: Mapping[str, MetaValue]) -> bool:
    return all(c.matches(meta) for c in clauses)


def sort_key(key: str) -> Callable[[Mapping[str, MetaValue]], tuple[int, float | str]]:
    """Order by a meta key: numbers, then text; commits without it (or null/NaN) last."""

    def k(meta: Mapping[str, MetaValue]) -> tuple[int, float | str]:
        v = meta.get(key)
        if _kind(v) == "number" and not (isinstance(v, float) and math.isnan(v)):
            assert isinstance(v, int | float)
            try:
                return (0, float(v))
            except OverflowError:  # integers beyond float range
                return (0, math.inf if v > 0 else -math.inf)
        if isinstance(v, str):
            return (1, v)
        return (2, 0.0)

    return k
