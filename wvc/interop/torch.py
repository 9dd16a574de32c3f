"""torch tensors to and from numpy without a lossy cast (bf16 and float8 included).

Bytes are reinterpreted, never converted: a torch bfloat16 tensor becomes an
ml_dtypes bfloat16 array with the same bits, and back. torch is imported
here only, and only when a torch tensor is passed or requested.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..dtypes import DType
from ..errors import InputError

TORCH_NAMES: dict[DType, str] = {
    DType.F32: "float32", DType.F64: "float64", DType.F16: "float16", DType.BF16: "bfloat16",
    DType.I64: "int64", DType.I32: "int32", DType.I16: "int16", DType.I8: "int8",
    DType.U8: "uint8", DType.U16: "uint16", DType.U32: "uint32", DType.U64: "uint64",
    DType.BOOL: "bool", DType.C64: "complex64", DType.F8_E4M3: "float8_e4m3fn",
    DType.F8_E5M2: "float8_e5m2", DType.F8_E8M0: "float8_e8m0fnu",
}  # fmt: skip


def _torch() -> Any:
    try:
        import torch
    except ImportError:
        raise InputError("torch is not installed: pip install 'wvc[torch]'") from None
    return torch


def is_torch_tensor(value: object) -> bool:
    return type(value).__module__.startswith("torch") and hasattr(value, "untyped_storage")


def torch_dtype_to_wvc(dtype: Any) -> DType:
    name = str(dtype).removeprefix("torch.")
    for d, n in TORCH_NAMES.items():
        if n == name:
            return d
    raise InputError(f"torch dtype {name} cannot be stored")


def from_torch(tensor: Any, *, copy: bool = False) -> np.ndarray:
    """A numpy array with the tensor's exact bits (on CPU, contiguous, detached).

    Shares memory with a CPU contiguous tensor unless ``copy``.
    """
    t = tensor.detach()
    if t.device.type != "cpu":
        t = t.cpu()
        copy = False  # .cpu() already made a copy
    if t.is_sparse or getattr(t, "is_quantized", False):
        raise InputError("sparse and quantized torch tensors cannot be stored")
    dtype = torch_dtype_to_wvc(t.dtype)
    if t.is_conj() or t.is_neg():  # lazy conjugate/negative views: store the values they show
        t = t.resolve_conj().resolve_neg()
        copy = False
    t = t.contiguous()
    raw = t.reshape(-1).view(_torch().uint8).numpy()
    if copy:
        raw = raw.copy()
    out: np.ndarray = raw.view(dtype.numpy()).reshape(tuple(t.shape))
    return out


def to_torch(array: np.ndarray, dtype: DType) -> Any:
    """A torch tensor with the array's bits; packed and quantized types stay raw uint8."""
    torch = _torch()
    if dtype not in TORCH_NAMES:
        return torch.from_numpy(np.ascontiguousarray(array).view(np.uint8).reshape(-1))
    target = getattr(torch, TORCH_NAMES[dtype])
    a = np.ascontiguousarray(array).reshape(array.shape)  # keeps 0-d arrays 0-d
    flat = torch.from_numpy(a.reshape(-1).view(np.uint8))
    return flat.view(target).reshape(a.shape)
