"""wvc.formats.safetensors: the strict parser, checked against the official library."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.numpy import load, load_file, save, save_file

from wvc.dtypes import DType
from wvc.errors import InputError, MalformedFileError
from wvc.formats import OPAQUE, FileLayout, SegmentSpec, by_name, detect
from wvc.formats.safetensors import (
    MAX_HEADER_SIZE,
    SafetensorsFormat,
    array_dtype,
    build_header,
)

FMT = SafetensorsFormat()
PATH = "ckpt/layer 0/model.safetensors"


def parse_bytes(buf: bytes, path: str = PATH) -> FileLayout:
    return FMT.parse(path, lambda off, n: buf[off : off + n], len(buf))


def parse_file(path: Path) -> FileLayout:
    fd = os.open(path, os.O_RDONLY)
    try:
        return FMT.parse(str(path), lambda off, n: os.pread(fd, n, off), os.fstat(fd).st_size)
    finally:
        os.close(fd)


def header_len(buf: bytes) -> int:
    (n,) = struct.unpack_from("<Q", buf)
    return int(n)


def check_exact_cover(layout: FileLayout, buf: bytes) -> None:
    """The segments start at 0, are contiguous, end at EOF, and tensors have the right size."""
    assert layout.format == "safetensors"
    assert layout.size == len(buf)
    assert layout.segments, "a safetensors file always has a header segment"
    first = layout.segments[0]
    assert first.tensor is None
    assert (first.offset, first.size) == (0, 8 + header_len(buf))
    pos = 0
    for seg in layout.segments:
        assert seg.offset == pos
        assert seg.size >= 0
        pos += seg.size
        if seg.tensor is not None:
            assert seg.tensor.dtype.nbytes(seg.tensor.shape) == seg.size
    assert pos == len(buf)
    assert all(s.tensor is not None for s in layout.segments[1:])


def tensors_by_name(layout: FileLayout) -> dict[str, SegmentSpec]:
    out = {}
    for seg in layout.segments[1:]:
        assert seg.tensor is not None
        assert seg.tensor.name not in out
        out[seg.tensor.name] = seg
    return out


def make_file(header: Any, data: bytes = b"", *, pad: bool = True) -> bytes:
    """A safetensors file from a header (dict or raw JSON bytes) and a data buffer."""
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    if pad:
        text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def refuse(buf: bytes, *fragments: str, path: str = PATH) -> MalformedFileError:
    with pytest.raises(MalformedFileError) as info:
        parse_bytes(buf, path)
    err = info.value
    message = str(err)
    assert message.startswith(f"{path}: malformed safetensors file: "), message
    assert err.path == path
    assert err.format_name == "safetensors"
    assert isinstance(err, InputError)
    for fragment in fragments:
        assert fragment in message, (fragment, message)
        assert fragment in err.problem
    return err


# --- files written by the reference implementation --------------------------

ARRAYS_RNG = np.random.default_rng(42)


def _reference_arrays() -> dict[str, np.ndarray]:
    rng = ARRAYS_RNG
    normal = rng.normal(0, 0.02, 48)
    return {
        "f64": normal[:6].astype(np.float64).reshape(2, 3),
        "f32": normal.astype(np.float32).reshape(4, 3, 4),
        "f16": normal[:10].astype(np.float16),
        "bf16": normal[:12].astype(ml_dtypes.bfloat16).reshape(3, 4),
        "i64": np.arange(-3, 4, dtype=np.int64),
        "i32": np.arange(5, dtype=np.int32),
        "i16": np.arange(7, dtype=np.int16),
        "i8": np.arange(-4, 5, dtype=np.int8),
        "u8": np.arange(11, dtype=np.uint8),
        "u16": np.arange(3, dtype=np.uint16),
        "u32": np.arange(3, dtype=np.uint32),
        "u64": np.arange(3, dtype=np.uint64),
        "bool": np.array([True, False, True]),
        "c64": np.array([1 + 2j, -3j], dtype=np.complex64),
        "f8_e4m3": normal[:5].astype(ml_dtypes.float8_e4m3fn),
        "f8_e5m2": normal[:5].astype(ml_dtypes.float8_e5m2),
        "scalar": np.array(3.25, dtype=np.float32),
        "empty": np.zeros((0,), dtype=np.float32),
        "empty2d": np.zeros((3, 0), dtype=np.int64),
        "empty_bf16": np.zeros((0, 5), dtype=ml_dtypes.bfloat16),
        "name with spaces/and.dots": np.ones(2, dtype=np.float32),
        "ünïcödé": np.ones(1, dtype=np.float16),
    }


REFERENCE_ARRAYS = _reference_arrays()


def _expected_dtype(arr: np.ndarray) -> str:
    return {
        "float64": "F64",
        "float32": "F32",
        "float16": "F16",
        "bfloat16": "BF16",
        "int64": "I64",
        "int32": "I32",
        "int16": "I16",
        "int8": "I8",
        "uint8": "U8",
        "uint16": "U16",
        "uint32": "U32",
        "uint64": "U64",
        "bool": "BOOL",
        "complex64": "C64",
        "float8_e4m3fn": "F8_E4M3",
        "float8_e5m2": "F8_E5M2",
    }[arr.dtype.name]


@pytest.mark.parametrize("metadata", [None, {}, {"format": "pt", "step": "1000", "": ""}])
def test_reference_file_parses_exactly(tmp_path: Path, metadata: dict[str, str] | None) -> None:
    path = tmp_path / "model.safetensors"
    save_file(REFERENCE_ARRAYS, str(path), metadata=metadata)
    buf = path.read_bytes()
    layout = parse_file(path)
    assert layout == parse_bytes(buf, str(path))
    check_exact_cover(layout, buf)

    ref_header = json.loads(buf[8 : 8 + header_len(buf)])
    segs = tensors_by_name(layout)
    assert set(segs) == set(REFERENCE_ARRAYS)
    data_start = 8 + header_len(buf)
    for name, arr in REFERENCE_ARRAYS.items():
        seg = segs[name]
        assert seg.tensor is not None
        assert seg.tensor.dtype.name == _expected_dtype(arr) == ref_header[name]["dtype"]
        assert seg.tensor.shape == arr.shape
        begin, end = ref_header[name]["data_offsets"]
        assert (seg.offset, seg.size) == (data_start + begin, end - begin)
        assert buf[seg.offset : seg.offset + seg.size] == arr.tobytes()
    # Segments come in file order.
    offsets = [s.offset for s in layout.segments]
    assert offsets == sorted(offsets)


@pytest.mark.parametrize("name", sorted(REFERENCE_ARRAYS))
def test_reference_single_tensor(name: str) -> None:
    arr = REFERENCE_ARRAYS[name]
    buf = save({name: arr})
    layout = parse_bytes(buf)
    check_exact_cover(layout, buf)
    assert len(layout.segments) == 2
    seg = layout.segments[1]
    assert seg.tensor is not None
    assert seg.tensor.name == name
    assert seg.tensor.shape == arr.shape
    assert seg.tensor.numel == arr.size
    assert seg.tensor.dtype.name == _expected_dtype(arr)
    if seg.tensor.dtype.value.numpy_name is not None:
        assert seg.tensor.dtype.numpy() == arr.dtype
        assert array_dtype(arr) is seg.tensor.dtype
    assert buf[seg.offset :] == arr.tobytes()


def test_reference_empty_file() -> None:
    buf = save({})
    layout = parse_bytes(buf)
    check_exact_cover(layout, buf)
    assert len(layout.segments) == 1

    buf = save({}, metadata={"only": "metadata"})
    layout = parse_bytes(buf)
    check_exact_cover(layout, buf)
    assert len(layout.segments) == 1


def test_reference_f8_e8m0() -> None:
    arr = np.array([1.0, 2.0, 0.5], dtype=ml_dtypes.float8_e8m0fnu)
    buf = save({"scale": arr})
    layout = parse_bytes(buf)
    check_exact_cover(layout, buf)
    tensor = layout.segments[1].tensor
    assert tensor is not None
    assert tensor.dtype is DType.F8_E8M0
    assert tensor.dtype.numpy() == arr.dtype


@pytest.mark.parametrize(
    ("dtype", "shape", "nbytes"),
    [("F4", [4, 2], 4), ("F6_E2M3", [4], 3), ("F6_E3M2", [8], 6)],
)
def test_sub_byte_dtypes(dtype: str, shape: list[int], nbytes: int) -> None:
    buf = make_file(
        {"t": {"dtype": dtype, "shape": shape, "data_offsets": [0, nbytes]}}, b"\x5a" * nbytes
    )
    layout = parse_bytes(buf)
    check_exact_cover(layout, buf)
    tensor = layout.segments[1].tensor
    assert tensor is not None
    assert tensor.dtype.name == dtype
    assert tensor.shape == tuple(shape)


def test_header_order_differs_from_data_order() -> None:
    header = {
        "second": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
        "__metadata__": {"a": "b"},
        "first": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
        "zero": {"dtype": "F32", "shape": [0], "data_offsets": [12, 12]},
        "third": {"dtype": "I16", "shape": [1, 1], "data_offsets": [12, 14]},
    }
    buf = make_file(header, bytes(range(14)))
    layout = parse_bytes(buf)
    check_exact_cover(layout, buf)
    names = [s.tensor.name for s in layout.segments[1:] if s.tensor]
    assert names == ["first", "second", "zero", "third"]


def test_unpadded_header_and_extra_fields_are_accepted() -> None:
    header = b'{"a":{"dtype":"U8","shape":[3],"data_offsets":[0,3],"extra":1}}'
    assert len(header) % 8 != 0
    buf = make_file(header, b"abc", pad=False)
    check_exact_cover(parse_bytes(buf), buf)


# --- build_header ------------------------------------------------------------


def _build(
    arrays: dict[str, np.ndarray], metadata: dict[str, str] | None = None
) -> tuple[bytes, bytes]:
    specs = {
        name: (DType.from_numpy(a.dtype), tuple(a.shape), a.nbytes) for name, a in arrays.items()
    }
    header = build_header(specs, metadata)
    return header, header + b"".join(np.ascontiguousarray(a).tobytes() for a in arrays.values())


def test_build_header_loads_with_reference(tmp_path: Path) -> None:
    arrays = {k: v for k, v in REFERENCE_ARRAYS.items() if "bf16" not in k and "f8" not in k}
    metadata = {"format": "pt", "note": "wvc"}
    header, buf = _build(arrays, metadata)
    assert (len(header) - 8) % 8 == 0
    assert header_len(buf) == len(header) - 8
    loaded = load(buf)
    assert set(loaded) == set(arrays)
    for name, arr in arrays.items():
        assert loaded[name].dtype == arr.dtype
        assert loaded[name].shape == arr.shape
        np.testing.assert_array_equal(loaded[name], arr)
    path = tmp_path / "built.safetensors"
    path.write_bytes(buf)
    with safe_open(str(path), framework="numpy") as f:
        assert f.metadata() == metadata
        assert set(f.keys()) == set(arrays)
    assert set(load_file(str(path))) == set(arrays)


def test_build_header_ml_dtypes_load_with_reference(tmp_path: Path) -> None:
    arrays = {
        "bf16": REFERENCE_ARRAYS["bf16"],
        "f8a": REFERENCE_ARRAYS["f8_e4m3"],
        "f8b": REFERENCE_ARRAYS["f8_e5m2"],
        "f32": REFERENCE_ARRAYS["f32"],
        "empty_bf16": REFERENCE_ARRAYS["empty_bf16"],
    }
    _, buf = _build(arrays)
    path = tmp_path / "ml.safetensors"
    path.write_bytes(buf)
    _check_with_reference(path, arrays, None)


def _check_with_reference(
    path: Path, arrays: dict[str, np.ndarray], metadata: dict[str, str] | None
) -> None:
    """Open with the reference reader (which validates the layout) and compare every tensor.

    The reference numpy binding cannot materialize float8 tensors, so for those the dtype
    and shape come from ``get_slice`` and the bytes from the offsets the reference reports.
    """
    buf = path.read_bytes()
    ref_header = json.loads(buf[8 : 8 + header_len(buf)])
    data_start = 8 + header_len(buf)
    with safe_open(str(path), framework="numpy") as f:
        assert (f.metadata() or {}) == (metadata or {})
        assert set(f.keys()) == set(arrays)
        for name, arr in arrays.items():
            dtype = DType.from_numpy(arr.dtype)
            sl = f.get_slice(name)
            assert sl.get_dtype() == dtype.name
            assert tuple(sl.get_shape()) == arr.shape
            if dtype.name.startswith("F8"):
                begin, end = ref_header[name]["data_offsets"]
                got_bytes = buf[data_start + begin : data_start + end]
            else:
                got = f.get_tensor(name)
                assert got.dtype == arr.dtype
                assert got.shape == arr.shape
                got_bytes = got.tobytes()
            assert got_bytes == arr.tobytes()


def test_build_header_parses_to_the_same_layout() -> None:
    arrays = {"a": REFERENCE_ARRAYS["f32"], "b": REFERENCE_ARRAYS["scalar"], "c": np.zeros(0)}
    header, buf = _build(arrays, {"k": "v"})
    layout = parse_bytes(buf)
    check_exact_cover(layout, buf)
    assert [s.tensor.name for s in layout.segments[1:] if s.tensor] == ["a", "b", "c"]
    assert layout.segments[0].size == len(header)


def test_build_header_matches_reference_bytes() -> None:
    # For tensors already in the reference writer's order, the bytes are identical.
    arrays = {"w": np.ones((2, 2), dtype=np.float32), "x": np.zeros(3, dtype=np.float32)}
    _, buf = _build(arrays)
    assert buf == save(arrays)


@st.composite
def _arrays(draw: st.DrawFn) -> dict[str, np.ndarray]:
    dtypes = [d for d in DType if d.value.numpy_name is not None]
    names = draw(
        st.lists(
            st.text(min_size=1, max_size=12).filter(lambda s: s != "__metadata__"),
            max_size=6,
            unique=True,
        )
    )
    out = {}
    for name in names:
        dt = draw(st.sampled_from(dtypes))
        shape = tuple(draw(st.lists(st.integers(0, 4), max_size=3)))
        n = int(np.prod(shape))
        if dt is DType.BOOL:
            raw = bytes(draw(st.lists(st.integers(0, 1), min_size=n, max_size=n)))
        else:
            raw = draw(st.binary(min_size=n * dt.itemsize, max_size=n * dt.itemsize))
        out[name] = np.frombuffer(raw, dtype=dt.numpy()).reshape(shape)
    return out


@given(
    arrays=_arrays(),
    metadata=st.none() | st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3),
)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_build_header_round_trip(
    tmp_path_factory: pytest.TempPathFactory,
    arrays: dict[str, np.ndarray],
    metadata: dict[str, str] | None,
) -> None:
    _, buf = _build(arrays, metadata)
    layout = parse_bytes(buf)
    check_exact_cover(layout, buf)
    segs = tensors_by_name(layout)
    assert set(segs) == set(arrays)
    for name, arr in arrays.items():
        seg = segs[name]
        assert buf[seg.offset : seg.offset + seg.size] == arr.tobytes()
    path = tmp_path_factory.mktemp("rt") / "x.safetensors"
    path.write_bytes(buf)
    _check_with_reference(path, arrays, metadata)


# --- malformed files ----------------------------------------------------------


def _t(dtype: str = "F32", shape: Any = (2,), offsets: Any = (0, 8)) -> dict[str, Any]:
    return {
        "dtype": dtype,
        "shape": list(shape) if isinstance(shape, tuple) else shape,
        "data_offsets": list(offsets) if isinstance(offsets, tuple) else offsets,
    }


@pytest.mark.parametrize("size", range(8))
def test_file_too_small(size: int) -> None:
    refuse(b"\x00" * size, f"file is {size} bytes", "too small for the 8-byte header length")


def test_header_length_over_cap() -> None:
    buf = struct.pack("<Q", MAX_HEADER_SIZE + 1) + b"{}" + b" " * 6
    refuse(buf, f"header length {MAX_HEADER_SIZE + 1}", "exceeds the 100000000-byte limit")
    refuse(struct.pack("<Q", 2**64 - 1) + b"{}", "exceeds the 100000000-byte limit")
    assert MAX_HEADER_SIZE == 100_000_000


def test_header_past_eof() -> None:
    refuse(
        struct.pack("<Q", 100) + b"{}", "header length 100 runs past the end of the 10-byte file"
    )
    refuse(struct.pack("<Q", 1), "header length 1 runs past the end of the 8-byte file")
    good = make_file({"a": _t()}, bytes(8))
    refuse(good[: 8 + header_len(good) - 1], "runs past the end")


def test_header_shorter_than_claimed_while_reading() -> None:
    # The file shrank between stat and read: the header read comes back short.
    buf = make_file({"a": _t()}, bytes(8))
    with pytest.raises(MalformedFileError, match="changed while reading"):
        FMT.parse(PATH, lambda off, n: buf[off : off + (n if off == 0 else n // 2)], len(buf))


def test_length_field_shorter_than_claimed_while_reading() -> None:
    # Same, for the 8-byte length field: refused as malformed, not a struct.error.
    buf = make_file({"a": _t()}, bytes(8))
    with pytest.raises(MalformedFileError) as info:
        FMT.parse(PATH, lambda off, n: buf[off : off + n][:4], len(buf))
    assert str(info.value).startswith(f"{PATH}: malformed safetensors file: ")


@pytest.mark.parametrize(
    "header",
    [b"[1, 2, 3]", b' {"a": 1}', b"\n{}", b"", b"null", b'"{}"', b"\xef\xbb\xbf{}"],
    ids=["list", "leading-space", "leading-newline", "empty", "null", "string", "bom"],
)
def test_header_not_starting_with_brace(header: bytes) -> None:
    refuse(make_file(header, pad=False), "header does not start with '{'")


@pytest.mark.parametrize(
    "header",
    [
        b"{not json}",
        b'{"a": }',
        b'{"a": {"dtype": "F32"}',
        b"{'a': 1}",
        b"{} {}",
        b'{"a": 1} x',
        b'{"\xff\xfe": {}}',
        b'{"a": "\xc3"}',
        b"{\x00}",
    ],
    ids=[
        "bare",
        "missing-value",
        "unclosed",
        "single-quotes",
        "two-objects",
        "garbage-after",
        "bad-utf8",
        "truncated-utf8",
        "nul",
    ],
)
def test_header_not_json(header: bytes) -> None:
    refuse(make_file(header), "header is not valid JSON")


@pytest.mark.parametrize(
    "header",
    [
        b'{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},'
        b'"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}',
        b'{"a":{"dtype":"U8","dtype":"U8","shape":[2],"data_offsets":[0,2]}}',
        b'{"__metadata__":{"k":"1","k":"2"},"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}',
        b'{"__metadata__":{},"__metadata__":{},"a":{"dtype":"U8","shape":[2],'
        b'"data_offsets":[0,2]}}',
    ],
    ids=["tensor", "field", "metadata-key", "metadata"],
)
def test_duplicate_keys(header: bytes) -> None:
    refuse(make_file(header, b"xy"), "duplicate key")


def test_duplicate_key_names_the_key() -> None:
    header = (
        b'{"w.0":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},'
        b'"w.0":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}'
    )
    refuse(make_file(header, b"xy"), "duplicate key 'w.0'")


@pytest.mark.parametrize(
    ("dtype", "fragment"),
    [
        ("F128", "unknown dtype 'F128'"),
        ("f32", "unknown dtype 'f32'"),
        ("float32", "unknown dtype 'float32'"),
        ("", "unknown dtype ''"),
        ("__class__", "unknown dtype '__class__'"),
        (None, "missing dtype"),
        (32, "missing dtype"),
        (["F32"], "missing dtype"),
    ],
)
def test_bad_dtype(dtype: Any, fragment: str) -> None:
    refuse(make_file({"w": _t(dtype=dtype)}, bytes(8)), "tensor 'w'", fragment)


def test_missing_dtype_field() -> None:
    refuse(make_file({"w": {"shape": [2], "data_offsets": [0, 8]}}, bytes(8)), "missing dtype")


@pytest.mark.parametrize(
    "shape",
    [[-1], [2, -1], [2.0], [1.5], [True], [True, True], [False], "2", 2, None, [[2]], ["2"], {}],
    ids=repr,
)
def test_bad_shape(shape: Any) -> None:
    refuse(
        make_file({"w": _t(shape=shape)}, bytes(8)),
        "tensor 'w'",
        "shape must be a list of non-negative integers",
    )


@pytest.mark.parametrize(
    "offsets",
    [
        [0],
        [],
        [0, 8, 8],
        [8, 0],
        [5, 4],
        [-1, 7],
        [0.0, 8.0],
        [0, 8.0],
        [False, 8],
        [0, True],
        "0,8",
        None,
        {"begin": 0, "end": 8},
        [None, 8],
    ],
    ids=repr,
)
def test_bad_data_offsets(offsets: Any) -> None:
    refuse(
        make_file({"w": _t(offsets=offsets)}, bytes(8)),
        "tensor 'w'",
        "data_offsets must be [begin, end] with begin <= end",
    )


def test_missing_fields() -> None:
    refuse(make_file({"w": {"dtype": "F32", "data_offsets": [0, 8]}}, bytes(8)), "shape must be")
    refuse(make_file({"w": {"dtype": "F32", "shape": [2]}}, bytes(8)), "data_offsets must be")


@pytest.mark.parametrize("entry", [[1, 2], "F32", 3, None, True])
def test_entry_not_an_object(entry: Any) -> None:
    refuse(make_file({"w": entry}, bytes(8)), "tensor 'w': entry is not an object")


@pytest.mark.parametrize(
    ("dtype", "shape", "offsets", "fragment"),
    [
        ("F32", [3], [0, 8], "F32 x [3] is 12 bytes but data_offsets span 8"),
        ("F32", [2], [0, 9], "F32 x [2] is 8 bytes but data_offsets span 9"),
        ("F32", [], [0, 0], "F32 x [] is 4 bytes but data_offsets span 0"),
        ("F32", [0], [0, 4], "F32 x [0] is 0 bytes but data_offsets span 4"),
        ("BF16", [2, 2], [0, 4], "BF16 x [2, 2] is 8 bytes but data_offsets span 4"),
        ("F32", [2**62, 2**62], [0, 8], "but data_offsets span 8"),
    ],
)
def test_size_mismatch(dtype: str, shape: list[int], offsets: list[int], fragment: str) -> None:
    refuse(make_file({"w": _t(dtype, shape, offsets)}, bytes(offsets[1])), "tensor 'w'", fragment)


@pytest.mark.parametrize(("dtype", "n"), [("F4", 3), ("F4", 1), ("F6_E2M3", 2), ("F6_E3M2", 3)])
def test_sub_byte_not_whole_bytes(dtype: str, n: int) -> None:
    refuse(
        make_file({"w": _t(dtype, [n], [0, n])}, bytes(n)),
        f"tensor 'w': {dtype} x [{n}] is not a whole number of bytes",
    )


def test_overlap() -> None:
    header = {"a": _t("U8", [8], [0, 8]), "b": _t("U8", [8], [4, 12])}
    refuse(make_file(header, bytes(12)), "tensor 'b' overlaps the previous tensor")
    header = {"a": _t("U8", [8], [0, 8]), "b": _t("U8", [8], [0, 8])}
    refuse(make_file(header, bytes(16)), "overlaps the previous tensor")
    # A zero-length tensor inside another one's bytes.
    header = {"a": _t("U8", [8], [0, 8]), "z": _t("U8", [0], [3, 3])}
    refuse(make_file(header, bytes(8)), "tensor 'z' overlaps the previous tensor")


def test_hole() -> None:
    header = {"a": _t("U8", [4], [0, 4]), "b": _t("U8", [4], [8, 12])}
    refuse(make_file(header, bytes(12)), "hole in the data buffer before tensor 'b' at 8")
    refuse(make_file({"a": _t("U8", [4], [2, 6])}, bytes(6)), "hole", "before tensor 'a' at 2")


def test_trailing_bytes() -> None:
    refuse(make_file({"a": _t()}, bytes(12)), "data buffer has 4 bytes after the last tensor")
    refuse(make_file({}, b"x"), "data buffer has 1 bytes after the last tensor")
    refuse(make_file({"__metadata__": {"a": "b"}}, bytes(3)), "3 bytes after the last tensor")
    good = save({"w": np.ones(4, dtype=np.float32)})
    refuse(good + b"\0", "1 bytes after the last tensor")


def test_offsets_past_buffer() -> None:
    refuse(make_file({"a": _t("U8", [16], [0, 16])}, bytes(8)), "tensor 'a' ends at 16")
    refuse(make_file({"a": _t("U8", [16], [0, 16])}, bytes(8)), "past the 8-byte buffer")
    header = {"a": _t("U8", [4], [0, 4]), "b": _t("U8", [2**40], [4, 4 + 2**40])}
    refuse(make_file(header, bytes(8)), "tensor 'b' ends at", "past the 8-byte buffer")
    good = save({"w": np.ones(4, dtype=np.float32)})
    refuse(good[:-1], "past the 15-byte buffer")


@pytest.mark.parametrize(
    "metadata",
    [{"a": 1}, {"a": None}, {"a": ["b"]}, {"a": {"b": "c"}}, {"a": True}, [], "x", None, 5],
    ids=repr,
)
def test_metadata_not_str_to_str(metadata: Any) -> None:
    refuse(make_file({"__metadata__": metadata}), "__metadata__ must map strings to strings")


def test_message_names_the_given_path() -> None:
    for path in ["a.safetensors", "deep/dir/x.safetensors", "weird name ü.safetensors"]:
        err = refuse(b"abc", "too small", path=path)
        assert err.path == path


def test_deeply_nested_header_is_refused() -> None:
    # Hostile input must be refused with MalformedFileError, not crash the JSON decoder.
    depth = 200_000
    header = b'{"__metadata__":' + b"[" * depth + b"]" * depth + b"}"
    refuse(make_file(header), "header")


def test_huge_integer_literal_is_refused() -> None:
    header = b'{"a":{"dtype":"U8","shape":[' + b"9" * 5000 + b'],"data_offsets":[0,1]}}'
    refuse(make_file(header, b"x"))


def test_nan_and_infinity_in_header_are_refused() -> None:
    refuse(make_file(b'{"a":{"dtype":"U8","shape":[NaN],"data_offsets":[0,1]}}', b"x"), "shape")
    refuse(make_file(b'{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,Infinity]}}', b"x"))


# --- fuzzing ----------------------------------------------------------------

SEED_FILES = [
    save(
        {
            "w": np.arange(6, dtype=np.float32).reshape(2, 3),
            "b": np.array([1, 2], dtype=np.int16),
            "s": np.array(7, dtype=np.uint8),
            "e": np.zeros(0, dtype=np.float64),
        },
        metadata={"format": "pt"},
    ),
    save({"x": np.ones((2, 2), dtype=ml_dtypes.bfloat16)}),
    make_file(
        {"q": _t("F4", [4], [0, 2]), "r": _t("U8", [3], [2, 5]), "z": _t("I64", [0], [5, 5])},
        b"abcde",
        pad=False,
    ),
]


@st.composite
def _mutated(draw: st.DrawFn) -> bytes:
    buf = bytearray(draw(st.sampled_from(SEED_FILES)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "truncate", "insert", "delete"]))
        if not buf:
            break
        pos = draw(st.integers(0, len(buf) - 1))
        if op == "flip":
            buf[pos] ^= draw(st.integers(1, 255))
        elif op == "set":
            buf[pos] = draw(st.sampled_from(b'{}[]",:0123456789-.eE tfn\\\x00\xff'))
        elif op == "truncate":
            del buf[pos:]
        elif op == "insert":
            buf[pos:pos] = draw(st.binary(min_size=1, max_size=4))
        else:
            del buf[pos : pos + draw(st.integers(1, 4))]
    return bytes(buf)


@given(buf=_mutated())
@settings(max_examples=400, deadline=None)
def test_mutated_files_parse_exactly_or_are_refused(buf: bytes) -> None:
    try:
        layout = parse_bytes(buf)
    except MalformedFileError as e:
        assert str(e).startswith(f"{PATH}: malformed safetensors file: ")
        return
    check_exact_cover(layout, buf)


@pytest.mark.parametrize("seed", range(len(SEED_FILES)))
def test_every_truncation_of_a_valid_file_is_refused(seed: int) -> None:
    buf = SEED_FILES[seed]
    check_exact_cover(parse_bytes(buf), buf)
    for cut in range(len(buf)):
        with pytest.raises(MalformedFileError):
            parse_bytes(buf[:cut])


# --- format registry ----------------------------------------------------------


def test_detect_and_by_name() -> None:
    assert detect("model.safetensors").name == "safetensors"
    assert detect("a/b/model-00001-of-00002.safetensors").name == "safetensors"
    assert detect("model.safetensors.index.json").name == "hf-index"
    assert detect("pytorch_model.bin").name == "pytorch"
    assert detect("config.json") is OPAQUE
    assert detect("model.SAFETENSORS.bak") is OPAQUE
    assert by_name("safetensors").name == "safetensors"
    assert by_name("opaque") is OPAQUE
    with pytest.raises(KeyError):
        by_name("pickle")


def test_opaque_format() -> None:
    assert OPAQUE.parse("x.bin", lambda o, n: b"", 0) == FileLayout("opaque", 0, ())
    assert OPAQUE.parse("x.bin", lambda o, n: b"", 123) == FileLayout(
        "opaque", 123, (SegmentSpec(0, 123),)
    )
