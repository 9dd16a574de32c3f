"""wvc.formats.numpy: .npy and .npz files written by numpy itself.

Plain little-endian, row-major arrays become tensors (named by the file stem,
or by the .npz entry name); anything else (Fortran order, big-endian,
strings, records, objects, compressed entries) is stored opaque with a
warning. Either way restore is byte-identical and nothing is ever unpickled.
"""

from __future__ import annotations

import io
import os
import struct
import zipfile
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from layout_checks import check_exact_cover

from wvc import Repository
from wvc.dtypes import DType
from wvc.errors import MalformedFileError
from wvc.formats import FileLayout, detect
from wvc.formats.numpy import NpyFormat, NpzFormat

NPY = NpyFormat()
NPZ = NpzFormat()


def parse_npy(buf: bytes, path: str = "dir/weights.npy") -> FileLayout:
    return NPY.parse(path, lambda off, n: buf[off : off + n], len(buf))


def parse_npz(buf: bytes, path: str = "arrays.npz") -> FileLayout:
    return NPZ.parse(path, lambda off, n: buf[off : off + n], len(buf))


def npy_bytes(a: np.ndarray, version: tuple[int, int] | None = None, **kwargs: Any) -> bytes:
    out = io.BytesIO()
    if version is None:
        np.save(out, a, **kwargs)
    else:
        np.lib.format.write_array(out, a, version=version, **kwargs)
    return out.getvalue()


def make_npy(header: str | bytes, data: bytes = b"", major: int = 1) -> bytes:
    """An .npy file with a header of our choosing (padded like numpy pads it)."""
    raw = header.encode("latin1") if isinstance(header, str) else header
    pre = 10 if major == 1 else 12
    raw += b" " * (-(len(raw) + pre + 1) % 64) + b"\n"
    length = struct.pack("<H", len(raw)) if major == 1 else struct.pack("<I", len(raw))
    return b"\x93NUMPY" + bytes([major, 0]) + length + raw + data


def refuse(buf: bytes, *fragments: str) -> None:
    with pytest.raises(MalformedFileError) as info:
        parse_npy(buf)
    message = str(info.value)
    assert message.startswith("dir/weights.npy: malformed npy file: "), message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def bits(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a).reshape(-1).view(np.uint8).tobytes()


# --- .npy tensors -------------------------------------------------------------------

TENSOR_DTYPES = {
    np.bool_: DType.BOOL, np.uint8: DType.U8, np.int8: DType.I8, np.uint16: DType.U16,
    np.int16: DType.I16, np.uint32: DType.U32, np.int32: DType.I32, np.uint64: DType.U64,
    np.int64: DType.I64, np.float16: DType.F16, np.float32: DType.F32, np.float64: DType.F64,
    np.complex64: DType.C64,
}  # fmt: skip
SHAPES = [(), (0,), (2, 0, 3), (7,), (3, 4), (2, 1, 3, 2)]


def sample(rng: np.random.Generator, np_type: Any, shape: tuple[int, ...]) -> np.ndarray:
    raw = rng.integers(0, 256, size=int(np.prod(shape)) * np.dtype(np_type).itemsize)
    a = raw.astype(np.uint8).view(np_type).reshape(shape)
    if np_type is np.bool_:
        a = (raw.astype(np.uint8) & 1).astype(np.bool_).reshape(shape)
    return a


@pytest.mark.parametrize("np_type", list(TENSOR_DTYPES), ids=lambda t: np.dtype(t).name)
@pytest.mark.parametrize("shape", SHAPES, ids=repr)
def test_npy_tensor(rng: np.random.Generator, np_type: Any, shape: tuple[int, ...]) -> None:
    a = sample(rng, np_type, shape)
    buf = npy_bytes(a)
    layout = parse_npy(buf)
    check_exact_cover(layout, len(buf))
    assert layout.warnings == ()
    assert layout.format == "npy"
    tensors = [s for s in layout.segments if s.tensor is not None]
    assert len(tensors) == 1
    seg = tensors[0]
    assert seg.tensor is not None
    assert seg.tensor.name == "weights"
    assert seg.tensor.dtype is TENSOR_DTYPES[np_type]
    assert seg.tensor.shape == shape
    assert seg.offset + seg.size == len(buf)
    assert buf[seg.offset :] == a.tobytes()
    assert [s.tensor for s in layout.segments[:1]] == [None]


@pytest.mark.parametrize("version", [(1, 0), (2, 0), (3, 0)])
def test_npy_versions(rng: np.random.Generator, version: tuple[int, int]) -> None:
    a = rng.standard_normal((5, 3)).astype(np.float32)
    buf = npy_bytes(a, version)
    assert buf[6:8] == bytes(version)
    layout = parse_npy(buf)
    check_exact_cover(layout, len(buf))
    seg = layout.segments[-1]
    assert seg.tensor is not None and seg.tensor.shape == (5, 3)
    assert buf[seg.offset :] == a.tobytes()


def test_fortran_order_with_one_long_axis_is_a_tensor() -> None:
    # fortran_order=True means nothing for arrays with at most one axis longer than 1.
    a = np.arange(5, dtype=np.int32)
    header = "{'descr': '<i4', 'fortran_order': True, 'shape': (1, 5, 1), }"
    buf = make_npy(header, a.tobytes())
    assert np.array_equal(np.load(io.BytesIO(buf)), a.reshape(1, 5, 1))
    layout = parse_npy(buf)
    assert layout.warnings == ()
    assert layout.segments[-1].tensor is not None


def test_npy_commit_restore_load(
    repo: Repository, tmp_path: Path, rng: np.random.Generator
) -> None:
    d = tmp_path / "ckpt"
    (d / "sub").mkdir(parents=True)
    arrays = {
        "sub/embed.npy": rng.standard_normal((16, 8)).astype(np.float32),
        "scale.npy": np.array(0.5, dtype=np.float16),
        "mask.npy": np.array([True, False, True]),
        "cplx.npy": np.array([1 + 2j, -1j], dtype=np.complex64),
        "empty.npy": np.zeros((0, 3), dtype=np.int64),
    }
    for rel, a in arrays.items():
        np.save(d / rel, a)
    result = repo.commit(d, "npy")
    assert result.warnings == ()
    assert result.tensors == len(arrays)
    repo.restore(result.id, tmp_path / "out")
    for rel in arrays:
        assert (tmp_path / "out" / rel).read_bytes() == (d / rel).read_bytes()
    loaded = repo.load(result.id)
    assert set(loaded) == {"embed", "scale", "mask", "cplx", "empty"}
    for rel, a in arrays.items():
        name = Path(rel).stem
        assert loaded[name].dtype == a.dtype and loaded[name].shape == a.shape
        assert bits(loaded[name]) == bits(a)
        single = repo.load(result.id, file=rel)
        assert list(single) == [name]
    assert detect("x/y.npy").name == "npy" and detect("x/y.npz").name == "npz"


# --- .npy stored opaque ---------------------------------------------------------------


class _SystemCall:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (self.command,))


OPAQUE_ARRAYS: dict[str, tuple[np.ndarray, str]] = {
    "fortran": (np.asfortranarray(np.arange(12, dtype=np.float32).reshape(3, 4)), "Fortran"),
    "big-endian": (np.arange(6, dtype=">f4").reshape(2, 3), "big-endian dtype >f4"),
    "big-endian-i2": (np.arange(3, dtype=">i2"), "big-endian"),
    "unicode": (np.array(["ab", "ünï"]), "<U3"),
    "bytes": (np.array([b"ab", b"c"]), "|S2"),
    "record": (np.zeros(3, dtype=[("a", "<f4"), ("b", "<i2")]), "not a tensor element type"),
    "complex128": (np.array([1 + 1j]), "<c16"),
    "bfloat16": (np.ones(3, dtype=ml_dtypes.bfloat16), "<V2"),
    "datetime": (np.zeros(2, dtype="datetime64[ns]"), "stored opaque"),
}


@pytest.mark.parametrize("key", list(OPAQUE_ARRAYS))
def test_npy_opaque_with_warning(repo: Repository, tmp_path: Path, key: str) -> None:
    a, fragment = OPAQUE_ARRAYS[key]
    buf = npy_bytes(a)
    layout = parse_npy(buf)
    assert [(s.offset, s.size, s.tensor) for s in layout.segments] == [(0, len(buf), None)]
    (warning,) = layout.warnings
    assert fragment in warning and "stored opaque" in warning
    (tmp_path / "a.npy").write_bytes(buf)
    result = repo.commit(tmp_path / "a.npy", key)
    assert len(result.warnings) == 1
    assert repo.load(result.id) == {}
    repo.restore(result.id, tmp_path / "out")
    assert (tmp_path / "out" / "a.npy").read_bytes() == buf


def test_object_array_is_never_unpickled(repo: Repository, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    a = np.array([_SystemCall(f"touch {marker}"), None], dtype=object)
    buf = npy_bytes(a, allow_pickle=True)
    layout = parse_npy(buf)
    assert [(s.offset, s.size) for s in layout.segments] == [(0, len(buf))]
    (warning,) = layout.warnings
    assert "object array" in warning
    (tmp_path / "obj.npy").write_bytes(buf)
    result = repo.commit(tmp_path / "obj.npy", "objects")
    assert result.warnings and repo.load(result.id) == {}
    repo.restore(result.id, tmp_path / "out")
    assert (tmp_path / "out" / "obj.npy").read_bytes() == buf
    repo.show(result.id)
    assert not marker.exists()
    np.load(io.BytesIO(buf), allow_pickle=True)  # the payload is live
    assert marker.exists()


# --- malformed .npy ------------------------------------------------------------------

GOOD_HEADER = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }"


def test_make_npy_helper_matches_numpy() -> None:
    buf = make_npy(GOOD_HEADER, np.array([1, 2], dtype=np.float32).tobytes())
    assert np.array_equal(np.load(io.BytesIO(buf)), [1, 2])
    assert parse_npy(buf).segments[-1].tensor is not None
    buf2 = make_npy(GOOD_HEADER, np.array([1, 2], dtype=np.float32).tobytes(), major=2)
    assert np.array_equal(np.load(io.BytesIO(buf2)), [1, 2])
    assert parse_npy(buf2).segments[-1].tensor is not None


@pytest.mark.parametrize(
    ("buf", "fragment"),
    [
        (b"", "too small"),
        (b"\x93NUMPY\x01\x00\x00", "too small"),
        (b"\x93NUMPX\x01\x00" + bytes(60), "magic"),
        (b"PK\x03\x04" + bytes(60), "magic"),
        (b"\x93NUMPY\x04\x00" + bytes(60), "unsupported .npy version 4.0"),
        (b"\x93NUMPY\x00\x00" + bytes(60), "unsupported .npy version 0.0"),
        (b"\x93NUMPY\x02\x00\x00\x00", "too small for a version 2 header"),
        (b"\x93NUMPY\x01\x00\xff\xff{}", "header length 65535 is out of bounds"),
        (b"\x93NUMPY\x02\x00\xff\xff\xff\x00{}", "out of bounds"),
    ],
)
def test_bad_preamble(buf: bytes, fragment: str) -> None:
    refuse(buf, fragment)


@pytest.mark.parametrize(
    ("header", "fragment"),
    [
        ("[1, 2, 3]", "exactly descr, fortran_order and shape"),
        ("'a string'", "exactly descr"),
        ("{'descr': '<f4', 'fortran_order': False}", "exactly descr"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'extra': 1}", "exactly descr"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (-2,)}", "non-negative integers"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': [2]}", "tuple of non-negative"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (2.0,)}", "tuple of non-negative"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (True,)}", "tuple of non-negative"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (2**62,)}", "not a Python literal"),
        ("{'descr': '<f4', 'fortran_order': 0, 'shape': (2,)}", "fortran_order must be"),
        ("{'descr': '<f4', 'fortran_order': 'no', 'shape': (2,)}", "fortran_order must be"),
        ("{'descr': '<q9', 'fortran_order': False, 'shape': (2,)}", "unknown descr '<q9'"),
        ("{'descr': 5, 'fortran_order': False, 'shape': (2,)}", "is not a data type"),
        ("{'descr': [('a', 'O')], 'fortran_order': False, 'shape': (2,)}", "without objects"),
        (
            "{'descr': [('a', '<f4'), ('a', '<f4')], 'fortran_order': False, 'shape': (2,)}",
            "not a data type",
        ),
        ("__import__('os').system('touch /tmp/x')", "not a Python literal dict"),
        ("{'descr': __import__('os'), 'fortran_order': False, 'shape': (2,)}", "literal"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (2,)", "not a Python literal"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (" + "9" * 5000 + ",)}", "literal"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (2**31, 2**31, 2**31)}", "literal"),
        (
            "{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387903,"
            " 4611686018427387903)}",
            "overflows",
        ),
    ],
)
def test_bad_header(header: str, fragment: str) -> None:
    refuse(make_npy(header, bytes(8)), fragment)


@pytest.mark.parametrize(
    ("header", "fragment"),
    [
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), {}: 1}", "literal"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': {(), []}}", "literal"),
        ("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), []: 1}", "literal"),
        ("{'descr': ',<f4', 'fortran_order': False, 'shape': (2,)}", "descr"),
        ("{'descr': 'f4,,', 'fortran_order': False, 'shape': (2,)}", "descr"),
        ("{'descr': 'f4,(2', 'fortran_order': False, 'shape': (2,)}", "descr"),
    ],
    ids=[
        "dict-key",
        "set-of-list",
        "list-key",
        "descr-leading-comma",
        "descr-double-comma",
        "descr-open-paren",
    ],
)
def test_header_that_python_parsers_choke_on_is_malformed(header: str, fragment: str) -> None:
    # ast.literal_eval raises TypeError for unhashable keys; np.dtype raises SyntaxError
    # for broken comma-separated record descrs. Both must become MalformedFileError.
    refuse(make_npy(header, bytes(8)), fragment)


def test_comma_separated_record_descr_is_opaque() -> None:
    buf = make_npy("{'descr': '<f4,<i4', 'fortran_order': False, 'shape': (2,)}", bytes(16))
    layout = parse_npy(buf)
    assert [(s.offset, s.size) for s in layout.segments] == [(0, len(buf))]
    (warning,) = layout.warnings
    assert "not a tensor element type" in warning


def test_deeply_nested_header() -> None:
    header = "{'descr': " + "(" * 100_000 + ")" * 100_000 + ", 'fortran_order': False}"
    refuse(make_npy(header, major=2), "not a Python literal dict")


def test_header_encodings() -> None:
    # Version 1 and 2 headers are latin-1, version 3 is UTF-8.
    bad_utf8 = b"{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }" + b"\xff"
    refuse(make_npy(bad_utf8, bytes(8), major=3), "not a Python literal dict")


@pytest.mark.parametrize("delta", [-1, -4, 1, 8])
def test_data_size_mismatch(delta: int) -> None:
    buf = npy_bytes(np.arange(4, dtype=np.float32))
    buf = buf[:delta] if delta < 0 else buf + bytes(delta)
    refuse(buf, "header says 16 data bytes")


def test_every_truncation_is_refused() -> None:
    buf = npy_bytes(np.arange(4, dtype=np.int16))
    for cut in range(len(buf)):
        with pytest.raises(MalformedFileError):
            parse_npy(buf[:cut])


def test_commit_of_malformed_npy_is_refused(repo: Repository, tmp_path: Path) -> None:
    (tmp_path / "x.npy").write_bytes(make_npy("{'descr': '<f4'}", bytes(4)))
    with pytest.raises(MalformedFileError, match="malformed npy file"):
        repo.commit(tmp_path / "x.npy", "bad")


# --- .npz ----------------------------------------------------------------------------


def npz_arrays(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "w": rng.standard_normal((4, 5)).astype(np.float32),
        "b": np.arange(3, dtype=np.int64),
        "flag": np.array(True),
        "half": rng.standard_normal(7).astype(np.float16),
        "empty": np.zeros((0, 2), dtype=np.uint8),
        "layer.0/weight": np.ones((2, 2), dtype=np.float64),
    }


def test_npz_stored(repo: Repository, tmp_path: Path, rng: np.random.Generator) -> None:
    arrays = npz_arrays(rng)
    path = tmp_path / "arrays.npz"
    np.savez(path, **arrays)
    buf = path.read_bytes()
    layout = parse_npz(buf)
    check_exact_cover(layout, len(buf))
    assert layout.warnings == ()
    assert layout.format == "npz"
    segs = {s.tensor.name: s for s in layout.segments if s.tensor is not None}
    assert set(segs) == set(arrays)
    for name, a in arrays.items():
        seg = segs[name]
        assert seg.tensor is not None and seg.tensor.shape == a.shape
        assert buf[seg.offset : seg.offset + seg.size] == a.tobytes()

    result = repo.commit(path, "npz")
    assert result.warnings == () and result.tensors == len(arrays)
    repo.restore(result.id, tmp_path / "out")
    assert (tmp_path / "out" / "arrays.npz").read_bytes() == buf
    loaded = repo.load(result.id, file="arrays.npz")
    with np.load(path) as ref:
        assert set(loaded) == set(ref.files)
        for name in ref.files:
            assert loaded[name].dtype == ref[name].dtype
            assert loaded[name].shape == ref[name].shape
            assert bits(loaded[name]) == bits(ref[name])


def test_npz_positional_names(tmp_path: Path) -> None:
    path = tmp_path / "pos.npz"
    np.savez(path, np.ones(2, dtype=np.float32), np.zeros(3, dtype=np.int8))
    layout = parse_npz(path.read_bytes())
    assert sorted(s.tensor.name for s in layout.segments if s.tensor) == ["arr_0", "arr_1"]


def test_npz_compressed_is_opaque(
    repo: Repository, tmp_path: Path, rng: np.random.Generator
) -> None:
    arrays = npz_arrays(rng)
    path = tmp_path / "c.npz"
    np.savez_compressed(path, **arrays)
    buf = path.read_bytes()
    layout = parse_npz(buf)
    check_exact_cover(layout, len(buf))
    assert all(s.tensor is None for s in layout.segments)
    (warning,) = layout.warnings
    assert "w.npy (compressed)" in warning and f"and {len(arrays) - 3} more" in warning
    result = repo.commit(path, "compressed")
    assert len(result.warnings) == 1
    assert repo.load(result.id, file="c.npz") == {}
    repo.restore(result.id, tmp_path / "out")
    assert (tmp_path / "out" / "c.npz").read_bytes() == buf


def test_npz_mixed_entries(tmp_path: Path) -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("good.npy", npy_bytes(np.arange(3, dtype=np.int32)))
        z.writestr("be.npy", npy_bytes(np.arange(3, dtype=">i4")))
        z.writestr("obj.npy", npy_bytes(np.array([None]), allow_pickle=True))
        z.writestr("packed.npy", npy_bytes(np.ones(4)), compress_type=zipfile.ZIP_DEFLATED)
        z.writestr("README.txt", b"not an array")
    buf = out.getvalue()
    layout = parse_npz(buf)
    check_exact_cover(layout, len(buf))
    assert [s.tensor.name for s in layout.segments if s.tensor] == ["good"]
    (warning,) = layout.warnings
    for fragment in ["be.npy (big-endian", "obj.npy (object array", "packed.npy (compressed)"]:
        assert fragment in warning


def test_npz_malformed(tmp_path: Path) -> None:
    path = tmp_path / "a.npz"
    np.savez(path, a=np.arange(10, dtype=np.float32))
    buf = path.read_bytes()
    for cut in [len(buf) - 1, len(buf) // 2, 10, 0]:
        with pytest.raises(MalformedFileError, match="not a valid zip archive"):
            parse_npz(buf[:cut])
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("bad.npy", make_npy("{'descr': '<f4'}", bytes(4)))
    with pytest.raises(MalformedFileError, match=r"entry bad\.npy"):
        parse_npz(out.getvalue())
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("short.npy", make_npy(GOOD_HEADER, bytes(4)))
    with pytest.raises(MalformedFileError, match="data size does not match"):
        parse_npz(out.getvalue())


# --- fuzzing ---------------------------------------------------------------------------

SEEDS = [
    npy_bytes(np.arange(6, dtype=np.float32).reshape(2, 3)),
    npy_bytes(np.array(True)),
    npy_bytes(np.zeros((2, 0), dtype=np.int64), (2, 0)),
    npy_bytes(np.asfortranarray(np.ones((2, 2)))),
]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    buf = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        if not buf:
            break
        pos = draw(st.integers(0, min(len(buf) - 1, 80)))  # mostly the header
        op = draw(st.sampled_from(["set", "insert", "delete", "truncate"]))
        if op == "set":
            buf[pos] = draw(st.sampled_from(b"{}()[]',:0123456789-<>|=fiubcOTFx \n\x00\xff"))
        elif op == "insert":
            buf[pos:pos] = draw(st.sampled_from([b"1", b"(", b"'", b",", b"-", b"2**8", b"{}"]))
        elif op == "delete":
            del buf[pos : pos + draw(st.integers(1, 3))]
        else:
            del buf[draw(st.integers(0, len(buf) - 1)) :]
    return bytes(buf)


@given(buf=mutated())
@settings(max_examples=400, deadline=None)
def test_mutated_npy_parses_exactly_or_is_refused(buf: bytes) -> None:
    try:
        layout = parse_npy(buf)
    except MalformedFileError:
        return
    check_exact_cover(layout, len(buf))
