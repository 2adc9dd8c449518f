"""device="cuda": bundles decoded by floatzip's GPU kernel into torch CUDA tensors. Marked gpu:
skipped without a CUDA device or in a build without the CUDA decoder (conftest.py)."""

import numpy as np
import pytest
from conftest import raw_bytes

import floatzip

pytestmark = pytest.mark.gpu


@pytest.fixture
def torch():
    return pytest.importorskip("torch", reason="torch is not installed")


def test_load_file_on_the_gpu_matches_the_cpu(model, tmp_path, torch):
    compressed = tmp_path / "model.fzip"
    floatzip.compress_file(model, compressed)
    on_cpu = floatzip.load_file(compressed)
    on_gpu = floatzip.load_file(compressed, device="cuda")
    assert list(on_gpu) == list(on_cpu)
    for name, tensor in on_gpu.items():
        assert tensor.device.type == "cuda", name
        assert tensor.dtype == on_cpu[name].dtype and tensor.shape == on_cpu[name].shape, name
        assert raw_bytes(tensor) == raw_bytes(on_cpu[name]), name


def test_every_bf16_pattern_and_raw_tensors_on_the_gpu(tmp_path, torch):
    rng = np.random.default_rng(5)
    values = torch.from_numpy(np.arange(1 << 16, dtype=np.int32).astype(np.int16))
    tensors = {
        "model.layers.0.all": values.view(torch.bfloat16).reshape(256, 256),
        "model.layers.0.w": torch.randn(300, 7).to(torch.bfloat16),
        "model.layers.0.empty": torch.empty(0, 4, dtype=torch.bfloat16),
        "norm.f32": torch.from_numpy(rng.standard_normal(33).astype(np.float32)),
        "ids.i64": torch.arange(10),
    }
    path = tmp_path / "t.fzip"
    floatzip.save_file(tensors, path)
    for device in ("cuda", f"cuda:{torch.cuda.current_device()}"):
        loaded = floatzip.load_file(path, device=device)
        for name, tensor in tensors.items():
            assert loaded[name].is_cuda and raw_bytes(loaded[name]) == raw_bytes(tensor), name


def test_load_file_runs_on_the_current_stream(tmp_path, torch):
    path = tmp_path / "t.fzip"
    floatzip.save_file({"model.layers.0.w": torch.randn(1 << 16).to(torch.bfloat16)}, path)
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        loaded = floatzip.load_file(path, device="cuda")
        checksum = loaded["model.layers.0.w"].float().sum()
    stream.synchronize()
    assert checksum.item() == floatzip.load_file(path)["model.layers.0.w"].float().sum().item()


def test_safe_open_moves_tensors_to_the_device(model, tmp_path, torch):
    compressed = tmp_path / "model.fzip"
    floatzip.compress_file(model, compressed)
    with floatzip.safe_open(compressed, framework="pt", device="cuda") as f:
        name = f.keys()[0]
        assert f.get_tensor(name).is_cuda
