"""Shared fixtures of the floatzip package's tests.

The real models come from FLOATZIP_MODELS_DIR (set by cmake/scripts/python_tests.sh from the CMake
configuration), else ../shared/models beside the checkout; tests that need them skip when the
folder is absent. FLOATZIP_CLI, when set, is the `floatzip` command, against which the file
functions are compared byte for byte.
"""

import json
import os
import pathlib

import numpy as np
import pytest

import floatzip
from floatzip import _dtypes

REPO = pathlib.Path(__file__).resolve().parents[2]


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA device and a CUDA build of floatzip")


def pytest_collection_modifyitems(config, items):
    if floatzip.cuda_available():
        return
    reason = (
        "no CUDA device" if floatzip._floatzip.has_cuda else "floatzip built without CUDA"
    )
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=f"GPU test: {reason}"))


def models_dir():
    return pathlib.Path(os.environ.get("FLOATZIP_MODELS_DIR", REPO.parent / "shared" / "models"))


def model_files():
    folder = models_dir()
    return sorted(folder.glob("*.safetensors")) if folder.is_dir() else []


@pytest.fixture(params=model_files() or [None], ids=lambda p: p.name if p else "no-models")
def model(request):
    if request.param is None:
        pytest.skip(f"models directory {models_dir()} not found (set FLOATZIP_MODELS_DIR)")
    return request.param


@pytest.fixture
def cli():
    path = os.environ.get("FLOATZIP_CLI")
    if not path or not os.path.exists(path):
        pytest.skip("the floatzip command is not built (FLOATZIP_CLI unset)")
    return path


def read_safetensors(path):
    """{name: (dtype name, shape, raw bytes)} in the order of the data, and the metadata, read
    independently of floatzip."""
    data = pathlib.Path(path).read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    metadata = header.pop("__metadata__", None)
    base = 8 + n
    order = sorted(header, key=lambda name: header[name]["data_offsets"])  # the data's order
    tensors = {}
    for name in order:
        begin, end = header[name]["data_offsets"]
        tensors[name] = (header[name]["dtype"], header[name]["shape"], data[base + begin : base + end])
    return tensors, metadata


def buffer_root(array):
    """The NumPy array that owns an array's memory (following .base through its views)."""
    while array.base is not None:
        array = array.base
    return array


def raw_bytes(tensor):
    """The bytes of a NumPy array or torch tensor, for bit-exact comparisons."""
    if _dtypes.is_torch_tensor(tensor):
        import torch

        flat = tensor.detach().cpu().contiguous().reshape(-1)
        return (flat if flat.dtype == torch.uint8 else flat.view(torch.uint8)).numpy().tobytes()
    return np.ascontiguousarray(tensor).tobytes()
