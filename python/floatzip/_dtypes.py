"""safetensors dtype names <-> NumPy and torch element types.

NumPy has no bfloat16 or float8 types of its own: those come from ml_dtypes. The sub-byte float
formats (F4, F6_*) are packed in safetensors files and have no array type that matches that layout
in either framework: such tensors round-trip through the file functions but cannot be loaded as
arrays.
"""

from __future__ import annotations

import sys
from typing import Any

import ml_dtypes
import numpy as np

# Bytes per element of the dtypes that load as arrays.
ITEMSIZE = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "F64": 8, "I64": 8, "U64": 8, "C64": 8,
}

_NUMPY_NAMES = {
    "BOOL": np.dtype(np.bool_), "U8": np.dtype(np.uint8), "I8": np.dtype(np.int8),
    "I16": np.dtype(np.int16), "U16": np.dtype(np.uint16), "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16), "I32": np.dtype(np.int32),
    "U32": np.dtype(np.uint32), "F32": np.dtype(np.float32), "F64": np.dtype(np.float64),
    "I64": np.dtype(np.int64), "U64": np.dtype(np.uint64), "C64": np.dtype(np.complex64),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2), "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
}
if hasattr(ml_dtypes, "float8_e8m0fnu"):
    _NUMPY_NAMES["F8_E8M0"] = np.dtype(ml_dtypes.float8_e8m0fnu)

_TORCH_ATTRS = {
    "BOOL": "bool", "U8": "uint8", "I8": "int8", "I16": "int16", "U16": "uint16",
    "F16": "float16", "BF16": "bfloat16", "I32": "int32", "U32": "uint32", "F32": "float32",
    "F64": "float64", "I64": "int64", "U64": "uint64", "C64": "complex64",
    "F8_E5M2": "float8_e5m2", "F8_E4M3": "float8_e4m3fn", "F8_E8M0": "float8_e8m0fnu",
}


def numpy_dtype(name: str) -> np.dtype:
    """The NumPy dtype of a safetensors dtype name; TypeError when there is none."""
    try:
        return _NUMPY_NAMES[name]
    except KeyError:
        raise TypeError(f"safetensors dtype {name} has no NumPy equivalent") from None


def torch_dtype(name: str) -> Any:
    """The torch dtype of a safetensors dtype name; TypeError when this torch has none."""
    import torch

    attr = _TORCH_ATTRS.get(name)
    dtype = getattr(torch, attr, None) if attr else None
    if dtype is None:
        raise TypeError(f"safetensors dtype {name} has no equivalent in torch {torch.__version__}")
    return dtype


def name_of_numpy(dtype: np.dtype) -> str:
    for name, candidate in _NUMPY_NAMES.items():
        if candidate == dtype:
            return name
    raise TypeError(f"NumPy dtype {dtype} has no safetensors equivalent")


def name_of_torch(dtype: Any) -> str:
    import torch

    for name, attr in _TORCH_ATTRS.items():
        if getattr(torch, attr, None) == dtype:
            return name
    raise TypeError(f"torch dtype {dtype} has no safetensors equivalent")


def is_torch_tensor(value: Any) -> bool:
    # torch is only looked at when the caller has imported it: nothing else can hand us a tensor.
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)
