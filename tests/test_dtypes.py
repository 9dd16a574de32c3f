"""wvc.dtypes: widths, byte lengths, the numpy mapping and name parsing."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from wvc.dtypes import DType
from wvc.errors import InputError, WvcError

# name -> (bits, itemsize, is_float), as the safetensors spec defines them.
EXPECTED = {
    "BOOL": (8, 1, False),
    "U8": (8, 1, False),
    "I8": (8, 1, False),
    "U16": (16, 2, False),
    "I16": (16, 2, False),
    "U32": (32, 4, False),
    "I32": (32, 4, False),
    "U64": (64, 8, False),
    "I64": (64, 8, False),
    "F16": (16, 2, True),
    "BF16": (16, 2, True),
    "F32": (32, 4, True),
    "F64": (64, 8, True),
    "C64": (64, 8, True),
    "F8_E4M3": (8, 1, True),
    "F8_E5M2": (8, 1, True),
    "F8_E8M0": (8, 1, True),
    "F6_E2M3": (6, 1, True),
    "F6_E3M2": (6, 1, True),
    "F4": (4, 1, True),
}

NUMPY = {
    "BOOL": np.dtype(np.bool_),
    "U8": np.dtype(np.uint8),
    "I8": np.dtype(np.int8),
    "U16": np.dtype(np.uint16),
    "I16": np.dtype(np.int16),
    "U32": np.dtype(np.uint32),
    "I32": np.dtype(np.int32),
    "U64": np.dtype(np.uint64),
    "I64": np.dtype(np.int64),
    "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "F32": np.dtype(np.float32),
    "F64": np.dtype(np.float64),
    "C64": np.dtype(np.complex64),
    "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
    "F8_E8M0": np.dtype(ml_dtypes.float8_e8m0fnu),
}
PACKED = ["F6_E2M3", "F6_E3M2", "F4"]
# GGML block types: (elements per block, bytes per block), from ggml's type traits.
BLOCKS = {
    "Q4_0": (32, 18), "Q4_1": (32, 20), "Q5_0": (32, 22), "Q5_1": (32, 24), "Q8_0": (32, 34),
    "Q8_1": (32, 40), "Q2_K": (256, 84), "Q3_K": (256, 110), "Q4_K": (256, 144),
    "Q5_K": (256, 176), "Q6_K": (256, 210), "Q8_K": (256, 292), "IQ2_XXS": (256, 66),
    "IQ2_XS": (256, 74), "IQ3_XXS": (256, 98), "IQ1_S": (256, 50), "IQ4_NL": (32, 18),
    "IQ3_S": (256, 110), "IQ2_S": (256, 82), "IQ4_XS": (256, 136), "IQ1_M": (256, 56),
    "TQ1_0": (256, 54), "TQ2_0": (256, 66), "MXFP4": (32, 17), "NVFP4": (64, 36),
    "Q1_0": (128, 18),
}  # fmt: skip


def test_tables_cover_every_name() -> None:
    assert set(DType.__members__) == set(EXPECTED) | set(BLOCKS)
    assert set(NUMPY) | set(PACKED) == set(EXPECTED)
    assert len(DType) == len(EXPECTED) + len(BLOCKS), "some dtype names are aliases of others"


@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_block_types(name: str) -> None:
    block, block_bytes = BLOCKS[name]
    d = DType.parse(name)
    assert d.is_quantized and d.block == block and not d.is_float
    assert d.nbytes((3, 2 * block)) == 6 * block_bytes
    assert d.nbytes((3, block + 1)) is None  # rows must be whole blocks
    assert d.nbytes(()) is None
    assert d.nbytes((0, block)) == 0
    with pytest.raises(InputError):
        d.numpy()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_name_is_a_distinct_member(name: str) -> None:
    # Two safetensors dtypes with equal specs must not collapse into one enum member
    # (an alias would rename the tensor's dtype in manifests and rebuilt headers).
    assert DType.parse(name).name == name


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sizes(name: str) -> None:
    bits, itemsize, is_float = EXPECTED[name]
    dt = DType.parse(name)
    assert dt is DType[name]
    assert dt.bits == bits
    assert dt.itemsize == itemsize
    assert dt.is_float is is_float


@pytest.mark.parametrize("name", sorted(NUMPY))
def test_nbytes_matches_numpy(name: str) -> None:
    dt = DType[name]
    for shape in [(), (0,), (1,), (3,), (2, 3), (4, 0, 5), (7, 1, 1, 2)]:
        expected = np.zeros(shape, dtype=NUMPY[name]).nbytes
        assert dt.nbytes(shape) == expected, shape


@pytest.mark.parametrize(
    ("name", "shape", "expected"),
    [
        ("F4", (), None),  # one 4-bit element: half a byte
        ("F4", (1,), None),
        ("F4", (2,), 1),
        ("F4", (3,), None),
        ("F4", (4, 3), 6),
        ("F4", (0,), 0),
        ("F4", (5, 0), 0),
        ("F6_E2M3", (4,), 3),
        ("F6_E2M3", (2,), None),  # 12 bits
        ("F6_E3M2", (8, 2), 12),
        ("F6_E3M2", (3,), None),  # 18 bits
        ("F6_E3M2", (0,), 0),
    ],
)
def test_nbytes_sub_byte(name: str, shape: tuple[int, ...], expected: int | None) -> None:
    assert DType[name].nbytes(shape) == expected


def test_nbytes_huge_shape_is_exact() -> None:
    # Python ints: no overflow for shapes whose product exceeds 2**64.
    assert DType.F32.nbytes((2**40, 2**40)) == 4 * 2**80
    assert DType.F4.nbytes((2**63 + 1,)) is None


@pytest.mark.parametrize("name", sorted(NUMPY))
def test_numpy_mapping(name: str) -> None:
    dt = DType[name]
    assert dt.numpy() == NUMPY[name]
    assert dt.numpy().itemsize == dt.itemsize


@pytest.mark.parametrize("name", sorted(NUMPY))
def test_from_numpy_round_trip(name: str) -> None:
    dt = DType[name]
    assert DType.from_numpy(dt.numpy()) is dt
    assert DType.from_numpy(np.zeros(3, dtype=NUMPY[name]).dtype) is dt


def test_ml_dtypes_values_survive_the_mapping() -> None:
    values = np.array([0.0, 1.0, -2.5, 0.015625], dtype=np.float32)
    for dt in (DType.BF16, DType.F8_E4M3, DType.F8_E5M2):
        arr = values.astype(dt.numpy())
        assert DType.from_numpy(arr.dtype) is dt
        np.testing.assert_array_equal(arr.astype(np.float32), values)


@pytest.mark.parametrize("name", PACKED)
def test_packed_types_have_no_numpy_type(name: str) -> None:
    with pytest.raises(InputError, match="below one byte"):
        DType[name].numpy()


@pytest.mark.parametrize(
    "npdtype",
    [
        np.dtype(object),
        np.dtype("U3"),
        np.dtype(np.complex128),
        np.dtype(">f4"),  # non-native byte order: safetensors data is little-endian
        np.dtype([("a", "<i4")]),
    ],
)
def test_from_numpy_unknown(npdtype: np.dtype) -> None:
    with pytest.raises(InputError, match="has no wvc dtype"):
        DType.from_numpy(npdtype)


@pytest.mark.parametrize("name", ["f32", "FLOAT32", "", "bits", "nbytes", "F8", "bf16", " F32"])
def test_parse_unknown_name(name: str) -> None:
    with pytest.raises(InputError, match="unknown dtype") as info:
        DType.parse(name)
    assert isinstance(info.value, WvcError)
    assert isinstance(info.value, ValueError)
    assert repr(name) in str(info.value)
