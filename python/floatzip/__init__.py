"""floatzip: lossless compression of model weights (BF16, F16, F32, FP8), with an API like
safetensors'.

    import floatzip
    floatzip.compress_file("model.safetensors", "model.fzip")   # about 2/3 of the size
    state = floatzip.load_file("model.fzip")                      # {name: torch.Tensor}
    state = floatzip.load_file("model.fzip", device="cuda")       # decoded by the GPU kernel
    with floatzip.safe_open("model.fzip", framework="np") as f:   # one tensor at a time
        embedding = f.get_tensor("model.embed_tokens.weight")
    floatzip.save_file({"w": tensor}, "w.fzip", metadata={"format": "pt"})
    floatzip.decompress_file("model.fzip", "copy.safetensors")    # == model.safetensors

    data = floatzip.compress(bf16_array)                          # one tensor -> bytes
    values = floatzip.decompress(data)                            # flat bfloat16 array

Every value comes back bit for bit. Float tensors are compressed (BF16: the exponent byte with a
Huffman code per transformer block, the sign/mantissa byte as is; F16, F32 and FP8 the same way
with their own split, F32 holding BF16 values as BF16); tensors of other dtypes are stored as they
are. The single-tensor ``compress``/``decompress`` take BF16. ``floatzip.torch`` and ``floatzip.numpy`` mirror ``safetensors.torch`` and
``safetensors.numpy``. Errors in files are raised as FloatzipError with the library's message.
The GIL is released while data is compressed or decompressed.
"""

from ._core import (
    FloatzipError,
    compress,
    compress_file,
    cuda_available,
    decompress,
    decompress_file,
    load_file,
    safe_open,
    save_file,
    verify_file,
)

# The safetensors.torch / safetensors.numpy look-alikes; neither imports torch until it is used.
from . import numpy, torch  # noqa: E402  (after _core: they import from it)

__version__ = "0.1.0"
__all__ = [
    "FloatzipError", "compress", "compress_file", "cuda_available", "decompress",
    "decompress_file", "load_file", "safe_open", "save_file", "verify_file",
]
