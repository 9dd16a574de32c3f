"""wvc.manifest: canonical JSON, strict parsers for hostile input, paths and meta values."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wvc.dtypes import DType
from wvc.errors import InputError
from wvc.manifest import (
    Commit,
    FileManifest,
    ManifestError,
    Segment,
    SegmentKind,
    TensorInfo,
    Tree,
    TreeEntry,
    canonical,
    normalize_path,
    parse_commit,
    parse_file_manifest,
    parse_meta_value,
    parse_tree,
)
from wvc.objects import hash_bytes

ID_A = hash_bytes(b"a")
ID_B = hash_bytes(b"b")
ID_C = hash_bytes(b"c")

# --- strategies ---------------------------------------------------------------

ids = st.binary(min_size=32, max_size=32).map(bytes.hex)
texts = st.text(max_size=20)
finite_floats = st.floats(allow_nan=False, allow_infinity=False)
meta_values = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), finite_floats, texts
)


@st.composite
def segments(draw: st.DrawFn, chunk_size: int) -> Segment:
    if draw(st.booleans()):
        dtype = draw(st.sampled_from(list(DType)))
        shape = tuple(draw(st.lists(st.integers(0, 6), max_size=3)))
        size = dtype.nbytes(shape)
        if size is None:  # sub-byte or block dtype: make the innermost dimension whole
            # (at most 6 blocks, so the chunk ids stay within what hypothesis can draw)
            shape = (*shape[:1], 8 if dtype.bits else dtype.block)
            size = dtype.nbytes(shape)
        assert size is not None
        tensor = TensorInfo(draw(texts), dtype, shape)
        kind = SegmentKind.TENSOR
    else:
        size = draw(st.integers(0, 5000))
        tensor = None
        kind = SegmentKind.OPAQUE
    n_chunks = -(-size // chunk_size)
    chunks = tuple(draw(st.lists(ids, min_size=n_chunks, max_size=n_chunks)))
    return Segment(kind, size, chunks, tensor)


@st.composite
def file_manifests(draw: st.DrawFn) -> FileManifest:
    # Not 1: a block-quantized tensor would need more chunk ids than hypothesis draws.
    chunk_size = draw(st.sampled_from([7, 64, 1024, 4 << 20]))
    segs = tuple(
        draw(
            st.lists(
                segments(chunk_size),
                max_size=6,
                # tensor names are unique within a file
                unique_by=lambda s: s.tensor.name if s.tensor else object(),
            )
        )
    )
    fmt = draw(st.sampled_from(["safetensors", "opaque"]) | texts)
    return FileManifest(fmt, sum(s.size for s in segs), chunk_size, segs)


path_parts = st.text(
    alphabet=st.characters(blacklist_characters="/\\\0", blacklist_categories=("Cs",)),
    min_size=1,
    max_size=8,
).filter(lambda p: p not in (".", ".."))
paths = st.lists(path_parts, min_size=1, max_size=4).map("/".join)


@st.composite
def trees(draw: st.DrawFn) -> Tree:
    chosen = sorted(set(draw(st.lists(paths, max_size=8))))
    # A path cannot also be a directory of another path: keep the shorter one.
    chosen = [p for p in chosen if not any(p.startswith(q + "/") for q in chosen)]
    entries = tuple(
        TreeEntry(p, draw(ids), draw(st.integers(0, 2**50)), draw(st.sampled_from(["a", "b"])))
        for p in chosen
    )
    return Tree(entries)


@st.composite
def commits(draw: st.DrawFn) -> Commit:
    return Commit(
        tree=draw(ids),
        parents=tuple(draw(st.lists(ids, max_size=3))),
        message=draw(st.text(max_size=60)),
        author=draw(texts),
        time=draw(st.floats(-1e11, 1e11)),
        meta=draw(st.dictionaries(texts, meta_values, max_size=5)),
    )


def _recanonical(raw: bytes) -> bytes:
    return json.dumps(
        json.loads(raw), sort_keys=True, separators=(",", ":"), ensure_ascii=True
    ).encode("ascii")


# --- canonical form and round trips ------------------------------------------


@given(m=file_manifests())
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_file_manifest_round_trip(m: FileManifest) -> None:
    raw = canonical(m)
    assert raw == canonical(m)
    assert raw == _recanonical(raw)
    parsed = parse_file_manifest(raw)
    assert parsed == m
    assert canonical(parsed) == raw


@given(t=trees())
@settings(max_examples=150, deadline=None)
def test_tree_round_trip(t: Tree) -> None:
    raw = canonical(t)
    assert raw == _recanonical(raw)
    parsed = parse_tree(raw)
    assert parsed == t
    assert canonical(parsed) == raw
    assert parsed.size == sum(e.size for e in t.entries)


@given(c=commits())
@settings(max_examples=150, deadline=None)
def test_commit_round_trip(c: Commit) -> None:
    raw = canonical(c)
    assert raw == _recanonical(raw)
    parsed = parse_commit(raw)
    assert parsed == c
    assert canonical(parsed) == raw


@given(c=commits())
@settings(max_examples=50, deadline=None)
def test_canonical_ignores_meta_insertion_order(c: Commit) -> None:
    reordered = Commit(
        c.tree, c.parents, c.message, c.author, c.time, dict(reversed(list(c.meta.items())))
    )
    assert canonical(reordered) == canonical(c)
    assert hash_bytes(canonical(reordered)) == hash_bytes(canonical(c))


def test_canonical_is_compact_sorted_ascii() -> None:
    m = FileManifest(
        "safetensors",
        12,
        8,
        (
            Segment(SegmentKind.OPAQUE, 8, (ID_A,)),
            Segment(SegmentKind.TENSOR, 4, (ID_B,), TensorInfo("ünï", DType.F32, (1,))),
        ),
    )
    raw = canonical(m)
    assert raw == (
        b'{"chunk_size":8,"format":"safetensors","segments":['
        b'{"chunks":["' + ID_A.encode() + b'"],"kind":"opaque","size":8},'
        b'{"chunks":["' + ID_B.encode() + b'"],"dtype":"F32","kind":"tensor",'
        b'"name":"\\u00fcn\\u00ef","shape":[1],"size":4}],'
        b'"size":12,"type":"wvc.file","version":1}'
    )
    c = Commit(ID_A, (ID_B,), "msg", "me", 1.5, {"z": 1, "a": None})
    assert canonical(c) == (
        b'{"author":"me","message":"msg","meta":{"a":null,"z":1},"parents":["'
        + ID_B.encode()
        + b'"],"time":1.5,"tree":"'
        + ID_A.encode()
        + b'","type":"wvc.commit","version":1}'
    )
    t = Tree((TreeEntry("a/b", ID_C, 3, "opaque"),))
    assert canonical(t) == (
        b'{"files":[{"format":"opaque","manifest":"'
        + ID_C.encode()
        + b'","path":"a/b","size":3}],"type":"wvc.tree","version":1}'
    )


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_canonical_refuses_non_finite_numbers(bad: float) -> None:
    with pytest.raises(ValueError):
        canonical(Commit(ID_A, (), "m", "a", bad))
    with pytest.raises(ValueError):
        canonical(Commit(ID_A, (), "m", "a", 1.0, {"loss": bad}))


def test_file_manifest_tensors() -> None:
    m = FileManifest(
        "safetensors",
        30,
        16,
        (
            Segment(SegmentKind.OPAQUE, 10, (ID_A,)),
            Segment(SegmentKind.TENSOR, 8, (ID_B,), TensorInfo("w", DType.F32, (2,))),
            Segment(SegmentKind.TENSOR, 0, (), TensorInfo("e", DType.F32, (0,))),
            Segment(SegmentKind.TENSOR, 12, (ID_C,), TensorInfo("v", DType.I16, (2, 3))),
        ),
    )
    assert [(t.offset, t.name) for t in m.tensors()] == [
        (10, "w"),
        (18, "e"),
        (18, "v"),
    ]
    assert m.segments[3].tensor is not None
    assert m.segments[3].tensor.numel == 6
    assert parse_file_manifest(canonical(m)) == m


@pytest.mark.parametrize("dtype", [d for d in DType.__members__])
def test_every_dtype_name_survives_a_round_trip(dtype: str) -> None:
    d = _manifest_dict()
    seg = d["segments"][1]
    dt = DType.parse(dtype)
    seg["dtype"] = dtype
    if dt.is_quantized:  # two blocks
        seg["shape"] = [2 * dt.block]
        seg["size"] = dt.nbytes((2 * dt.block,))
    else:
        seg["shape"] = [24 * 8 // dt.bits]  # 24 bytes of elements
        seg["size"] = 24
    seg["chunks"] = [ID_A] * -(-seg["size"] // 8)
    d["size"] = 8 + seg["size"]
    raw = canonical(parse_file_manifest(_enc(d)))
    assert json.loads(raw)["segments"][1]["dtype"] == dtype


# --- hostile input: file manifests --------------------------------------------


def _manifest_dict() -> dict[str, Any]:
    return {
        "type": "wvc.file",
        "version": 1,
        "format": "safetensors",
        "size": 24,
        "chunk_size": 8,
        "segments": [
            {"kind": "opaque", "size": 8, "chunks": [ID_A]},
            {
                "kind": "tensor",
                "size": 16,
                "chunks": [ID_B, ID_C],
                "name": "w",
                "dtype": "F32",
                "shape": [2, 2],
            },
        ],
    }


def _enc(d: Any) -> bytes:
    return json.dumps(d).encode()


def test_manifest_base_is_valid() -> None:
    m = parse_file_manifest(_enc(_manifest_dict()))
    assert m.size == 24
    assert m.segments[1].tensor == TensorInfo("w", DType.F32, (2, 2))


def _set(path: tuple[Any, ...], value: Any) -> Any:
    def edit(d: dict[str, Any]) -> dict[str, Any]:
        target: Any = d
        for p in path[:-1]:
            target = target[p]
        if value is _DELETE:
            del target[path[-1]]
        else:
            target[path[-1]] = value
        return d

    return edit


_DELETE = object()
SEG = "segments"

MANIFEST_CASES: dict[str, Any] = {
    "type-missing": _set(("type",), _DELETE),
    "type-tree": _set(("type",), "wvc.tree"),
    "version-2": _set(("version",), 2),
    "version-string": _set(("version",), "1"),
    "version-true": _set(("version",), True),
    "version-float": _set(("version",), 1.0),
    "size-missing": _set(("size",), _DELETE),
    "size-string": _set(("size",), "24"),
    "size-float": _set(("size",), 24.0),
    "size-bool": _set(("size",), True),
    "size-negative": _set(("size",), -24),
    "size-null": _set(("size",), None),
    "chunk-size-zero": _set(("chunk_size",), 0),
    "chunk-size-bool": _set(("chunk_size",), True),
    "chunk-size-negative": _set(("chunk_size",), -8),
    "format-missing": _set(("format",), _DELETE),
    "format-int": _set(("format",), 3),
    "segments-missing": _set((SEG,), _DELETE),
    "segments-dict": _set((SEG,), {}),
    "segment-not-object": _set((SEG, 0), [ID_A]),
    "segment-kind-unknown": _set((SEG, 0, "kind"), "delta"),
    "segment-kind-missing": _set((SEG, 0, "kind"), _DELETE),
    "segment-size-bool": _set((SEG, 0, "size"), True),
    "segment-size-negative": _set((SEG, 0, "size"), -8),
    "segment-size-float": _set((SEG, 0, "size"), 8.0),
    "chunks-missing": _set((SEG, 0, "chunks"), _DELETE),
    "chunks-string": _set((SEG, 0, "chunks"), ID_A),
    "chunk-id-upper": _set((SEG, 0, "chunks"), [ID_A.upper()]),
    "chunk-id-short": _set((SEG, 0, "chunks"), [ID_A[:-1]]),
    "chunk-id-long": _set((SEG, 0, "chunks"), [ID_A + "0"]),
    "chunk-id-newline": _set((SEG, 0, "chunks"), [ID_A + "\n"]),
    "chunk-id-int": _set((SEG, 0, "chunks"), [1]),
    "chunk-id-null": _set((SEG, 0, "chunks"), [None]),
    "chunks-too-many": _set((SEG, 0, "chunks"), [ID_A, ID_B]),
    "chunks-too-few": _set((SEG, 1, "chunks"), [ID_B]),
    "chunks-none-for-data": _set((SEG, 0, "chunks"), []),
    "tensor-name-missing": _set((SEG, 1, "name"), _DELETE),
    "tensor-name-int": _set((SEG, 1, "name"), 5),
    "tensor-dtype-unknown": _set((SEG, 1, "dtype"), "F128"),
    "tensor-dtype-lower": _set((SEG, 1, "dtype"), "f32"),
    "tensor-dtype-int": _set((SEG, 1, "dtype"), 32),
    "tensor-dtype-missing": _set((SEG, 1, "dtype"), _DELETE),
    "tensor-shape-missing": _set((SEG, 1, "shape"), _DELETE),
    "tensor-shape-negative": _set((SEG, 1, "shape"), [-2, -2]),
    "tensor-shape-bool": _set((SEG, 1, "shape"), [True, 4]),
    "tensor-shape-float": _set((SEG, 1, "shape"), [2.0, 2]),
    "tensor-shape-string": _set((SEG, 1, "shape"), "2,2"),
    "tensor-dtype-x-shape": _set((SEG, 1, "shape"), [2, 3]),
    "tensor-wrong-dtype-size": _set((SEG, 1, "dtype"), "F64"),
    "sizes-do-not-add-up": _set(("size",), 25),
    "sizes-too-small": _set(("size",), 16),
}


@pytest.mark.parametrize("case", sorted(MANIFEST_CASES))
def test_file_manifest_rejects(case: str) -> None:
    raw = _enc(MANIFEST_CASES[case](_manifest_dict()))
    with pytest.raises(ManifestError):
        parse_file_manifest(raw)


@pytest.mark.parametrize(
    ("case", "fragment"),
    [
        ("chunks-too-many", "chunk count does not match"),
        ("tensor-dtype-unknown", "unknown dtype 'F128'"),
        ("tensor-dtype-x-shape", "dtype x shape does not match"),
        ("sizes-do-not-add-up", "do not add up"),
        ("segment-kind-unknown", "unknown segment kind 'delta'"),
        ("size-bool", "'size'"),
        ("chunk-size-zero", "chunk_size must be positive"),
        ("type-tree", "expected type 'wvc.file'"),
        ("version-2", "unsupported wvc.file version 2"),
    ],
)
def test_file_manifest_error_messages(case: str, fragment: str) -> None:
    raw = _enc(MANIFEST_CASES[case](_manifest_dict()))
    with pytest.raises(ManifestError) as info:
        parse_file_manifest(raw)
    assert fragment in str(info.value)


NOT_JSON = [
    b"",
    b"{",
    b"\xff\xfe\x00",
    b"{'type': 'wvc.file'}",
    b"[]",
    b"null",
    b'"wvc.file"',
    b"1",
]


@pytest.mark.parametrize("raw", NOT_JSON)
@pytest.mark.parametrize("parse", [parse_file_manifest, parse_tree, parse_commit])
def test_parsers_reject_non_objects(parse: Any, raw: bytes) -> None:
    with pytest.raises(ManifestError):
        parse(raw)


@pytest.mark.parametrize("parse", [parse_file_manifest, parse_tree, parse_commit])
def test_parsers_reject_deep_nesting(parse: Any) -> None:
    raw = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(ManifestError):
        parse(raw)


@pytest.mark.parametrize("parse", [parse_file_manifest, parse_tree, parse_commit])
def test_parsers_reject_huge_integer_literals(parse: Any) -> None:
    raw = b'{"type":"x","version":' + b"1" * 5000 + b"}"
    with pytest.raises(ManifestError):
        parse(raw)


# --- hostile input: trees -----------------------------------------------------


def _tree_dict(*paths: str) -> dict[str, Any]:
    return {
        "type": "wvc.tree",
        "version": 1,
        "files": [
            {"path": p, "manifest": ID_A, "size": 10, "format": "opaque"}
            for p in (paths or ("a.bin", "dir/b.safetensors"))
        ],
    }


def test_tree_base_is_valid() -> None:
    t = parse_tree(_enc(_tree_dict()))
    assert [e.path for e in t.entries] == ["a.bin", "dir/b.safetensors"]
    assert t.size == 20
    assert parse_tree(_enc(_tree_dict("x"))).entries[0].path == "x"
    assert parse_tree(_enc({"type": "wvc.tree", "version": 1, "files": []})) == Tree(())


@pytest.mark.parametrize(
    "path",
    [
        "/abs",
        "/",
        "..",
        "../x",
        "a/../../x",
        "a/../b",
        "./a",
        "a/.",
        "a//b",
        "a/",
        "",
        "a\\b",
        "a\0b",
        ".",
    ],
)
def test_tree_rejects_bad_paths(path: str) -> None:
    with pytest.raises(ManifestError, match="path"):
        parse_tree(_enc(_tree_dict(path)))


@pytest.mark.parametrize(
    "paths",
    [("b", "a"), ("a", "a"), ("a/b", "a"), ("dir/z", "dir/a"), ("b", "a", "c")],
)
def test_tree_rejects_unsorted_or_duplicate(paths: tuple[str, ...]) -> None:
    with pytest.raises(ManifestError, match="unique and sorted"):
        parse_tree(_enc(_tree_dict(*paths)))


TREE_ENTRY_CASES: dict[str, Any] = {
    "manifest-bad-id": ("manifest", "not-an-id"),
    "manifest-upper": ("manifest", ID_A.upper()),
    "manifest-newline": ("manifest", ID_A + "\n"),
    "manifest-int": ("manifest", 5),
    "manifest-missing": ("manifest", _DELETE),
    "size-bool": ("size", False),
    "size-negative": ("size", -1),
    "size-float": ("size", 10.0),
    "size-missing": ("size", _DELETE),
    "format-int": ("format", 1),
    "format-missing": ("format", _DELETE),
    "path-int": ("path", 1),
    "path-missing": ("path", _DELETE),
}


@pytest.mark.parametrize("case", sorted(TREE_ENTRY_CASES))
def test_tree_rejects_bad_entries(case: str) -> None:
    field_name, value = TREE_ENTRY_CASES[case]
    d = _tree_dict("only")
    if value is _DELETE:
        del d["files"][0][field_name]
    else:
        d["files"][0][field_name] = value
    with pytest.raises(ManifestError):
        parse_tree(_enc(d))


@pytest.mark.parametrize(
    "d",
    [
        {"type": "wvc.tree", "version": 1},
        {"type": "wvc.tree", "version": 1, "files": {}},
        {"type": "wvc.tree", "version": 1, "files": ["a"]},
        {"type": "wvc.tree", "version": 2, "files": []},
        {"type": "wvc.commit", "version": 1, "files": []},
        {"type": "wvc.tree", "version": True, "files": []},
    ],
    ids=["no-files", "files-dict", "entry-string", "version-2", "wrong-type", "version-true"],
)
def test_tree_rejects_bad_structure(d: dict[str, Any]) -> None:
    with pytest.raises(ManifestError):
        parse_tree(_enc(d))


# --- hostile input: commits ---------------------------------------------------


def _commit_dict() -> dict[str, Any]:
    return {
        "type": "wvc.commit",
        "version": 1,
        "tree": ID_A,
        "parents": [ID_B],
        "message": "msg",
        "author": "me <me@example.com>",
        "time": 1700000000.25,
        "meta": {"step": 100, "loss": 0.5, "ok": True, "note": "x", "none": None},
    }


def test_commit_base_is_valid() -> None:
    c = parse_commit(_enc(_commit_dict()))
    assert c.parents == (ID_B,)
    assert c.meta == {"step": 100, "loss": 0.5, "ok": True, "note": "x", "none": None}
    assert isinstance(c.time, float)
    c = parse_commit(_enc({**_commit_dict(), "time": 1700000000}))
    assert c.time == 1700000000.0
    assert isinstance(c.time, float)


COMMIT_CASES: dict[str, tuple[str, Any]] = {
    "tree-bad": ("tree", "abc"),
    "tree-upper": ("tree", ID_A.upper()),
    "tree-newline": ("tree", ID_A + "\n"),
    "tree-missing": ("tree", _DELETE),
    "tree-int": ("tree", 1),
    "parents-missing": ("parents", _DELETE),
    "parents-string": ("parents", ID_B),
    "parents-bad-id": ("parents", ["x"]),
    "parents-null-item": ("parents", [None]),
    "message-missing": ("message", _DELETE),
    "message-int": ("message", 1),
    "author-missing": ("author", _DELETE),
    "author-null": ("author", None),
    "time-missing": ("time", _DELETE),
    "time-string": ("time", "1700000000"),
    "time-null": ("time", None),
    "time-bool": ("time", True),
    "meta-missing": ("meta", _DELETE),
    "meta-list": ("meta", []),
    "meta-value-list": ("meta", {"a": [1]}),
    "meta-value-dict": ("meta", {"a": {"b": 1}}),
    "version-true": ("version", True),
    "type-wrong": ("type", "wvc.file"),
}


@pytest.mark.parametrize("case", sorted(COMMIT_CASES))
def test_commit_rejects(case: str) -> None:
    field_name, value = COMMIT_CASES[case]
    d = _commit_dict()
    if value is _DELETE:
        del d[field_name]
    else:
        d[field_name] = value
    with pytest.raises(ManifestError):
        parse_commit(_enc(d))


@pytest.mark.parametrize(
    "literal",
    [b"NaN", b"Infinity", b"-Infinity", b"1e400"],
    ids=["nan", "inf", "-inf", "overflow"],
)
@pytest.mark.parametrize("where", ["time", "meta"])
def test_commit_rejects_non_finite_numbers(literal: bytes, where: str) -> None:
    # Such a commit could never be re-serialized (canonical() refuses non-finite floats).
    raw = _enc(_commit_dict())
    if where == "time":
        raw = raw.replace(b'"time": 1700000000.25', b'"time": ' + literal)
    else:
        raw = raw.replace(b'"loss": 0.5', b'"loss": ' + literal)
    assert literal in raw
    with pytest.raises(ManifestError):
        parse_commit(raw)


# --- normalize_path -----------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("a", "a"),
        ("model.safetensors", "model.safetensors"),
        ("a/b/c", "a/b/c"),
        ("a//b", "a/b"),
        ("./a", "a"),
        ("a/./b", "a/b"),
        ("a/", "a"),
        ("a/b/../c", "a/c"),
        ("a/b/..", "a"),
        (".hidden", ".hidden"),
        ("..a", "..a"),
        ("a..", "a.."),
        ("...", "..."),
        ("a/..b", "a/..b"),
        ("a/../..b", "..b"),
        ("ünïcödé/файл", "ünïcödé/файл"),
        ("with space/x y", "with space/x y"),
    ],
)
def test_normalize_path(path: str, expected: str) -> None:
    assert normalize_path(path) == expected
    assert normalize_path(expected) == expected  # idempotent


@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        ("", "invalid path"),
        ("a\0b", "invalid path"),
        ("a\\b", "invalid path"),
        ("C:\\x", "invalid path"),
        ("/", "absolute paths cannot be stored"),
        ("/etc/passwd", "absolute paths cannot be stored"),
        ("//x", "absolute paths cannot be stored"),
        (".", "leaves the checkpoint root"),
        ("./", "leaves the checkpoint root"),
        ("..", "leaves the checkpoint root"),
        ("../x", "leaves the checkpoint root"),
        ("a/../..", "leaves the checkpoint root"),
        ("a/../../b", "leaves the checkpoint root"),
        ("a/..", "leaves the checkpoint root"),
        ("a/b/../../..", "leaves the checkpoint root"),
    ],
)
def test_normalize_path_rejects(path: str, fragment: str) -> None:
    with pytest.raises(InputError) as info:
        normalize_path(path)
    assert fragment in str(info.value)
    assert info.value.path == path


@given(p=paths)
@settings(max_examples=100, deadline=None)
def test_normalize_path_keeps_clean_paths(p: str) -> None:
    assert normalize_path(p) == p


# --- parse_meta_value ---------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("true", True),
        ("false", False),
        ("null", None),
        ("0", 0),
        ("-0", 0),
        ("42", 42),
        ("-7", -7),
        ("123456789012345678901234567890", 123456789012345678901234567890),
        ("1.5", 1.5),
        ("-0.25", -0.25),
        ("1e3", 1000.0),
        ("2.5E-3", 0.0025),
        ("1.0", 1.0),
        ("nan", "nan"),
        ("NaN", "NaN"),
        ("inf", "inf"),
        ("-inf", "-inf"),
        ("Infinity", "Infinity"),
        ("1e999", "1e999"),
        ("True", "True"),
        ("NULL", "NULL"),
        ("none", "none"),
        ("", ""),
        ("abc", "abc"),
        ("0x10", "0x10"),
        ("1.2.3", "1.2.3"),
        ("v1", "v1"),
        ("resnet-50", "resnet-50"),
    ],
)
def test_parse_meta_value(text: str, expected: Any) -> None:
    got = parse_meta_value(text)
    assert got == expected
    assert type(got) is type(expected)


@pytest.mark.parametrize(
    "text",
    ["1_000", " 7", "7 ", "007", "+5", ".5", "1.", "١٢", "1_0.5"],
)
def test_parse_meta_value_non_json_numerals_stay_text(text: str) -> None:
    # The documented rule: JSON numbers become numbers, anything else stays the text.
    assert parse_meta_value(text) == text


def test_tree_path_that_is_also_a_directory_is_refused() -> None:
    oid = "ab" * 32
    raw = json.dumps(
        {
            "type": "wvc.tree",
            "version": 1,
            "files": [
                {"path": "a", "manifest": oid, "size": 1, "format": "opaque"},
                {"path": "a/b", "manifest": oid, "size": 1, "format": "opaque"},
            ],
        }
    ).encode()
    with pytest.raises(ManifestError, match="both a file and a directory"):
        parse_tree(raw)
