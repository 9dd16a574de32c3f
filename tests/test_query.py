"""Meta queries: wvc.query (where-expressions, sort keys), repo.log(where/sort/reverse/limit)
and the CLI's ``wvc log --where/--sort/--meta/--ids/--json``."""

from __future__ import annotations

import json
import math
import operator
import subprocess
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wvc.errors import InputError
from wvc.manifest import MetaValue
from wvc.query import Clause, matches_all, parse_where, sort_key
from wvc.repository import Repository

RunWvc = Callable[..., subprocess.CompletedProcess[str]]

# --- parse_where ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("loss<1.5", [Clause("loss", "<", 1.5)]),
        ("loss<=1.5", [Clause("loss", "<=", 1.5)]),
        ("loss>2", [Clause("loss", ">", 2)]),
        ("loss>=-3", [Clause("loss", ">=", -3)]),
        ("lr=1e-4", [Clause("lr", "=", 1e-4)]),
        ("lr==1e-4", [Clause("lr", "==", 1e-4)]),
        ("step!=10", [Clause("step", "!=", 10)]),
        ("  loss  <  1.5  ", [Clause("loss", "<", 1.5)]),
        ("name=run-1", [Clause("name", "=", "run-1")]),
        ("name = my run", [Clause("name", "=", "my run")]),
        ("ok=true", [Clause("ok", "=", True)]),
        ("ok=false", [Clause("ok", "=", False)]),
        ("x=null", [Clause("x", "=", None)]),
        ("v='1.0'", [Clause("v", "=", "1.0")]),
        ('v="true"', [Clause("v", "=", "true")]),
        ('v=""', [Clause("v", "=", "")]),
        ("v='x'y'", [Clause("v", "=", "x'y")]),
        ("v='x", [Clause("v", "=", "'x")]),
        ("tagged", [Clause("tagged", None)]),
        ("eval.loss<1", [Clause("eval.loss", "<", 1)]),
        ("a<1 and b>2", [Clause("a", "<", 1), Clause("b", ">", 2)]),
        ("a<1,b>2", [Clause("a", "<", 1), Clause("b", ">", 2)]),
        ("a<1 , b>2 and c", [Clause("a", "<", 1), Clause("b", ">", 2), Clause("c", None)]),
        ("a<1   and   b", [Clause("a", "<", 1), Clause("b", None)]),
        ("band=1", [Clause("band", "=", 1)]),  # 'and' inside a key is not a separator
        ("x=1.0", [Clause("x", "=", 1.0)]),
        ("big=12345678901234567890", [Clause("big", "=", 12345678901234567890)]),
        ("x=1e400", [Clause("x", "=", "1e400")]),  # not finite: text
        ("x=NaN", [Clause("x", "=", "NaN")]),
    ],
)
def test_parse_where(text: str, expected: list[Clause]) -> None:
    got = parse_where(text)
    assert got == expected
    for g, e in zip(got, expected, strict=True):
        assert type(g.value) is type(e.value), (g, e)


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("", "empty clause"),
        ("   ", "empty clause"),
        (",", "empty clause"),
        ("a<1,", "empty clause"),
        ("a<1,,b>2", "empty clause"),
        ("a<", "'a<'"),
        ("a<=", "'a<='"),
        ("a= ", "'a='"),
        ("a<<1", "'a<<1'"),
        ("a=>1", "'a=>1'"),
        ("a<1 and b>", "'b>'"),
        ("<1", "'<1'"),
        ("=x", "'=x'"),
        ("a b", "'a b'"),
        ("and loss<1.5", "'and loss<1.5'"),
        ("x<1, y z", "'y z'"),
        ("!=3", "'!=3'"),
    ],
)
def test_malformed_where_names_the_clause(text: str, named: str) -> None:
    with pytest.raises(InputError) as exc:
        parse_where(text)
    assert named in str(exc.value)
    assert exc.value.exit_code == 5
    assert "\n" not in str(exc.value)


def test_dangling_and_is_malformed() -> None:
    """'loss<1.5 and' (a second clause forgotten) is as malformed as 'loss<1.5,'; it must not
    silently compare loss against the text '1.5 and' (which matches no numeric meta)."""
    with pytest.raises(InputError):
        parse_where("loss<1.5,")
    with pytest.raises(InputError):
        parse_where("loss<1.5 and")


def test_quoted_values_keep_separators() -> None:
    """Quotes make a value text; a comma or ' and ' inside them must not split the clause."""
    assert parse_where('name="a, b"') == [Clause("name", "=", "a, b")]
    assert parse_where("note='x and y'") == [Clause("note", "=", "x and y")]


# --- matching -----------------------------------------------------------------------


META: dict[str, dict[str, MetaValue]] = {
    "int": {"v": 2},
    "float": {"v": 2.0},
    "small": {"v": 0.5},
    "neg": {"v": -3},
    "text": {"v": "2"},
    "word": {"v": "beta"},
    "true": {"v": True},
    "false": {"v": False},
    "null": {"v": None},
    "missing": {"other": 1},
}


def names(where: str) -> list[str]:
    clauses = parse_where(where)
    return [k for k, m in META.items() if matches_all(clauses, m)]


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("v=2", ["int", "float"]),  # numbers compare as numbers: 2 == 2.0
        ("v==2.0", ["int", "float"]),
        ("v='2'", ["text"]),  # quoted: text only
        ('v="2"', ["text"]),
        ("v=beta", ["word"]),
        ("v=true", ["true"]),  # a bool is not the number 1
        ("v=1", []),
        ("v=0", []),
        ("v=false", ["false"]),
        ("v=null", ["null"]),
        ("v!=2", ["small", "neg", "text", "word", "true", "false", "null"]),
        ("v!=null", ["int", "float", "small", "neg", "text", "word", "true", "false"]),
        ("v<2", ["small", "neg"]),
        ("v<=2", ["int", "float", "small", "neg"]),
        ("v>0", ["int", "float", "small"]),
        ("v>=-3", ["int", "float", "small", "neg"]),
        ("v>alpha", ["word"]),  # text orders as text: "2" < "alpha" < "beta"
        ("v<alpha", ["text"]),
        ("v<true", []),  # bools and null do not order
        ("v>=null", []),
        ("v", [k for k in META if k != "missing"]),
        ("other", ["missing"]),
        ("v>0 and v<1", ["small"]),
        ("v>0, v<1", ["small"]),
        ("v, other", []),
    ],
)
def test_matches(where: str, expected: list[str]) -> None:
    assert names(where) == expected


def test_empty_clause_list_matches_everything() -> None:
    assert matches_all([], {}) is True
    assert matches_all([], {"a": 1}) is True


# --- sort_key -----------------------------------------------------------------------


def test_sort_key_orders_numbers_then_text_then_the_rest() -> None:
    metas: list[dict[str, MetaValue]] = [
        {"k": "b"},
        {},
        {"k": None},
        {"k": 3},
        {"k": True},
        {"k": "a"},
        {"k": -1.5},
        {"k": float("nan")},
        {"k": 0},
        {"k": float("-inf")},
    ]
    ordered = sorted(metas, key=sort_key("k"))
    head = [m["k"] for m in ordered[:6]]
    assert head == [float("-inf"), -1.5, 0, 3, "a", "b"]
    rest = ordered[6:]  # missing, null, bool and NaN: last, in their original order (stable)
    assert rest[0] == {} and rest[1] == {"k": None} and rest[2] == {"k": True}
    assert math.isnan(rest[3]["k"])  # type: ignore[arg-type]


def test_sort_key_with_huge_integers() -> None:
    """Meta may hold any JSON integer; one too large for a float must still sort (after
    every smaller number), not raise OverflowError."""
    metas: list[dict[str, MetaValue]] = [{"k": 10**400}, {"k": 1}, {"k": -(10**400)}, {}]
    ordered = sorted(metas, key=sort_key("k"))
    assert ordered == [{"k": -(10**400)}, {"k": 1}, {"k": 10**400}, {}]


meta_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(-(10**400), 10**400),  # any JSON integer is a valid meta value
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
)
meta_dicts = st.dictionaries(st.sampled_from(["k", "x", "y"]), meta_values, max_size=3)


@settings(max_examples=300, deadline=None)
@given(st.lists(meta_dicts, max_size=12))
def test_sort_key_never_raises(metas: list[dict[str, MetaValue]]) -> None:
    key = sort_key("k")
    keys = [key(m) for m in metas]
    ordered = sorted(metas, key=key)  # every pair of keys is comparable
    assert len(ordered) == len(metas)
    ranks = [k[0] for k in sorted(keys)]
    assert ranks == sorted(ranks)


number_values = st.one_of(
    st.integers(-(10**6), 10**6),
    st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
    st.sampled_from([0, 0.0, -0.0, 1, 1.0, 0.5, 2**53 + 1, 1e-5]),
)
any_values = st.one_of(number_values, st.booleans(), st.none(), st.text(max_size=3))
OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
       "=": operator.eq, "==": operator.eq, "!=": operator.ne}  # fmt: skip


def is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def brute(clauses: list[tuple[str, str, int | float]], meta: dict[str, MetaValue]) -> bool:
    for key, op, value in clauses:
        if key not in meta:
            return False
        have = meta[key]
        if op == "!=":
            if is_number(have) and have == value:
                return False
            continue
        if not is_number(have) or not OPS[op](have, value):
            return False
    return True


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.sampled_from(["x", "y"]), st.sampled_from(sorted(OPS)), number_values),
        min_size=1,
        max_size=3,
    ),
    st.lists(st.dictionaries(st.sampled_from(["x", "y", "z"]), any_values, max_size=3), max_size=8),
    st.sampled_from([" and ", ",", " , ", "  and  "]),
)
def test_numeric_filter_equals_brute_force(
    clauses: list[tuple[str, str, int | float]],
    metas: list[dict[str, MetaValue]],
    sep: str,
) -> None:
    text = sep.join(f"{k}{op}{v!r}" for k, op, v in clauses)
    parsed = parse_where(text)
    assert [(c.key, c.op) for c in parsed] == [(k, op) for k, op, _ in clauses]
    for c, (_, _, v) in zip(parsed, clauses, strict=True):
        assert c.value == v and is_number(c.value)
    for m in metas:
        assert matches_all(parsed, m) == brute(clauses, m), (text, m)


# --- repo.log -------------------------------------------------------------------------


RUNS: list[tuple[str, dict[str, MetaValue]]] = [
    ("c0", {"step": 0, "eval_loss": 3.0, "run": "a"}),
    ("c1", {"step": 100, "eval_loss": 1.2, "run": "a"}),
    ("c2", {"step": 200, "run": "a"}),  # no eval this time
    ("c3", {"step": 300, "eval_loss": 0.9, "run": "b", "best": True}),
    ("c4", {"step": 400, "eval_loss": 1.2, "run": "b"}),
    ("c5", {"step": 500, "eval_loss": "n/a", "run": "b"}),
]


@pytest.fixture
def history(repo: Repository) -> dict[str, str]:
    ids = {}
    for msg, meta in RUNS:
        ids[msg] = repo.commit_state_dict(
            {"w": np.full(4, len(ids), np.float32)}, message=msg, meta=meta
        ).id
    return ids


def msgs(entries: list[Any]) -> list[str]:
    return [e.message for e in entries]


def test_log_where(repo: Repository, history: dict[str, str]) -> None:
    assert msgs(repo.log()) == ["c5", "c4", "c3", "c2", "c1", "c0"]
    assert msgs(repo.log(where="eval_loss<1.5")) == ["c4", "c3", "c1"]
    assert msgs(repo.log(where="eval_loss<1.5 and run=b")) == ["c4", "c3"]
    assert msgs(repo.log(where="eval_loss<1.5,step<=100")) == ["c1"]
    assert msgs(repo.log(where="eval_loss")) == ["c5", "c4", "c3", "c1", "c0"]
    assert msgs(repo.log(where="best=true")) == ["c3"]
    assert msgs(repo.log(where="eval_loss='n/a'")) == ["c5"]
    assert msgs(repo.log(where="eval_loss!=1.2")) == ["c5", "c3", "c0"]
    assert msgs(repo.log(where="nothing")) == []
    assert msgs(repo.log("HEAD~3", where="step>=100")) == ["c2", "c1"]


def test_log_sort_reverse_limit(repo: Repository, history: dict[str, str]) -> None:
    # Ascending by value; ties keep newest first; text after numbers; missing last.
    assert msgs(repo.log(sort="eval_loss")) == ["c3", "c4", "c1", "c0", "c5", "c2"]
    assert msgs(repo.log(sort="eval_loss", reverse=True)) == ["c2", "c5", "c0", "c1", "c4", "c3"]
    assert msgs(repo.log(sort="eval_loss", limit=1)) == ["c3"]
    assert msgs(repo.log(sort="eval_loss", where="eval_loss<1.5", limit=2)) == ["c3", "c4"]
    assert msgs(repo.log(reverse=True)) == ["c0", "c1", "c2", "c3", "c4", "c5"]
    assert msgs(repo.log(reverse=True, limit=2)) == ["c0", "c1"]  # limit applies last
    assert msgs(repo.log(limit=0)) == []
    assert msgs(repo.log(sort="run")) == ["c2", "c1", "c0", "c5", "c4", "c3"]
    assert msgs(repo.log(sort="absent")) == ["c5", "c4", "c3", "c2", "c1", "c0"]
    best = repo.log(sort="eval_loss", limit=1)[0]
    assert best.id == history["c3"]
    assert best.meta == dict(RUNS[3][1])


def test_log_bad_where_raises_before_reading(repo: Repository, history: dict[str, str]) -> None:
    with pytest.raises(InputError, match="'x<'"):
        repo.log(where="x<")
    with pytest.raises(InputError):
        repo.log(where="")


def test_log_sort_with_huge_integer_meta(repo: Repository) -> None:
    repo.commit_state_dict({"w": np.ones(1)}, message="huge", meta={"n": 10**400})
    repo.commit_state_dict({"w": np.ones(1)}, message="small", meta={"n": 5})
    assert msgs(repo.log(where="n>5")) == ["huge"]
    assert msgs(repo.log(sort="n")) == ["small", "huge"]


# --- CLI ------------------------------------------------------------------------------


def test_cli_log_meta_table(repo: Repository, history: dict[str, str], run_wvc: RunWvc) -> None:
    proc = run_wvc(
        "log", "--where", "eval_loss<1.5", "--sort", "eval_loss",
        "--meta", "eval_loss", "--meta", "step", cwd=repo.root,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["commit", "eval_loss", "step", "message"]
    rows = [line.split() for line in lines[1:]]
    assert rows == [
        [history["c3"][:12], "0.9", "300", "c3"],
        [history["c4"][:12], "1.2", "400", "c4"],
        [history["c1"][:12], "1.2", "100", "c1"],
    ]
    # Columns line up under their headers.
    col = lines[0].index("eval_loss")
    assert all(line[col:].startswith(("0.9", "1.2")) for line in lines[1:])
    # A key a commit lacks shows as '-'.
    proc = run_wvc("log", "--meta", "eval_loss", "-n", "4", cwd=repo.root)
    rows = [line.split() for line in proc.stdout.splitlines()[1:]]
    assert [r[1] for r in rows] == ["n/a", "1.2", "0.9", "-"]


def test_cli_log_ids_and_json(repo: Repository, history: dict[str, str], run_wvc: RunWvc) -> None:
    proc = run_wvc("log", "--sort", "eval_loss", "-n", "1", "--ids", cwd=repo.root)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == history["c3"] + "\n"
    proc = run_wvc("log", "--where", "step>=300", "--json", cwd=repo.root)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert [d["message"] for d in doc] == ["c5", "c4", "c3"]
    assert doc[2]["meta"] == {"step": 300, "eval_loss": 0.9, "run": "b", "best": True}
    assert doc[0]["meta"]["eval_loss"] == "n/a"
    for d in doc:
        assert set(d) >= {"id", "parents", "time", "author", "message", "meta", "refs"}
        assert d["id"] == history[d["message"]]
    assert doc[0]["refs"] == ["main"] or "main" in doc[0]["refs"][0]


@pytest.mark.parametrize("where", ["eval_loss<", "a<1,"])
def test_cli_bad_where_is_a_one_line_error(
    repo: Repository, history: dict[str, str], run_wvc: RunWvc, where: str
) -> None:
    proc = run_wvc("log", "--where", where, cwd=repo.root)
    assert proc.returncode == 5, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("wvc: error: --where"), proc.stderr
    assert proc.stdout == ""
