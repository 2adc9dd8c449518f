"""Drop-in for ``safetensors.numpy``: NumPy arrays in and out (BF16 and float8 as ml_dtypes)."""

from typing import Any, Dict, Mapping, Optional

from ._core import PathLike
from ._core import load_file as _load_file
from ._core import save_file as _save_file

__all__ = ["load_file", "save_file"]


def load_file(filename: PathLike, *, threads: int = 0) -> Dict[str, Any]:
    """``{name: numpy.ndarray}`` from a .fzip file; see ``floatzip.load_file``."""
    return _load_file(filename, "cpu", framework="np", threads=threads)


def save_file(
    tensor_dict: Mapping[str, Any],
    filename: PathLike,
    metadata: Optional[Mapping[str, str]] = None,
    *,
    threads: int = 0,
) -> None:
    """Saves NumPy arrays as a .fzip file; see ``floatzip.save_file``."""
    _save_file(tensor_dict, filename, metadata, threads=threads)
