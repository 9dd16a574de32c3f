"""File manifests with STORAGE segments and views: canonical form, strict parsing of hostile
views, FileManifest.tensors(), and the tensor digests views get in the index."""

from __future__ import annotations

import copy
import itertools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import safetensors.numpy as stnp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from wvc.dtypes import DType
from wvc.index import file_tensor_digest, tensor_digest
from wvc.manifest import (
    FileManifest,
    ManifestError,
    Segment,
    SegmentKind,
    TensorInfo,
    View,
    canonical,
    check_view_bounds,
    contiguous_strides,
    is_contiguous,
    parse_file_manifest,
)
from wvc.objects import hash_bytes
from wvc.ops._read import read_file_manifest
from wvc.ops.restore import snapshot
from wvc.repository import Repository

CHUNK = 64
IDS = [hash_bytes(bytes([i])) for i in range(16)]


def chunk_ids(size: int, start: int = 0) -> list[str]:
    return IDS[start : start + -(-size // CHUNK)]


def base_doc() -> dict[str, Any]:
    """16 opaque bytes, a 12-element F32 storage, a 2x3 F16 tensor, and four views."""
    return {
        "type": "wvc.file",
        "version": 1,
        "format": "pytorch",
        "size": 16 + 48 + 12,
        "chunk_size": CHUNK,
        "segments": [
            {"kind": "opaque", "size": 16, "chunks": chunk_ids(16, 0)},
            {"kind": "storage", "size": 48, "chunks": chunk_ids(48, 1), "dtype": "F32"},
            {
                "kind": "tensor",
                "size": 12,
                "chunks": chunk_ids(12, 2),
                "name": "t",
                "dtype": "F16",
                "shape": [2, 3],
            },
        ],
        "views": [
            {"name": "v", "segment": 1, "shape": [3, 4], "stride": [4, 1], "offset": 0},
            {"name": "vt", "segment": 1, "shape": [4, 3], "stride": [1, 4], "offset": 0},
            {"name": "tail", "segment": 1, "shape": [2], "stride": [1], "offset": 10},
            {"name": "t_T", "segment": 2, "shape": [3, 2], "stride": [1, 3], "offset": 0},
        ],
    }


def raw(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc).encode()


def canonical_text(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def with_view(**changes: Any) -> dict[str, Any]:
    """The base manifest with its first view changed (a value of ... removes the key)."""
    doc = base_doc()
    view = doc["views"][0]
    for k, v in changes.items():
        if v is ...:
            del view[k]
        else:
            view[k] = v
    return doc


# --- canonical form and round trip -------------------------------------------------------


def test_parse_and_canonical_round_trip() -> None:
    doc = base_doc()
    m = parse_file_manifest(raw(doc))
    assert canonical(m) == canonical_text(doc)
    assert parse_file_manifest(canonical(m)) == m
    assert m.segments[1].kind is SegmentKind.STORAGE
    assert m.segments[1].storage is DType.F32
    assert m.segments[1].tensor is None
    assert m.segments[1].dtype is DType.F32
    assert m.segments[2].dtype is DType.F16
    assert m.segments[0].dtype is None
    assert m.views[1] == View("vt", 1, (4, 3), (1, 4), 0)
    # Key order and whitespace of the input do not matter; the canonical text is fixed.
    shuffled = json.dumps(dict(reversed(list(doc.items()))), indent=3).encode()
    assert canonical(parse_file_manifest(shuffled)) == canonical(m)


def test_manifest_built_in_python_round_trips() -> None:
    m = FileManifest(
        "pytorch",
        16 + 40,
        CHUNK,
        (
            Segment(SegmentKind.OPAQUE, 16, tuple(chunk_ids(16))),
            Segment(SegmentKind.STORAGE, 40, tuple(chunk_ids(40, 1)), storage=DType.I64),
        ),
        (View("a", 1, (5,), (1,), 0), View("b", 1, (2, 2), (2, 1), 1)),
    )
    text = canonical(m)
    assert parse_file_manifest(text) == m
    d = json.loads(text)
    assert d["segments"][1] == {"kind": "storage", "size": 40, "chunks": chunk_ids(40, 1),
                                "dtype": "I64"}  # fmt: skip
    assert d["views"][1] == {"name": "b", "segment": 1, "shape": [2, 2], "stride": [2, 1],
                             "offset": 1}  # fmt: skip


def test_no_views_key_when_there_are_none() -> None:
    doc = base_doc()
    del doc["views"]
    doc["segments"] = doc["segments"][:1] + doc["segments"][2:]
    doc["size"] = 16 + 12
    m = parse_file_manifest(raw(doc))
    assert m.views == ()
    assert "views" not in json.loads(canonical(m))
    # A manifest with views has a different id from the same segments without them.
    with_views = parse_file_manifest(raw(base_doc()))
    assert hash_bytes(canonical(with_views)) != hash_bytes(canonical(m))


# --- FileManifest.tensors() ----------------------------------------------------------------


def test_tensors_offsets_and_sizes() -> None:
    m = parse_file_manifest(raw(base_doc()))
    got = {t.name: t for t in m.tensors()}
    assert [t.name for t in m.tensors()] == ["t", "v", "vt", "tail", "t_T"]  # segments first
    t = got["t"]
    assert (t.dtype, t.shape, t.segment, t.offset, t.size, t.view) == (
        DType.F16, (2, 3), 2, 64, 12, None,
    )  # fmt: skip
    assert t.whole_segment
    assert (got["v"].offset, got["v"].size, got["v"].dtype) == (16, 48, DType.F32)
    assert (got["vt"].offset, got["vt"].size, got["vt"].shape) == (16, 48, (4, 3))
    assert (got["tail"].offset, got["tail"].size) == (16 + 10 * 4, 8)
    assert (got["t_T"].offset, got["t_T"].size, got["t_T"].dtype) == (64, 12, DType.F16)
    for name in ("v", "vt", "tail", "t_T"):
        assert not got[name].whole_segment
        assert got[name].view is not None and got[name].view.name == name
        assert got[name].numel == math.prod(got[name].shape)
    assert m.segment_offsets() == [0, 16, 64]


def test_empty_and_scalar_views() -> None:
    doc = base_doc()
    doc["views"] = [
        {"name": "empty_at_end", "segment": 1, "shape": [0, 5], "stride": [5, 1], "offset": 12},
        {"name": "scalar", "segment": 1, "shape": [], "stride": [], "offset": 11},
        {"name": "broadcast", "segment": 1, "shape": [7, 3], "stride": [0, 1], "offset": 9},
    ]
    m = parse_file_manifest(raw(doc))
    got = {t.name: t for t in m.tensors()}
    assert got["empty_at_end"].size == 0 and got["empty_at_end"].offset == 16 + 48
    assert got["scalar"].size == 4 and got["scalar"].shape == ()
    assert got["broadcast"].size == 7 * 3 * 4
    assert parse_file_manifest(canonical(m)) == m


# --- hostile views ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes",
    [
        {"segment": 3},  # one past the last segment
        {"segment": 99},
        {"segment": 0},  # opaque
        {"segment": -1},
        {"segment": True},
        {"segment": 1.0},
        {"segment": "1"},
        {"segment": ...},
        {"shape": [3]},  # shape and stride lengths differ
        {"stride": [4, 1, 1]},
        {"shape": [3, -4]},
        {"stride": [-4, 1]},
        {"offset": -1},
        {"shape": [3, True]},
        {"stride": [4, False]},
        {"offset": True},
        {"offset": False},
        {"shape": [3.0, 4]},
        {"shape": "3,4"},
        {"stride": None},
        {"shape": ...},
        {"stride": ...},
        {"offset": ...},
        {"offset": 1.5},
        {"name": ...},
        {"name": 5},
        {"name": None},
        {"shape": [1 << 62, 1]},
        {"stride": [1 << 62, 1]},
        {"offset": 1},  # 3x4 from element 1 ends one past the 12 elements
        {"shape": [3, 5]},
        {"stride": [5, 1]},
        {"shape": [12, 1], "stride": [1, 1], "offset": 1},
        {"shape": [13], "stride": [1]},
        {"shape": [], "stride": [], "offset": 12},  # a scalar past the end
        {"shape": [0], "stride": [1], "offset": 13},  # empty, but starting past the end
        {"offset": 10**30},
    ],
    ids=repr,
)
def test_hostile_view_is_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(ManifestError):
        parse_file_manifest(raw(with_view(**changes)))


@pytest.mark.parametrize(
    "views",
    [
        [],  # present but empty
        {},  # not a list
        "v",
        None,
        [None],
        [["v", 1, [12], [1], 0]],
    ],
    ids=repr,
)
def test_bad_views_field(views: Any) -> None:
    doc = base_doc()
    doc["views"] = views
    with pytest.raises(ManifestError):
        parse_file_manifest(raw(doc))


def test_duplicate_names_are_refused() -> None:
    doc = base_doc()
    doc["views"][1]["name"] = "v"  # two views
    with pytest.raises(ManifestError, match="unique"):
        parse_file_manifest(raw(doc))
    doc = base_doc()
    doc["views"][0]["name"] = "t"  # a view and a tensor segment
    with pytest.raises(ManifestError, match="unique"):
        parse_file_manifest(raw(doc))


@pytest.mark.parametrize(
    "segment",
    [
        {"kind": "storage", "size": 10, "dtype": "F32"},  # not a whole number of elements
        {"kind": "storage", "size": 47, "dtype": "F32"},
        {"kind": "storage", "size": 3, "dtype": "I16"},
        {"kind": "storage", "size": 48, "dtype": "F4"},  # packed below a byte
        {"kind": "storage", "size": 48, "dtype": "F6_E2M3"},
        {"kind": "storage", "size": 48, "dtype": "Q8_0"},  # block-quantized
        {"kind": "storage", "size": 48, "dtype": "F33"},
        {"kind": "storage", "size": 48, "dtype": 4},
        {"kind": "storage", "size": 48},  # no dtype
        {"kind": "storage", "size": -48, "dtype": "F32"},
        {"kind": "storage", "size": True, "dtype": "U8"},
        {"kind": "pointer", "size": 48, "dtype": "F32"},
    ],
    ids=repr,
)
def test_bad_storage_segments(segment: dict[str, Any]) -> None:
    doc = base_doc()
    size = segment["size"] if isinstance(segment["size"], int) and segment["size"] > 0 else 48
    segment["chunks"] = chunk_ids(size, 1)
    doc["segments"][1] = segment
    doc["size"] = 16 + size + 12
    with pytest.raises(ManifestError):
        parse_file_manifest(raw(doc))


def test_storage_sizes_that_are_whole_elements_parse() -> None:
    for dtype, size in (("F32", 0), ("U8", 7), ("I64", 16), ("BF16", 2), ("F8_E5M2", 3)):
        doc = base_doc()
        doc["segments"][1] = {"kind": "storage", "size": size, "chunks": chunk_ids(size, 1),
                              "dtype": dtype}  # fmt: skip
        doc["size"] = 16 + size + 12
        doc["views"] = [{"name": "e", "segment": 1, "shape": [0], "stride": [1], "offset": 0}]
        m = parse_file_manifest(raw(doc))
        assert m.segments[1].storage is DType[dtype]


@pytest.mark.parametrize("dtype", ["F4", "Q8_0", "Q4_K"])
def test_views_onto_unviewable_tensor_segments_are_refused(dtype: str) -> None:
    d = DType[dtype]
    shape = [2, 256]
    size = d.nbytes(tuple(shape))
    assert size is not None
    doc = base_doc()
    doc["segments"][2] = {"kind": "tensor", "size": size, "chunks": chunk_ids(size, 2),
                          "name": "t", "dtype": dtype, "shape": shape}  # fmt: skip
    doc["size"] = 16 + 48 + size
    doc["views"] = [{"name": "q", "segment": 2, "shape": [1], "stride": [1], "offset": 0}]
    with pytest.raises(ManifestError):
        parse_file_manifest(raw(doc))
    del doc["views"]
    assert parse_file_manifest(raw(doc)).segments[2].tensor is not None


def test_view_bounds_at_the_edge() -> None:
    ok = [
        ([3, 4], [4, 1], 0),
        ([4, 3], [1, 4], 0),
        ([1], [1], 11),
        ([2, 2], [6, 1], 4),  # last element: 4 + 6 + 1 = 11
        ([0, 9], [9, 1], 12),  # empty, at the very end
        ([], [], 11),
        ([5], [0], 11),
    ]
    for shape, stride, offset in ok:
        doc = with_view(shape=shape, stride=stride, offset=offset)
        parse_file_manifest(raw(doc))
        check_view_bounds("x", tuple(shape), tuple(stride), offset, 12)


def brute_in_bounds(
    shape: tuple[int, ...], stride: tuple[int, ...], offset: int, numel: int
) -> bool:
    if 0 in shape:
        return offset <= numel
    idx = [offset + sum(i * s for i, s in zip(ix, stride, strict=True))
           for ix in itertools.product(*(range(d) for d in shape))]  # fmt: skip
    return max(idx) < numel


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.integers(0, 4), max_size=3).flatmap(
        lambda shape: st.tuples(
            st.just(tuple(shape)),
            st.lists(st.integers(0, 8), min_size=len(shape), max_size=len(shape)).map(tuple),
        )
    ),
    st.integers(0, 30),
    st.integers(0, 40),
)
def test_view_bounds_match_brute_force(
    shape_stride: tuple[tuple[int, ...], tuple[int, ...]], offset: int, numel: int
) -> None:
    shape, stride = shape_stride
    doc = base_doc()
    doc["segments"][1] = {"kind": "storage", "size": numel * 2, "chunks": chunk_ids(numel * 2, 1),
                          "dtype": "I16"}  # fmt: skip
    doc["size"] = 16 + numel * 2 + 12
    doc["views"] = [
        {"name": "x", "segment": 1, "shape": list(shape), "stride": list(stride), "offset": offset}
    ]
    expected = brute_in_bounds(shape, stride, offset, numel)
    if expected:
        m = parse_file_manifest(raw(doc))
        (x,) = [t for t in m.tensors() if t.name == "x"]
        assert x.offset == 16 + offset * 2
        assert x.size == math.prod(shape) * 2
    else:
        with pytest.raises(ManifestError):
            parse_file_manifest(raw(doc))


def test_contiguity_helpers() -> None:
    assert contiguous_strides((2, 3, 4)) == (12, 4, 1)
    assert contiguous_strides(()) == ()
    assert is_contiguous((2, 3), (3, 1))
    assert not is_contiguous((2, 3), (1, 2))
    assert is_contiguous((1, 3), (99, 1))  # size-1 dimensions do not count
    assert is_contiguous((0, 3), (7, 7))  # nothing to lay out
    assert is_contiguous((), ())


# --- file_tensor_digest ----------------------------------------------------------------------


def plain(name: str, dtype: DType, shape: tuple[int, ...], chunks: list[str]) -> FileManifest:
    size = dtype.nbytes(shape)
    assert size is not None
    seg = Segment(SegmentKind.TENSOR, size, tuple(chunks), TensorInfo(name, dtype, shape))
    return FileManifest("safetensors", size, CHUNK, (seg,))


def storage_with_views(
    dtype: DType, numel: int, chunks: list[str], views: list[View]
) -> FileManifest:
    size = numel * dtype.itemsize
    seg = Segment(SegmentKind.STORAGE, size, tuple(chunks), storage=dtype)
    m = FileManifest("pytorch", size, CHUNK, (seg,), tuple(views))
    assert parse_file_manifest(canonical(m)) == m  # a valid manifest
    return m


def digest_of(m: FileManifest, name: str) -> str:
    (t,) = [t for t in m.tensors() if t.name == name]
    return file_tensor_digest(m, t)


def test_whole_contiguous_view_digest_equals_plain_tensor() -> None:
    chunks = chunk_ids(48)
    p = plain("w", DType.F32, (3, 4), chunks)
    views = [
        View("whole", 0, (3, 4), (4, 1), 0),
        View("flat", 0, (12,), (1,), 0),
        View("rowvec", 0, (1, 12), (99, 1), 0),  # size-1 dimension with any stride
        View("transposed", 0, (4, 3), (1, 4), 0),
        View("offset", 0, (11,), (1,), 1),
        View("part", 0, (2, 4), (4, 1), 0),
        View("broadcast", 0, (3, 4), (0, 1), 0),
    ]
    s = storage_with_views(DType.F32, 12, chunks, views)
    assert digest_of(p, "w") == tensor_digest("F32", (3, 4), tuple(chunks))
    assert digest_of(s, "whole") == digest_of(p, "w")
    assert digest_of(s, "flat") == digest_of(plain("f", DType.F32, (12,), chunks), "f")
    assert digest_of(s, "rowvec") == digest_of(plain("r", DType.F32, (1, 12), chunks), "r")
    transposed = digest_of(s, "transposed")
    assert transposed != digest_of(plain("t", DType.F32, (4, 3), chunks), "t")
    others = [
        digest_of(s, n) for n in ("whole", "flat", "transposed", "offset", "part", "broadcast")
    ]
    assert len(set(others)) == len(others)
    # The digest is the same whatever the view or file is called.
    renamed = storage_with_views(DType.F32, 12, chunks, [View("zzz", 0, (4, 3), (1, 4), 0)])
    assert digest_of(renamed, "zzz") == transposed
    # Another dtype over the same bytes is another tensor.
    as_i32 = storage_with_views(DType.I32, 12, chunks, [View("i", 0, (3, 4), (4, 1), 0)])
    assert digest_of(as_i32, "i") != digest_of(s, "whole")
    # Other bytes, other digest.
    other_chunks = storage_with_views(
        DType.F32, 12, chunk_ids(48, 5), [View("w", 0, (3, 4), (4, 1), 0)]
    )
    assert digest_of(other_chunks, "w") != digest_of(s, "whole")


def test_view_onto_a_tensor_segment_digest() -> None:
    m = parse_file_manifest(raw(base_doc()))
    t_digest = digest_of(m, "t")
    assert t_digest == tensor_digest("F16", (2, 3), tuple(chunk_ids(12, 2)))
    assert digest_of(m, "t_T") != t_digest
    doc = base_doc()
    doc["views"] = [{"name": "tied", "segment": 2, "shape": [2, 3], "stride": [3, 1], "offset": 0}]
    assert digest_of(parse_file_manifest(raw(doc)), "tied") == t_digest


def test_torch_storage_digests_match_safetensors(repo: Repository, tmp_path: Path) -> None:
    torch.manual_seed(5)
    emb = torch.randn(8, 4)
    other = torch.randn(6, 5)
    src = tmp_path / "src"
    src.mkdir()
    torch.save({"embed": emb, "head": emb, "embed_t": emb.t(), "other_t": other.t()},
               src / "model.pt")  # fmt: skip
    stnp.save_file({"embed": emb.numpy(), "embed_t": emb.t().contiguous().numpy()},
                   str(src / "model.safetensors"))  # fmt: skip
    repo.commit(src)
    _, tree = snapshot(repo, "HEAD")
    manifests = {e.path: read_file_manifest(repo.objects, e.manifest) for e in tree.entries}
    pt, sf = manifests["model.pt"], manifests["model.safetensors"]
    assert pt.views  # tied and transposed tensors are views
    assert digest_of(pt, "embed") == digest_of(sf, "embed")
    assert digest_of(pt, "head") == digest_of(sf, "embed")  # tied weight: same content
    assert digest_of(pt, "embed_t") != digest_of(sf, "embed_t")  # a strided view is not that
    assert digest_of(pt, "embed_t") != digest_of(pt, "embed")
    # The tensors read back equal all the same.
    loaded = repo.load_state_dict(file="model.pt")
    np.testing.assert_array_equal(loaded["embed_t"], emb.t().numpy())
    np.testing.assert_array_equal(loaded["other_t"], other.t().numpy())


def test_views_survive_a_round_trip_through_a_repository(repo: Repository, tmp_path: Path) -> None:
    base = torch.arange(24, dtype=torch.float64)
    sd = {
        "a": base[2:14].view(3, 4),
        "b": base[2:14].view(3, 4).t(),
        "c": base[::3],
        "d": base[23],
    }
    torch.save(sd, tmp_path / "m.pt")
    repo.commit(tmp_path / "m.pt")
    _, tree = snapshot(repo, "HEAD")
    m = read_file_manifest(repo.objects, tree.entries[0].manifest)
    assert [s.kind for s in m.segments].count(SegmentKind.STORAGE) == 1
    assert {v.name for v in m.views} == set(sd)
    assert parse_file_manifest(canonical(m)) == m
    doc = copy.deepcopy(json.loads(canonical(m)))
    doc["views"][0]["offset"] = 10**6  # a tampered manifest is refused
    with pytest.raises(ManifestError):
        parse_file_manifest(raw(doc))
    loaded = repo.load_state_dict()
    for name, t in sd.items():
        np.testing.assert_array_equal(loaded[name], t.numpy(), err_msg=name)
        assert loaded[name].shape == tuple(t.shape)
