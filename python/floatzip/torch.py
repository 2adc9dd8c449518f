"""Drop-in for ``safetensors.torch``: torch tensors in and out."""

from typing import Any, Dict, Mapping, Optional

from ._core import PathLike
from ._core import load_file as _load_file
from ._core import save_file as _save_file

__all__ = ["load_file", "save_file"]


def load_file(filename: PathLike, device: Any = "cpu", *, threads: int = 0) -> Dict[str, Any]:
    """``{name: torch.Tensor}`` from a .fzip file; see ``floatzip.load_file``."""
    return _load_file(filename, device, framework="pt", threads=threads)


def save_file(
    tensors: Mapping[str, Any],
    filename: PathLike,
    metadata: Optional[Mapping[str, str]] = None,
    *,
    threads: int = 0,
) -> None:
    """Saves torch tensors as a .fzip file; see ``floatzip.save_file``."""
    _save_file(tensors, filename, metadata, threads=threads)
