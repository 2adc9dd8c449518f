"""The floatzip package's API; see the package docstring (floatzip/__init__.py) for an overview."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import ml_dtypes
import numpy as np

from . import _dtypes
from . import _floatzip as _ext

PathLike = Union[str, "os.PathLike[str]"]
__all__ = [
    "FloatzipError", "save_file", "load_file", "safe_open", "compress_file", "decompress_file",
    "verify_file", "compress", "decompress", "cuda_available",
]


class FloatzipError(Exception):
    """An error the floatzip library reported: a bad or truncated file, a checksum mismatch, an
    I/O failure... ``str(error)`` is the library's message (what the ``floatzip`` command prints
    after ``floatzip: error:``), naming the file, section and field; ``code`` is the library's
    error code name (``"bad_data"``, ``"truncated"``, ``"checksum_mismatch"``, ``"io_error"``,
    ``"unsupported_version"``, ``"invalid_argument"``, ``"insufficient_space"``, ``"too_large"``,
    ``"cuda_error"``)."""

    def __init__(self, message: str, code: str = "unknown") -> None:
        super().__init__(message)
        self.code = code


_ext._set_error_type(FloatzipError)


def _fspath(path: PathLike) -> str:
    return os.fsdecode(os.fspath(path))


def _check_framework(framework: str) -> str:
    aliases = {"pt": "pt", "torch": "pt", "pytorch": "pt", "np": "np", "numpy": "np"}
    if framework not in aliases:
        raise ValueError(f"framework must be 'pt' or 'np', not {framework!r}")
    if aliases[framework] == "pt":
        try:
            import torch  # noqa: F401
        except ImportError as e:
            raise ImportError(
                "framework='pt' (the default, as in safetensors.torch) needs torch, which is not "
                "installed: install it, or pass framework='np' (floatzip.numpy) for NumPy arrays"
            ) from e
    return aliases[framework]


def _parse_device(device: Any, framework: str, gpu_decoder: bool = True) -> Any:
    """None for the CPU, else the torch.device a CUDA load goes to. gpu_decoder: the caller
    decodes on the device (needs this build's CUDA decoder), rather than moving tensors there."""
    if str(device) == "cpu":
        return None
    if framework != "pt":
        raise ValueError(f"device {device!r}: NumPy arrays live on the CPU; use framework='pt'")
    import torch

    dev = torch.device(device)
    if dev.type == "cpu":
        return None
    if dev.type != "cuda":
        raise ValueError(f"device {device!r}: floatzip decodes on the CPU or on CUDA devices")
    if gpu_decoder and not _ext.has_cuda:
        raise RuntimeError(
            "device='cuda': this floatzip was built without the CUDA decoder (no CUDA compiler "
            "was found when it was built); load on the CPU and move the tensors"
        )
    if not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r}: torch sees no CUDA device")
    if dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


def cuda_available() -> bool:
    """True when this build has the CUDA decoder and a CUDA device is present."""
    return bool(_ext.has_cuda) and _ext.cuda_device_count() > 0


# ---- building arrays over buffers Python owns --------------------------------------------------


class _Buffers:
    """Allocates the framework's flat buffers that the C++ side fills, and shapes views of them.

    The C++ side receives 16-bit views (uint16 / int16) for BF16 values given to compress and
    decompress, and uint8 buffers for bytes (a bundle's decoded values of any format, raw
    tensors), so it never needs to know the framework's own dtypes."""

    def __init__(self, framework: str):
        self.framework = framework
        if framework == "pt":
            import torch

            self.torch = torch

    def raw(self, nbytes: int) -> Any:
        if self.framework == "pt":
            return self.torch.empty(nbytes, dtype=self.torch.uint8)
        return np.empty(nbytes, dtype=np.uint8)

    def slice(self, flat: Any, begin: int, count: int, shape: List[int]) -> Any:
        if self.framework == "pt":
            return flat.narrow(0, begin, count).view(shape)
        return flat[begin : begin + count].reshape(shape)

    def tensor_of(self, decoded: Any, t: "_Tensor", value_bytes: int) -> Any:
        """Tensor t as a view of its bundle's decoded bytes (no copy): its values start at
        value t.offset, so at a multiple of their width (aligned in the buffer)."""
        begin = t.offset * value_bytes
        if self.framework == "pt":
            return self.typed(decoded.narrow(0, begin, t.nbytes), t.dtype, t.shape)
        return self.typed(decoded[begin : begin + t.nbytes], t.dtype, t.shape)

    def typed(self, raw: Any, dtype_name: str, shape: List[int]) -> Any:
        """A uint8 buffer seen as the tensor's dtype and shape (no copy)."""
        if self.framework == "pt":
            dtype = _dtypes.torch_dtype(dtype_name)
            if dtype != self.torch.uint8:
                raw = raw.view(dtype)
            return raw.view(shape)
        return raw.view(_dtypes.numpy_dtype(dtype_name)).reshape(shape)

    def check_loadable(self, dtype_name: str) -> None:
        if self.framework == "pt":
            _dtypes.torch_dtype(dtype_name)
        else:
            _dtypes.numpy_dtype(dtype_name)


class _Tensor:
    __slots__ = ("index", "name", "dtype", "shape", "bundle", "offset", "nbytes")

    def __init__(self, index: int, entry: Tuple[str, str, List[int], int, int, int]):
        self.index = index
        self.name, self.dtype, self.shape, self.bundle, self.offset, self.nbytes = entry
        self.shape = list(self.shape)


class _File:
    """An opened .fzip: the C++ reader plus its tables in Python form."""

    def __init__(self, path: PathLike):
        self.reader = _ext.Reader(_fspath(path))
        self.tensors = [_Tensor(i, t) for i, t in enumerate(self.reader.tensors())]
        self.by_name = {t.name: t for t in self.tensors}
        # (whole, format, value_bytes, value_count, decoded_bytes) per bundle; see _floatzip.
        self.bundles = self.reader.bundles()
        self.bundle_members: Dict[int, List[_Tensor]] = {}
        for t in self.tensors:
            self.bundle_members.setdefault(t.bundle, []).append(t)

    def in_whole_bundle(self, t: _Tensor) -> bool:
        """True when t's bundle decodes into one buffer that t is a view of (float values of any
        format, t whole); else t is read by itself (raw dtypes, pieces of split tensors)."""
        return bool(self.bundles[t.bundle][0])


def _load_cpu(f: _File, buffers: _Buffers, threads: int) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for t in f.tensors:
        buffers.check_loadable(t.dtype)  # before anything is decoded
    for b, members in f.bundle_members.items():
        whole, _, value_bytes, _, decoded_bytes = f.bundles[b]
        if not whole:
            continue
        decoded = buffers.raw(decoded_bytes)
        f.reader.decode_bundle(b, decoded, threads)
        for t in members:
            out[t.name] = buffers.tensor_of(decoded, t, value_bytes)
    for t in f.tensors:
        if not f.in_whole_bundle(t):
            raw = buffers.raw(t.nbytes)
            f.reader.read_tensor(t.index, raw, threads)
            out[t.name] = buffers.typed(raw, t.dtype, t.shape)
    return {t.name: out[t.name] for t in f.tensors}  # the file's data order, as safetensors


def _load_cuda(f: _File, dev: Any) -> Dict[str, Any]:
    import torch

    for t in f.tensors:
        _dtypes.torch_dtype(t.dtype)  # before anything is decoded
    out: Dict[str, Any] = {}
    stream = torch.cuda.current_stream(dev)
    with torch.cuda.device(dev):
        staging_bytes = _ext.cuda_staging_bytes(f.reader)
        staging = torch.empty(max(staging_bytes, 1), dtype=torch.uint8, device=dev)
        status = torch.full((max(len(f.bundles), 1),), -1, dtype=torch.int64, device=dev)
        for b, members in f.bundle_members.items():
            whole, _, value_bytes, value_count, decoded_bytes = f.bundles[b]
            if not whole:
                continue
            # Values of the bundle's format (any): uint8 bytes, each tensor a typed view at a
            # multiple of its width (the caching allocator's blocks are 512-byte aligned).
            flat = torch.empty(decoded_bytes, dtype=torch.uint8, device=dev)
            if value_count > 0:
                _ext.cuda_decode_bundle(
                    f.reader, b, staging.data_ptr(), staging.numel(), flat.data_ptr(),
                    flat.numel(), status.data_ptr() + 8 * b, stream.cuda_stream, dev.index,
                )
            for t in members:
                raw = flat.narrow(0, t.offset * value_bytes, t.nbytes)
                dtype = _dtypes.torch_dtype(t.dtype)
                out[t.name] = (raw if dtype == torch.uint8 else raw.view(dtype)).view(t.shape)
        for t in f.tensors:
            if f.in_whole_bundle(t):
                continue
            raw = torch.empty(t.nbytes, dtype=torch.uint8, device=dev)
            _ext.cuda_copy_raw_tensor(
                f.reader, t.index, raw.data_ptr(), t.nbytes, stream.cuda_stream, dev.index
            )
            dtype = _dtypes.torch_dtype(t.dtype)
            out[t.name] = (raw if dtype == torch.uint8 else raw.view(dtype)).view(t.shape)
        _ext.cuda_check_status(
            f.reader, status.data_ptr(), len(f.bundles), stream.cuda_stream, dev.index
        )
    return {t.name: out[t.name] for t in f.tensors}


# ---- the safetensors-style API ------------------------------------------------------------------


def load_file(
    path: PathLike, device: Any = "cpu", *, framework: str = "pt", threads: int = 0
) -> Dict[str, Any]:
    """Loads every tensor of a .fzip file, like ``safetensors.torch.load_file``.

    Returns ``{name: tensor}`` in the order of the tensors' data in the file (as
    safetensors' load_file), bit-identical to what safetensors loads from the original file.
    ``framework="pt"`` (default) gives torch tensors, ``"np"`` NumPy arrays (BF16 and float8 as
    ml_dtypes types). On the CPU each bundle (the tensors of one format in one transformer block:
    BF16, F16, F32 or FP8) is decoded straight into one buffer that its tensors are views of: no
    copy is made, and the tensors of a block share that buffer. ``device="cuda"`` (or
    ``"cuda:N"``, torch only) decodes on the GPU into CUDA tensors on torch's current stream, with
    one staging buffer for the whole load; it takes files whose coded tensors are BF16
    (FloatzipError otherwise: load on the CPU and move the tensors). ``threads``: decoder threads, 0 = all cores. Raises FloatzipError for a bad file,
    TypeError for a dtype the framework lacks."""
    framework = _check_framework(framework)
    dev = _parse_device(device, framework)
    f = _File(path)
    if dev is not None:
        return _load_cuda(f, dev)
    return _load_cpu(f, _Buffers(framework), threads)


class safe_open:
    """Opens a .fzip for reading tensors one at a time, like ``safetensors.safe_open``::

        with floatzip.safe_open("model.fzip", framework="pt") as f:
            for name in f.keys():
                tensor = f.get_tensor(name)   # decodes only the bundle holding it

    The file is validated when opened (header, index, checksums of both). ``get_tensor``
    decodes the one bundle (transformer block) holding the tensor and keeps it until a tensor of
    another bundle is asked for, so walking the keys decodes each bundle once; the tensor
    returned owns its memory. ``device="cuda"`` moves each tensor to that device (torch only):
    for GPU decoding of a whole file use ``load_file(path, device="cuda")``."""

    def __init__(self, filename: PathLike, framework: str = "pt", device: Any = "cpu") -> None:
        self._framework = _check_framework(framework)
        self._device = _parse_device(device, self._framework, gpu_decoder=False)
        self._file: Optional[_File] = _File(filename)
        self._buffers = _Buffers(self._framework)
        self._cached_bundle = -1
        self._cached_values: Any = None

    def __enter__(self) -> "safe_open":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Releases the file (also done by leaving the ``with`` block)."""
        self._file = None
        self._cached_values = None

    def _opened(self) -> _File:
        if self._file is None:
            raise ValueError("the file is closed")
        return self._file

    def keys(self) -> List[str]:
        """The tensor names, sorted (as safetensors returns them)."""
        return sorted(self._opened().by_name)

    def offset_keys(self) -> List[str]:
        """The tensor names in the order of their data in the file."""
        return [t.name for t in self._opened().tensors]

    def metadata(self) -> Optional[Dict[str, str]]:
        """The original file's ``__metadata__`` strings, or None when it has none."""
        return self._opened().reader.metadata()

    def get_tensor(self, name: str) -> Any:
        """The tensor called ``name``; KeyError when there is none."""
        f = self._opened()
        try:
            t = f.by_name[name]
        except KeyError:
            raise KeyError(f"{f.reader.name}: no tensor named {name!r}") from None
        self._buffers.check_loadable(t.dtype)
        if f.in_whole_bundle(t):
            _, _, value_bytes, _, decoded_bytes = f.bundles[t.bundle]
            if self._cached_bundle != t.bundle:
                self._cached_values = None  # the old bundle's memory goes before the new one
                decoded = self._buffers.raw(decoded_bytes)
                f.reader.decode_bundle(t.bundle, decoded)
                self._cached_bundle, self._cached_values = t.bundle, decoded
            view = self._buffers.tensor_of(self._cached_values, t, value_bytes)
            # A copy, so that a kept tensor does not pin its whole bundle in memory.
            tensor = view.clone() if self._framework == "pt" else view.copy()
        else:
            raw = self._buffers.raw(t.nbytes)
            f.reader.read_tensor(t.index, raw)
            tensor = self._buffers.typed(raw, t.dtype, t.shape)
        if self._device is not None:
            tensor = tensor.to(self._device)
        return tensor


def _as_bytes_view(value: Any, name: str) -> Tuple[str, List[int], Any]:
    """(dtype name, shape, a flat uint8 NumPy view of the C-contiguous data)."""
    if _dtypes.is_torch_tensor(value):
        import torch

        tensor = value.detach()
        if tensor.device.type != "cpu":
            tensor = tensor.cpu()
        tensor = tensor.contiguous()
        dtype = _dtypes.name_of_torch(tensor.dtype)
        flat = tensor.reshape(-1)
        flat = flat if flat.dtype == torch.uint8 else flat.view(torch.uint8)
        return dtype, list(tensor.shape), flat.numpy()
    array = np.asarray(value)
    if not isinstance(value, np.ndarray):
        raise TypeError(f"tensor {name!r}: expected a NumPy array or a torch tensor")
    dtype = _dtypes.name_of_numpy(array.dtype)
    contiguous = np.ascontiguousarray(array)
    return dtype, list(array.shape), contiguous.reshape(-1).view(np.uint8)


def save_file(
    tensors: Mapping[str, Any],
    filename: PathLike,
    metadata: Optional[Mapping[str, str]] = None,
    *,
    threads: int = 0,
) -> None:
    """Saves ``{name: tensor}`` (NumPy arrays or torch tensors) as a .fzip file, like
    ``safetensors.torch.save_file``: the tensors are written as a safetensors file next to
    ``filename``, which is then compressed (compress_file) and removed. BF16, F16, F32 and
    FP8 tensors are compressed, other dtypes stored as they are. ``metadata`` goes to the ``__metadata__``
    strings. The file appears only when complete."""
    if metadata is not None:
        for key, value in metadata.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise TypeError("metadata keys and values must be str")
    entries = []
    for name, value in tensors.items():
        if not isinstance(name, str):
            raise TypeError(f"tensor names must be str, got {name!r}")
        entries.append((name,) + _as_bytes_view(value, name))
    # The reference writer's order: larger elements first (so every tensor stays aligned), then
    # by name.
    entries.sort(key=lambda e: (-_dtypes.ITEMSIZE.get(e[1], 1), e[0]))
    header: Dict[str, Any] = {}
    if metadata is not None:
        header["__metadata__"] = dict(metadata)
    offset = 0
    for name, dtype, shape, data in entries:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + data.size]}
        offset += data.size
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    destination = _fspath(filename)
    folder = os.path.dirname(os.path.abspath(destination))
    fd, staging = tempfile.mkstemp(
        prefix=os.path.basename(destination) + ".", suffix=".tmp.safetensors", dir=folder
    )
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(len(text).to_bytes(8, "little"))
            out.write(text)
            for _, _, _, data in entries:
                out.write(data.data)
        _ext.compress_file(staging, destination, threads)
    finally:
        os.unlink(staging)


def compress_file(src: PathLike, dst: PathLike, *, threads: int = 0) -> Dict[str, Any]:
    """Compresses a safetensors file into a .fzip, byte for byte what ``floatzip compress``
    writes; ``decompress_file`` gives back the original file exactly. Returns totals
    (``file_bytes``, ``original_bytes``, ``ratio``, ``bits_per_bf16_value``...). The output
    appears only when complete and replaces an existing file. ``threads``: 0 = all cores."""
    return _ext.compress_file(_fspath(src), _fspath(dst), threads)


def decompress_file(src: PathLike, dst: PathLike, *, threads: int = 0) -> None:
    """Writes the safetensors file a .fzip was made from, byte for byte."""
    _ext.decompress_file(_fspath(src), _fspath(dst), threads)


def verify_file(original: PathLike, compressed: PathLike, *, threads: int = 0) -> None:
    """Checks that ``compressed`` decodes to ``original`` bit for bit (after every checksum);
    raises FloatzipError naming the first difference."""
    _ext.verify_file(_fspath(original), _fspath(compressed), threads)


# ---- single tensors ------------------------------------------------------------------------------


def _bf16_bits(array: Any) -> Any:
    """A C-contiguous 16-bit view of a BF16 array or tensor, for the encoder."""
    if _dtypes.is_torch_tensor(array):
        import torch

        if array.dtype != torch.bfloat16:
            raise TypeError(
                f"compress: dtype {array.dtype} is not bfloat16: the single-tensor codec is "
                "BF16 only (save_file compresses every float dtype)"
            )
        return array.detach().cpu().contiguous().reshape(-1).view(torch.int16)
    if not isinstance(array, np.ndarray):
        raise TypeError("compress: expected a NumPy array or a torch tensor")
    if array.dtype == np.dtype(ml_dtypes.bfloat16):
        array = array.view(np.uint16)
    elif array.dtype != np.uint16:
        raise TypeError(
            f"compress: dtype {array.dtype} is not bfloat16 (or uint16 BF16 bit patterns): the "
            "single-tensor codec is BF16 only (save_file compresses every float dtype)"
        )
    return np.ascontiguousarray(array).reshape(-1)


def compress(array: Any, *, max_code_length: int = 12, threads: int = 0) -> bytes:
    """Compresses one BF16 tensor (NumPy ``ml_dtypes.bfloat16`` or ``uint16`` bit patterns, or a
    torch ``bfloat16`` tensor) into a floatzip bundle, returned as bytes. The shape is not
    stored: ``decompress`` gives the values back flat, or into an ``out`` of any shape. Other
    dtypes raise TypeError."""
    return _ext.compress(_bf16_bits(array), max_code_length, threads)


def decompress(data: Any, out: Any = None, *, threads: int = 0) -> Any:
    """Decodes bytes from ``compress``. Without ``out``: a new flat NumPy ``bfloat16`` array.
    With ``out`` (a C-contiguous NumPy bfloat16/uint16 array or CPU torch bfloat16 tensor of
    exactly as many elements, any shape): decoded in place and returned. Raises FloatzipError
    when the data is not a valid bundle."""
    if isinstance(data, np.ndarray):
        raw = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    else:
        raw = np.frombuffer(data, dtype=np.uint8)
    if out is None:
        count, _ = _ext.bundle_info(raw)
        bits = np.empty(count, dtype=np.uint16)
        _ext.decompress(raw, bits, threads)
        return bits.view(ml_dtypes.bfloat16)
    if _dtypes.is_torch_tensor(out):
        import torch

        if out.dtype not in (torch.bfloat16, torch.int16):
            raise TypeError(f"decompress: out has dtype {out.dtype}, not bfloat16")
        if out.device.type != "cpu" or not out.is_contiguous():
            raise ValueError("decompress: out must be a contiguous CPU tensor")
        _ext.decompress(raw, out.view(torch.int16).reshape(-1), threads)
        return out
    if not isinstance(out, np.ndarray):
        raise TypeError("decompress: out must be a NumPy array or a torch tensor")
    if out.dtype not in (np.dtype(ml_dtypes.bfloat16), np.dtype(np.uint16)):
        raise TypeError(f"decompress: out has dtype {out.dtype}, not bfloat16 or uint16")
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError("decompress: out must be a writeable C-contiguous array")
    _ext.decompress(raw, out.view(np.uint16).reshape(-1), threads)
    return out
