"""Tensor element types, named as safetensors names them.

The enum is the one place that knows each dtype's width in bits, whether it is
a float (for codec choice and, later, numeric diffs) and which numpy dtype
holds it (ml_dtypes provides bfloat16 and the float8 types).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from functools import cache
from typing import Any

import ml_dtypes
import numpy as np

from .errors import InputError

_MAX_ELEMENTS = 1 << 64


@dataclass(frozen=True)
class _Spec:
    code: str  # keeps specs distinct, so no two members become aliases
    bits: int  # per element; 0 for block-quantized types
    is_float: bool
    numpy_name: str | None
    block: int = 1  # elements per block (block-quantized GGML types)
    block_bytes: int = 0  # bytes per block


def _q(code: str, block: int, block_bytes: int) -> _Spec:
    return _Spec(code, 0, False, None, block, block_bytes)


class DType(enum.Enum):
    BOOL = _Spec("BOOL", 8, False, "bool")
    U8 = _Spec("U8", 8, False, "uint8")
    I8 = _Spec("I8", 8, False, "int8")
    U16 = _Spec("U16", 16, False, "uint16")
    I16 = _Spec("I16", 16, False, "int16")
    U32 = _Spec("U32", 32, False, "uint32")
    I32 = _Spec("I32", 32, False, "int32")
    U64 = _Spec("U64", 64, False, "uint64")
    I64 = _Spec("I64", 64, False, "int64")
    F16 = _Spec("F16", 16, True, "float16")
    BF16 = _Spec("BF16", 16, True, "bfloat16")
    F32 = _Spec("F32", 32, True, "float32")
    F64 = _Spec("F64", 64, True, "float64")
    C64 = _Spec("C64", 64, True, "complex64")
    F8_E4M3 = _Spec("F8_E4M3", 8, True, "float8_e4m3fn")
    F8_E5M2 = _Spec("F8_E5M2", 8, True, "float8_e5m2")
    F8_E8M0 = _Spec("F8_E8M0", 8, True, "float8_e8m0fnu")
    F6_E2M3 = _Spec("F6_E2M3", 6, True, None)
    F6_E3M2 = _Spec("F6_E3M2", 6, True, None)
    F4 = _Spec("F4", 4, True, None)
    # GGML block-quantized types (GGUF): a row of the innermost dimension is
    # stored as blocks of `block` elements in `block_bytes` bytes each.
    Q4_0 = _q("Q4_0", 32, 18)
    Q4_1 = _q("Q4_1", 32, 20)
    Q5_0 = _q("Q5_0", 32, 22)
    Q5_1 = _q("Q5_1", 32, 24)
    Q8_0 = _q("Q8_0", 32, 34)
    Q8_1 = _q("Q8_1", 32, 40)
    Q2_K = _q("Q2_K", 256, 84)
    Q3_K = _q("Q3_K", 256, 110)
    Q4_K = _q("Q4_K", 256, 144)
    Q5_K = _q("Q5_K", 256, 176)
    Q6_K = _q("Q6_K", 256, 210)
    Q8_K = _q("Q8_K", 256, 292)
    IQ2_XXS = _q("IQ2_XXS", 256, 66)
    IQ2_XS = _q("IQ2_XS", 256, 74)
    IQ3_XXS = _q("IQ3_XXS", 256, 98)
    IQ1_S = _q("IQ1_S", 256, 50)
    IQ4_NL = _q("IQ4_NL", 32, 18)
    IQ3_S = _q("IQ3_S", 256, 110)
    IQ2_S = _q("IQ2_S", 256, 82)
    IQ4_XS = _q("IQ4_XS", 256, 136)
    IQ1_M = _q("IQ1_M", 256, 56)
    TQ1_0 = _q("TQ1_0", 256, 54)
    TQ2_0 = _q("TQ2_0", 256, 66)
    MXFP4 = _q("MXFP4", 32, 17)
    NVFP4 = _q("NVFP4", 64, 36)
    Q1_0 = _q("Q1_0", 128, 18)

    @property
    def bits(self) -> int:
        """Bits per element; 0 for block-quantized types (see :attr:`block`)."""
        return self.value.bits

    @property
    def block(self) -> int:
        """Elements per block: 1 for element types, 32 or 256 for most GGML quantizations."""
        return self.value.block

    @property
    def is_quantized(self) -> bool:
        return self.value.block > 1

    @property
    def itemsize(self) -> int:
        """Bytes per element for byte-aligned dtypes; 1 for packed sub-byte dtypes."""
        return max(1, self.value.bits // 8)

    @property
    def is_float(self) -> bool:
        return self.value.is_float

    def nbytes(self, shape: tuple[int, ...]) -> int | None:
        """Byte length of a tensor of this dtype and shape; None if it is not whole bytes.

        For block-quantized types the last (innermost) dimension must be a
        whole number of blocks.
        """
        if self.value.block > 1:
            if not shape or shape[-1] % self.value.block:
                return None
            n = 1
            for d in shape:
                n *= d
                if n > _MAX_ELEMENTS:
                    return 0 if 0 in shape else None
            return n // self.value.block * self.value.block_bytes
        n = 1
        for d in shape:
            n *= d
            if n > _MAX_ELEMENTS:  # far past any real tensor; stop multiplying
                n = 0 if 0 in shape else n
                break
        total_bits = n * self.bits
        if total_bits % 8:
            return None
        return total_bits // 8

    def numpy(self) -> np.dtype[np.generic]:
        """The numpy dtype that holds this dtype (raises for packed sub-byte dtypes)."""
        return _numpy_dtype(self)

    @classmethod
    def parse(cls, name: str) -> DType:
        try:
            return cls[name]
        except KeyError:
            raise InputError(f"unknown dtype {name!r}") from None

    @classmethod
    def from_numpy(cls, dtype: np.dtype[np.generic]) -> DType:
        for member in cls:
            if member.value.numpy_name is not None and _numpy_dtype(member) == dtype:
                return member
        raise InputError(f"numpy dtype {dtype} has no wvc dtype")


def plain_array(a: Any) -> np.ndarray:
    """``a`` as a C-contiguous, little-endian array of the same shape (0-d stays 0-d)."""
    a = np.asarray(a)
    if a.dtype.byteorder == ">":
        a = a.astype(a.dtype.newbyteorder("<"))
    out: np.ndarray = np.ascontiguousarray(a).reshape(a.shape)
    return out


def raw_bytes(a: Any) -> memoryview:
    """The bytes of ``a``'s elements in row-major order, little-endian: what files store."""
    return memoryview(plain_array(a).reshape(-1).view(np.uint8).data)


@cache
def _numpy_dtype(dt: DType) -> np.dtype[np.generic]:
    name = dt.value.numpy_name
    if name is None:
        raise InputError(f"dtype {dt.name} is packed below one byte and has no numpy type")
    scalar_type = getattr(ml_dtypes, name, None)
    dtype: np.dtype[np.generic] = np.dtype(scalar_type if scalar_type is not None else name)
    return dtype
