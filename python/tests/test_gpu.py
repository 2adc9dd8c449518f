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


def test_every_format_on_the_gpu_matches_the_cpu(tmp_path, torch):
    """F16 (every pattern), F32 (random bits: NaN payloads, subnormals), BF16 widened to F32 (the
    bf16-in-fp32 coder), BF16 values saved as F16 (bf16-in-fp16) and both FP8 formats (every
    byte), decoded by the kernel of each format into CUDA tensors of the file's dtypes,
    byte-identical to the CPU load."""
    rng = np.random.default_rng(11)
    every16 = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    widened = (rng.integers(0, 1 << 16, 50_000, dtype=np.uint32) << 16).astype(np.uint32)
    tensors = {
        "model.layers.0.f16": torch.from_numpy(every16.view(np.float16).reshape(256, 256)),
        "model.layers.0.f32": torch.from_numpy(
            rng.integers(0, 1 << 32, 40_000, dtype=np.uint64).astype(np.uint32).view(np.float32)
        ),
        "model.layers.0.bf16_in_f32": torch.from_numpy(widened.view(np.float32)),
        "model.layers.0.bf16": torch.randn(300, 7).to(torch.bfloat16),
        # BF16 values saved as F16 (the bf16-in-fp16 coder), subnormals included.
        "model.layers.2.f16_from_bf16": (torch.randn(400, 9) * 1e-4).to(torch.bfloat16).half(),
    }
    for name in ("float8_e4m3fn", "float8_e5m2"):
        dtype = getattr(torch, name, None)
        if dtype is not None:
            every8 = torch.arange(256, dtype=torch.uint8).repeat(64)
            tensors[f"model.layers.1.{name}"] = every8.view(dtype).reshape(64, 256)
    path = tmp_path / "formats.fzip"
    floatzip.save_file(tensors, path)
    formats = {fmt for _, fmt, _, _, _ in floatzip._core._File(path).bundles if fmt}
    assert {"fp16", "fp32", "bf16-in-fp32", "bf16", "bf16-in-fp16"} <= formats, formats
    on_cpu = floatzip.load_file(path)
    on_gpu = floatzip.load_file(path, device="cuda")
    assert list(on_gpu) == list(on_cpu)
    for name, tensor in on_gpu.items():
        assert tensor.is_cuda and tensor.dtype == tensors[name].dtype, name
        assert tensor.shape == tensors[name].shape, name
        assert raw_bytes(tensor) == raw_bytes(on_cpu[name]) == raw_bytes(tensors[name]), name


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
