"""The delta file format: the strict parser, and malformed or tampered delta files.

Every case starts from a valid delta written by ``repo.delta`` and edits it
(the safetensors header is an 8-byte little-endian length followed by JSON; the
delta's own header is the JSON string at ``__metadata__["wvc.delta"]``). Every
refusal must be an InputError (MalformedFileError for the parser) naming the
file, and leave the repository as it was.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import blake3
import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from wvc.delta import DeltaFile, Encoding, Op
from wvc.errors import InputError, MalformedFileError, WvcError
from wvc.index import commits
from wvc.ops.delta import BaseMismatchError
from wvc.repository import Repository

# --- building and editing safetensors files by hand -------------------------------------

Tensors = dict[str, tuple[str, list[int], bytes]]  # name -> (dtype, shape, data)


def read_st(path: Path) -> tuple[dict[str, str] | None, Tensors]:
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    data = raw[8 + n :]
    meta = header.pop("__metadata__", None)
    tensors = {
        name: (
            info["dtype"],
            info["shape"],
            data[info["data_offsets"][0] : info["data_offsets"][1]],
        )
        for name, info in header.items()
    }
    return meta, tensors


def write_st(path: Path, meta: dict[str, str] | None, tensors: Tensors) -> None:
    header: dict[str, Any] = {}
    if meta is not None:
        header["__metadata__"] = meta
    offset = 0
    for name, (dtype, shape, data) in tensors.items():
        header[name] = {
            "dtype": dtype,
            "shape": shape,
            "data_offsets": [offset, offset + len(data)],
        }
        offset += len(data)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    body = b"".join(d for _, _, d in tensors.values())
    path.write_bytes(len(text).to_bytes(8, "little") + text + body)


def edited(src: Path, dst: Path, fn: Callable[[dict[str, Any], Tensors], None]) -> Path:
    """A copy of the delta ``src`` at ``dst`` with ``fn(doc, payload tensors)`` applied."""
    meta, tensors = read_st(src)
    assert meta is not None
    doc = json.loads(meta["wvc.delta"])
    fn(doc, tensors)
    meta["wvc.delta"] = json.dumps(doc)
    write_st(dst, meta, tensors)
    return dst


def entry(doc: dict[str, Any], name: str) -> dict[str, Any]:
    (e,) = [e for e in doc["tensors"] if e["name"] == name]
    return e


def commit_count(repo: Repository) -> int:
    with repo.index.read() as conn:
        return int(conn.execute(select(func.count()).select_from(commits)).scalar_one())


def object_files(repo: Repository) -> set[str]:
    return {p.name for p in (repo.dir / "objects").rglob("*") if p.is_file()}


def repo_state(repo: Repository) -> tuple[Any, ...]:
    return (
        repo.head(),
        [(r.name, r.target) for r in repo.branches()],
        [(e.id) for e in repo.log()],
        commit_count(repo),
        object_files(repo),  # refusing writes nothing
    )


# --- fixtures -------------------------------------------------------------------------------


@dataclass
class Deltas:
    repo: Repository
    a: str  # the base commit
    a_tensors: dict[str, np.ndarray]
    b_tensors: dict[str, np.ndarray]
    lossless: Path  # exact, sparse, whole (add and replace), none; unchanged tensors
    lowrank: Path  # lowrank + residual
    lossy: Path  # lowrank, no residual
    noadd: Path  # like lossless, without the added tensor
    dir: Path


def make_deltas(repo: Repository, d: Path) -> Deltas:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 32), dtype=np.float32)
    w2 = w.copy()
    w2.reshape(-1)[[3, 100, 2000]] = [1.0, np.nan, -0.0]
    lr = rng.standard_normal((24, 16), dtype=np.float32)
    lr2 = lr + np.outer(rng.standard_normal(24), rng.standard_normal(16)).astype(np.float32)
    a = {
        "w": w,  # sparse
        "x": np.arange(16, dtype=np.int32),  # exact
        "lr": lr,
        "r": np.zeros(4, np.float16),  # replaced
        "gone": np.ones(3, np.int8),
        "same": np.full(5, 7, np.int64),
    }
    b = {
        "w": w2,
        "x": np.arange(16, dtype=np.int32)[::-1].copy(),
        "lr": lr2,
        "r": np.zeros((2, 3), np.float16),
        "new": np.arange(6, dtype=np.uint16),
        "same": a["same"],
    }
    ca = repo.commit_state_dict(a, message="a").id
    cb = repo.commit_state_dict(b, message="b").id
    deltas = Deltas(
        repo, ca, a, b, d / "ok.delta", d / "lr.delta", d / "lossy.delta", d / "noadd.delta", d
    )
    res = repo.delta(ca, cb, deltas.lossless, tensors="[!l]*")
    enc = {t.name: t.encoding for t in res.tensors}
    assert enc == {
        "w": Encoding.SPARSE,
        "x": Encoding.EXACT,
        "r": Encoding.WHOLE,
        "new": Encoding.WHOLE,
        "gone": Encoding.NONE,
    }
    res = repo.delta(ca, cb, deltas.lowrank, mode="lowrank", rank=2, residual=True, tensors="lr")
    (t,) = res.tensors
    assert t.encoding is Encoding.LOWRANK and t.residual is not None
    res = repo.delta(ca, cb, deltas.lossy, mode="lowrank", rank=1, tensors="lr")
    assert res.lossy
    res = repo.delta(ca, cb, deltas.noadd, tensors="[!ln]*")
    assert {t.op for t in res.tensors} == {Op.MODIFY, Op.REPLACE, Op.REMOVE}
    return deltas


@pytest.fixture
def deltas(repo: Repository, tmp_path: Path) -> Deltas:
    return make_deltas(repo, tmp_path)


def refused(deltas: Deltas, path: Path, *texts: str, parse: bool = True) -> InputError:
    """Applying ``path`` raises an InputError naming it (MalformedFileError when the
    parser refuses it) that contains ``texts``; nothing is committed."""
    repo = deltas.repo
    before = repo_state(repo)
    with pytest.raises(InputError) as exc:
        repo.apply(path, onto=deltas.a, branch="x")
    e = exc.value
    msg = str(e)
    assert str(path) in msg, msg
    assert e.path == str(path)
    for text in texts:
        assert text in msg, (text, msg)
    if parse:
        assert isinstance(e, MalformedFileError), msg
        assert "malformed wvc.delta file" in msg, msg
        with pytest.raises(MalformedFileError):
            DeltaFile(path)
    assert repo_state(repo) == before
    assert "x" not in {r.name for r in repo.branches()}
    return e


# --- valid files ------------------------------------------------------------------------------


def test_valid_deltas_parse_and_apply(deltas: Deltas) -> None:
    with DeltaFile(deltas.lossless) as f:
        h = f.header
        assert h.base == deltas.a and h.chunk_size > 0 and not h.lossy
        ops = {e.name: e.op for e in f}
        assert ops == {
            "w": Op.MODIFY,
            "x": Op.MODIFY,
            "r": Op.REPLACE,
            "new": Op.ADD,
            "gone": Op.REMOVE,
        }
        assert set(h.unchanged) == {"same", "lr"}  # "lr" is outside the --tensors filter
        new = next(e for e in f if e.name == "new")
        assert new.base_digest is None and new.file == "model.safetensors"
        assert f.read(new.payload["value"]).tobytes() == deltas.b_tensors["new"].tobytes()
    with DeltaFile(deltas.lossy) as f:
        (e,) = f.header.entries
        assert e.lossy and f.header.lossy and e.rank == 1 and e.max_error is not None
    for path in (deltas.lossless, deltas.lowrank, deltas.lossy):
        res = deltas.repo.apply(path, onto=deltas.a, branch=f"ok-{path.stem}")
        assert res.commit is not None


def test_rewritten_by_hand_is_still_valid(deltas: Deltas) -> None:
    """The editing helpers themselves change nothing that matters (a control case)."""
    path = edited(deltas.lossless, deltas.dir / "copy.delta", lambda doc, t: None)
    res = deltas.repo.apply(path, onto=deltas.a, branch="copy")
    assert res.commit is not None
    got = deltas.repo.load(res.commit.id)
    for name in ("w", "x", "r", "new", "same"):
        assert got[name].tobytes() == deltas.b_tensors[name].tobytes()
    assert "gone" not in got


# --- not a delta ---------------------------------------------------------------------------


def test_not_a_safetensors_file(deltas: Deltas) -> None:
    for name, data in [
        ("text.delta", b"this is not a delta file at all, just text\n"),
        ("empty.delta", b""),
        ("short.delta", b"\x01\x02"),
        ("huge-header.delta", (10**12).to_bytes(8, "little") + b"{}"),
        ("not-json.delta", (4).to_bytes(8, "little") + b"{abc"),
    ]:
        p = deltas.dir / name
        p.write_bytes(data)
        refused(deltas, p, "not a safetensors file")


def test_truncated_files(deltas: Deltas) -> None:
    raw = deltas.lossless.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    for cut in (4, 8, 8 + n // 2, 8 + n, len(raw) - 1):
        p = deltas.dir / f"cut{cut}.delta"
        p.write_bytes(raw[:cut])
        refused(deltas, p, "not a safetensors file")


def test_missing_delta_file(deltas: Deltas) -> None:
    p = deltas.dir / "nope.delta"
    e = refused(deltas, p, "no such delta file", parse=False)
    assert not isinstance(e, MalformedFileError)


def test_plain_safetensors_without_wvc_delta(deltas: Deltas) -> None:
    _meta, tensors = read_st(deltas.lossless)
    for i, m in enumerate([None, {"format": "pt"}]):
        p = deltas.dir / f"plain{i}.delta"
        write_st(p, m, tensors)
        refused(deltas, p, "no 'wvc.delta' entry in the safetensors metadata")


# --- the wvc.delta header -------------------------------------------------------------------


def set_raw_header(text: str) -> Callable[[Path, Path], Path]:
    def make(src: Path, dst: Path) -> Path:
        _meta, tensors = read_st(src)
        write_st(dst, {"wvc.delta": text}, tensors)
        return dst

    return make


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{not json", "wvc.delta metadata is not valid JSON"),
        ("", "wvc.delta metadata is not valid JSON"),
        ('{"format": "wvc.delta", "max_error": NaN}', "NaN is not valid JSON"),
        ('{"format": "wvc.delta", "x": Infinity}', "Infinity is not valid JSON"),
        ("[1, 2]", "not a JSON object"),
    ],
)
def test_header_not_json(deltas: Deltas, text: str, problem: str) -> None:
    p = set_raw_header(text)(deltas.lossless, deltas.dir / "bad.delta")
    refused(deltas, p, problem)


def put(key: str, value: Any) -> Callable[[dict[str, Any], Tensors], None]:
    def fn(doc: dict[str, Any], tensors: Tensors) -> None:
        doc[key] = value

    return fn


def drop(key: str) -> Callable[[dict[str, Any], Tensors], None]:
    def fn(doc: dict[str, Any], tensors: Tensors) -> None:
        del doc[key]

    return fn


def put_entry(name: str, key: str, value: Any) -> Callable[[dict[str, Any], Tensors], None]:
    def fn(doc: dict[str, Any], tensors: Tensors) -> None:
        entry(doc, name)[key] = value

    return fn


def drop_entry_key(name: str, key: str) -> Callable[[dict[str, Any], Tensors], None]:
    def fn(doc: dict[str, Any], tensors: Tensors) -> None:
        del entry(doc, name)[key]

    return fn


HEX_X = "x" * 64
UPPER = "A" * 64

HEADER_CASES: list[tuple[str, Callable[[dict[str, Any], Tensors], None], str]] = [
    ("version 2", put("version", 2), "version 2 is not supported (this wvc reads 1)"),
    ("version str", put("version", "1"), "version '1' is not supported"),
    ("no version", drop("version"), "version None is not supported"),
    ("format", put("format", "wvc.patch"), "format is 'wvc.patch', not 'wvc.delta'"),
    ("chunk_size 0", put("chunk_size", 0), "chunk_size must be a positive integer"),
    ("chunk_size str", put("chunk_size", "4"), "chunk_size must be a positive integer"),
    ("no tensors", drop("tensors"), "'tensors'"),
    ("unchanged list", put("unchanged", []), "unchanged must be an object"),
    ("unchanged hex", put("unchanged", {"same": HEX_X}), "must be a 64-digit hex digest"),
    ("unchanged upper", put("unchanged", {"same": UPPER}), "must be a 64-digit hex digest"),
    ("unchanged short", put("unchanged", {"same": "ab12"}), "must be a 64-digit hex digest"),
    ("base digest", put_entry("x", "base", HEX_X), "x: base must be a 64-digit hex digest"),
    ("result digest", put_entry("x", "result", "0" * 63), "x: result must be a 64-digit hex"),
    ("result null", put_entry("w", "result", None), "w: result must be a 64-digit hex digest"),
    ("base null", put_entry("gone", "base", None), "gone: base must be a 64-digit hex"),
    ("base int", put_entry("r", "base", 5), "r: base must be a 64-digit hex digest"),
    ("op", put_entry("x", "op", "patch"), "'patch' is not a valid Op"),
    ("encoding", put_entry("x", "encoding", "zip"), "'zip' is not a valid Encoding"),
    ("op/encoding", put_entry("x", "encoding", "whole"), "encoding whole cannot carry a modify"),
    ("add/exact", put_entry("new", "encoding", "exact"), "encoding exact cannot carry a add"),
    ("dtype", put_entry("x", "dtype", "F99"), "unknown dtype 'F99'"),
    ("shape neg", put_entry("x", "shape", [-16]), "x: shape must be a list of non-negative"),
    ("shape str", put_entry("x", "shape", "16"), "x: shape must be a list of non-negative"),
    ("shape bool", put_entry("x", "shape", [True]), "x: shape must be a list of non-negative"),
    ("name empty", put_entry("x", "name", ""), "tensor name must be a non-empty string"),
    ("name int", put_entry("x", "name", 3), "tensor name must be a non-empty string"),
    ("twice", put_entry("x", "name", "w"), "tensor 'w' is listed twice"),
    ("also unchanged", put_entry("x", "name", "same"), "tensor 'same' is listed twice"),
    ("payload list", put_entry("x", "payload", ["x:xor"]), "x: payload must map roles"),
    (
        "roles",
        put_entry("x", "payload", {"xor": "x:xor", "mask": "x:xor"}),
        "x: payload roles ['mask', 'xor'] != ['xor']",
    ),
    ("roles missing", put_entry("w", "payload", {"indices": "w:indices"}), "w: payload roles"),
    ("entry not object", put("tensors", ["x"]), "each tensor entry must be an object"),
    ("no name", drop_entry_key("x", "name"), "'name'"),
]


@pytest.mark.parametrize(
    ("change", "problem"),
    [(c, p) for _, c, p in HEADER_CASES],
    ids=[i for i, _, _ in HEADER_CASES],
)
def test_bad_header_fields(
    deltas: Deltas, change: Callable[[dict[str, Any], Tensors], None], problem: str
) -> None:
    p = edited(deltas.lossless, deltas.dir / "bad.delta", change)
    refused(deltas, p, problem)


LOWRANK_CASES: list[tuple[str, Callable[[dict[str, Any], Tensors], None], str]] = [
    ("rank 0", put_entry("lr", "rank", 0), "lr: rank must be an integer in 1..16"),
    ("rank big", put_entry("lr", "rank", 17), "lr: rank must be an integer in 1..16"),
    ("rank float", put_entry("lr", "rank", 2.0), "lr: rank must be an integer in 1..16"),
    ("rank bool", put_entry("lr", "rank", True), "lr: rank must be an integer in 1..16"),
    ("rank 3", put_entry("lr", "rank", 3), "has shape [24, 2], expected [24, 3]"),
    ("residual", put_entry("lr", "residual", "lowrank"), "lr: residual must be exact or sparse"),
    ("max_error", put_entry("lr", "max_error", "big"), "lr: max_error must be a finite number"),
    ("energy", put_entry("lr", "energy", True), "lr: energy must be a finite number"),
    ("1-D", put_entry("lr", "shape", [384]), "lr: a low-rank entry needs a 2-D tensor"),
    ("int dtype", put_entry("lr", "dtype", "I32"), "lr: a low-rank entry needs a real float"),
    ("complex", put_entry("lr", "dtype", "C64"), "lr: a low-rank entry needs a real float"),
    ("f8", put_entry("lr", "dtype", "F8_E4M3"), "lr: a low-rank entry needs a real float"),
]


@pytest.mark.parametrize(
    ("change", "problem"),
    [(c, p) for _, c, p in LOWRANK_CASES],
    ids=[i for i, _, _ in LOWRANK_CASES],
)
def test_bad_lowrank_fields(
    deltas: Deltas, change: Callable[[dict[str, Any], Tensors], None], problem: str
) -> None:
    p = edited(deltas.lowrank, deltas.dir / "bad.delta", change)
    refused(deltas, p, problem)


# --- payload tensors ---------------------------------------------------------------------------


def payload(fn: Callable[[Tensors], None]) -> Callable[[dict[str, Any], Tensors], None]:
    def wrapped(doc: dict[str, Any], tensors: Tensors) -> None:
        fn(tensors)

    return wrapped


def retype(name: str, dtype: str, shape: list[int]) -> Callable[[Tensors], None]:
    def fn(t: Tensors) -> None:
        _, _, data = t[name]
        t[name] = (dtype, shape, data)

    return fn


def without(name: str) -> Callable[[Tensors], None]:
    def fn(t: Tensors) -> None:
        del t[name]

    return fn


PAYLOAD_CASES: list[tuple[str, Path | str, Callable[[Tensors], None], str]] = [
    ("missing xor", "lossless", without("x:xor"), "x: payload tensor 'x:xor' is missing"),
    ("missing value", "lossless", without("new:value"), "payload tensor 'new:value' is missing"),
    ("missing u", "lowrank", without("lr:u"), "lr: payload tensor 'lr:u' is missing"),
    (
        "extra",
        "lossless",
        lambda t: t.__setitem__("junk", ("U8", [3], b"abc")),
        "payload tensor 'junk' is not used by any entry",
    ),
    (
        "extra role-like",
        "lossless",
        lambda t: t.__setitem__("x:indices", ("U32", [1], b"\0\0\0\0")),
        "payload tensor 'x:indices' is not used by any entry",
    ),
    ("xor signed", "lossless", retype("x:xor", "I32", [16]), "payload 'x:xor' must be uint32 x 16"),
    ("xor float", "lossless", retype("x:xor", "F32", [16]), "payload 'x:xor' must be uint32 x 16"),
    ("xor bytes", "lossless", retype("x:xor", "U8", [64]), "payload 'x:xor' must be uint32 x 16"),
    ("xor 2-D", "lossless", retype("x:xor", "U32", [4, 4]), "payload 'x:xor' must be uint32 x 16"),
    (
        "value shape",
        "lossless",
        retype("new:value", "U16", [2, 3]),
        "payload 'new:value' must be uint16 x 6",
    ),
    (
        "value dtype",
        "lossless",
        retype("r:value", "I16", [6]),
        "payload 'r:value' must be uint16 x 6",
    ),
    (
        "indices float",
        "lossless",
        retype("w:indices", "F32", [3]),
        "payload 'w:indices' must be a 1-D U32 or U64 array",
    ),
    (
        "indices 2-D",
        "lossless",
        retype("w:indices", "U32", [3, 1]),
        "payload 'w:indices' must be a 1-D U32 or U64 array",
    ),
    (
        "values dtype",
        "lossless",
        retype("w:values", "I32", [3]),
        "payload 'w:values' must be a 1-D uint32 array",
    ),
    (
        "u dtype",
        "lowrank",
        retype("lr:u", "U32", [24, 2]),
        "payload 'lr:u' must be an F32 or F64 factor",
    ),
    (
        "u transposed",
        "lowrank",
        retype("lr:u", "F32", [2, 24]),
        "payload 'lr:u' has shape [2, 24], expected [24, 2]",
    ),
    (
        "v shape",
        "lowrank",
        retype("lr:v", "F32", [1, 32]),
        "payload 'lr:v' has shape [1, 32], expected [2, 16]",
    ),
]


@pytest.mark.parametrize(
    ("which", "change", "problem"),
    [(w, c, p) for _, w, c, p in PAYLOAD_CASES],
    ids=[i for i, _, _, _ in PAYLOAD_CASES],
)
def test_bad_payload_tensors(
    deltas: Deltas, which: str, change: Callable[[Tensors], None], problem: str
) -> None:
    src = deltas.lossless if which == "lossless" else deltas.lowrank
    p = edited(src, deltas.dir / "bad.delta", payload(change))
    refused(deltas, p, problem)


def set_bytes(name: str, fn: Callable[[np.ndarray], None], dtype: Any) -> Callable[[Tensors], None]:
    def edit(t: Tensors) -> None:
        dt, shape, data = t[name]
        arr = np.frombuffer(data, dtype).copy()
        fn(arr)
        t[name] = (dt, shape, arr.tobytes())

    return edit


def test_sparse_index_out_of_range(deltas: Deltas) -> None:
    for i, bad in enumerate([64 * 32, 2**32 - 1]):
        p = edited(
            deltas.lossless,
            deltas.dir / f"idx{i}.delta",
            payload(set_bytes("w:indices", lambda a, bad=bad: a.__setitem__(0, bad), "<u4")),
        )
        refused(deltas, p, f"w: sparse index {bad} is out of range", parse=False)


def test_sparse_indices_and_values_differ_in_length(deltas: Deltas) -> None:
    def shorten(t: Tensors) -> None:
        dt, _shape, data = t["w:values"]
        t["w:values"] = (dt, [2], data[:8])

    p = edited(deltas.lossless, deltas.dir / "len.delta", payload(shorten))
    refused(deltas, p, "w: sparse indices and values differ in length", parse=False)


# --- digests over another chunk size ----------------------------------------------------------


def digest(x: np.ndarray, dtype: str, chunk_size: int) -> str:
    """The wvc tensor digest (docs/design.md): blake3 of "DTYPE:[shape]:" and the raw
    blake3 ids of the tensor's bytes cut into chunks of ``chunk_size``."""
    raw = np.ascontiguousarray(x).tobytes()
    h = blake3.blake3(f"{dtype}:{list(x.shape)}:".encode())
    for i in range(0, len(raw), chunk_size):
        h.update(blake3.blake3(raw[i : i + chunk_size]).digest())
    return h.hexdigest()


def rechunked(
    deltas: Deltas, chunk_size: int, rehash: bool
) -> Callable[[dict[str, Any], Tensors], None]:
    def fn(doc: dict[str, Any], t: Tensors) -> None:
        doc["chunk_size"] = chunk_size
        if not rehash:
            return
        a, b = deltas.a_tensors, deltas.b_tensors
        for e in doc["tensors"]:
            if e["base"] is not None:
                x = a[e["name"]]
                e["base"] = digest(x, ST_DTYPE[x.dtype.name], chunk_size)
            if e["result"] is not None:
                e["result"] = digest(b[e["name"]], e["dtype"], chunk_size)
        for name in doc["unchanged"]:
            x = a[name]
            doc["unchanged"][name] = digest(x, ST_DTYPE[x.dtype.name], chunk_size)

    return fn


ST_DTYPE = {"float32": "F32", "float16": "F16", "int32": "I32", "int8": "I8", "int64": "I64"}


def test_digests_over_another_chunk_size(deltas: Deltas) -> None:
    """A delta whose digests use smaller chunks than the repository's still applies
    (the base tensors are hashed again), and the chunk size is part of the check."""
    p = edited(deltas.lossless, deltas.dir / "c64.delta", rechunked(deltas, 64, rehash=True))
    res = deltas.repo.apply(p, onto=deltas.a, branch="c64")
    assert res.commit is not None
    got = deltas.repo.load(res.commit.id)
    for name in ("w", "x", "r", "new", "same"):
        assert got[name].tobytes() == deltas.b_tensors[name].tobytes()
    # The same digests under the stated default chunk size no longer match.
    p = edited(deltas.lossless, deltas.dir / "c64-stale.delta", rechunked(deltas, 64, rehash=False))
    e = refused(deltas, p, "is not this delta's base", parse=False)
    assert isinstance(e, BaseMismatchError)


# --- tampering that only the result digest can catch ---------------------------------------------


ITEMSIZE = {"U8": 1, "U16": 2, "U32": 4, "U64": 8, "F32": 4, "F64": 8}


@pytest.mark.parametrize(
    ("which", "name"),
    [
        ("lossless", "x:xor"),
        ("lossless", "w:values"),
        ("lossless", "w:indices"),
        ("lossless", "new:value"),
        ("lossless", "r:value"),
        ("lowrank", "lr:residual"),
        ("lossy", "lr:u"),
        ("lossy", "lr:v"),
    ],
)
def test_tampered_payload_is_refused(deltas: Deltas, which: str, name: str) -> None:
    """A payload changed so that the result changes is caught by the result digest."""
    src = {"lossless": deltas.lossless, "lowrank": deltas.lowrank, "lossy": deltas.lossy}[which]
    _, tensors = read_st(src)
    if name == "lr:residual":  # exact or sparse, whichever the delta chose
        name = "lr:residual.xor" if "lr:residual.xor" in tensors else "lr:residual.values"
    assert name in tensors

    def flip(t: Tensors) -> None:
        dt, shape, data = t[name]
        b = bytearray(data)
        if name.endswith("indices"):
            b[0] ^= 0x01  # another index, still in range
        else:  # the top byte (sign and exponent) of the middle element
            size = ITEMSIZE[dt]
            b[(len(b) // size // 2) * size + size - 1] ^= 0x40
        t[name] = (dt, shape, bytes(b))

    p = edited(src, deltas.dir / "tampered.delta", payload(flip))
    e = refused(deltas, p, "does not come out as the delta records", parse=False)
    assert f"tensor {name.split(':')[0]!r}" in str(e)


def test_tampered_factor_masked_by_residual_still_gives_b(deltas: Deltas) -> None:
    """With a residual, a damaged factor is either caught or corrected: never a wrong result."""
    for role in ("lr:u", "lr:v"):

        def flip(t: Tensors, role: str = role) -> None:
            dt, shape, data = t[role]
            b = bytearray(data)
            b[len(b) // 2 + 1] ^= 0x40
            t[role] = (dt, shape, bytes(b))

        p = edited(deltas.lowrank, deltas.dir / "masked.delta", payload(flip))
        before = repo_state(deltas.repo)
        try:
            res = deltas.repo.apply(p, onto=deltas.a, branch=f"m-{role[-1]}")
        except InputError as e:
            assert "does not come out as the delta records" in str(e)
            assert repo_state(deltas.repo) == before
        else:
            assert res.commit is not None
            got = deltas.repo.load(res.commit.id)["lr"]
            assert got.tobytes() == deltas.b_tensors["lr"].tobytes()


def test_tampered_data_section_of_the_file_is_refused(deltas: Deltas) -> None:
    """Flip one byte in the data section of the file itself (no rewriting)."""
    raw = bytearray(deltas.lossless.read_bytes())
    n = int.from_bytes(raw[:8], "little")
    _, tensors = read_st(deltas.lossless)
    start = 8 + n
    for name, (_, _, data) in tensors.items():  # find the "x:xor" payload's bytes
        if name == "x:xor":
            break
        start += len(data)
    raw[start + 5] ^= 0x01
    p = deltas.dir / "flipped.delta"
    p.write_bytes(bytes(raw))
    refused(deltas, p, "tensor 'x' does not come out as the delta records", parse=False)


def test_tampered_digest_is_a_base_mismatch(deltas: Deltas) -> None:
    def fn(doc: dict[str, Any], t: Tensors) -> None:
        doc["unchanged"]["same"] = "0" * 64

    p = edited(deltas.lossless, deltas.dir / "digest.delta", fn)
    e = refused(deltas, p, "tensor 'same' has different content", parse=False)
    assert isinstance(e, BaseMismatchError) and e.tensor == "same"


# --- fuzzing -----------------------------------------------------------------------------------
#
# The fuzzed deltas add no tensor: an added tensor has no base to check, and its
# name is not covered by any digest (see test_delta.py's report on renamed adds).


@dataclass
class Fuzz:
    deltas: Deltas
    want: dict[Path, dict[str, np.ndarray]]  # what each unflipped delta applies to


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzz]:
    d = tmp_path_factory.mktemp("fuzz")
    repo = Repository.init(d / "repo")
    try:
        deltas = make_deltas(repo, d)
        want = {}
        for src in (deltas.noadd, deltas.lowrank):
            res = repo.apply(src, onto=deltas.a, branch=f"want-{src.stem}")
            assert res.commit is not None
            want[src] = repo.load(res.commit.id)
        yield Fuzz(deltas, want)
    finally:
        repo.close()


FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    phases=[Phase.explicit, Phase.reuse, Phase.generate],  # no shrinking: see test_delta
)


def check_flipped(fz: Fuzz, src: Path, flips: list[tuple[int, int]], tag: str) -> None:
    """Apply ``src`` with bytes XOR-ed: refused with a WvcError (nothing committed), or
    applied with every tensor exactly as the intact delta gives."""
    deltas = fz.deltas
    raw = bytearray(src.read_bytes())
    for pos, mask in flips:
        raw[pos % len(raw)] ^= mask
    p = deltas.dir / f"fuzz-{tag}.delta"
    p.write_bytes(bytes(raw))
    repo = deltas.repo
    before = repo_state(repo)
    try:
        res = repo.apply(p, onto=deltas.a, branch=f"fuzz-{before[3]}")
    except WvcError:
        assert repo_state(repo) == before
        return
    assert res.commit is not None
    got = repo.load(res.commit.id)
    want = fz.want[src]
    assert sorted(got) == sorted(want)
    for name, w in want.items():
        assert got[name].dtype == w.dtype and got[name].shape == w.shape, name
        assert got[name].tobytes() == w.tobytes(), name


flips = st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(1, 255)), min_size=1, max_size=3)
which = st.sampled_from(["noadd", "lowrank"])


@FUZZ
@given(flips=flips, which=which)
def test_fuzz_any_byte(fuzz: Fuzz, flips: list[tuple[int, int]], which: str) -> None:
    src = getattr(fuzz.deltas, which)
    check_flipped(fuzz, src, flips, "any")


@FUZZ
@given(flips=flips, which=which)
def test_fuzz_header_bytes(fuzz: Fuzz, flips: list[tuple[int, int]], which: str) -> None:
    """Flips inside the JSON header, where most of the structure is."""
    src = getattr(fuzz.deltas, which)
    n = int.from_bytes(src.read_bytes()[:8], "little")
    check_flipped(fuzz, src, [(8 + p % n, m) for p, m in flips], "header")
