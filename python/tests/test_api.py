"""save_file / load_file / safe_open over every dtype, single-tensor compress / decompress,
and errors raised as exceptions."""

import pathlib
import re
import subprocess

import ml_dtypes
import numpy as np
import pytest
from conftest import buffer_root, raw_bytes, read_safetensors

import floatzip
from floatzip import _dtypes

ALL_BF16 = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)  # every bit pattern


def every_dtype_arrays(rng):
    """One array per safetensors dtype NumPy (with ml_dtypes) can hold, with awkward values."""
    arrays = {}
    for name in sorted(_dtypes._NUMPY_NAMES):
        dtype = _dtypes.numpy_dtype(name)
        raw = rng.integers(0, 256, size=(3, 5, 4 * dtype.itemsize), dtype=np.uint8)
        if name == "BOOL":
            raw = raw % 2
        arrays[f"other.{name.lower()}"] = raw.view(dtype)
    return arrays


def save_every_dtype(tmp_path, keep=lambda dtype_name: True):
    """Saves every_dtype_arrays plus BF16 tensors of every kind; keep(dtype name) filters."""
    rng = np.random.default_rng(7)
    tensors = every_dtype_arrays(rng)
    # BF16: every bit pattern (NaN payloads, infinities, subnormals, -0), in a transformer block
    # of several tensors (one bundle) and in tensors of their own, plus empty and scalar ones.
    tensors["model.layers.0.a.weight"] = ALL_BF16.view(ml_dtypes.bfloat16).reshape(256, 256)
    tensors["model.layers.0.b.weight"] = rng.standard_t(4, size=(33, 7)).astype(ml_dtypes.bfloat16)
    tensors["model.layers.0.empty"] = np.zeros((0, 3), dtype=ml_dtypes.bfloat16)
    tensors["model.layers.1.a.weight"] = rng.standard_normal(100).astype(ml_dtypes.bfloat16)
    tensors["lm_head.weight"] = rng.standard_normal((16, 8)).astype(ml_dtypes.bfloat16)
    tensors["scalar"] = np.array(1.5, dtype=ml_dtypes.bfloat16)
    tensors["scalar_f32"] = np.array(-2.25, dtype=np.float32)
    tensors = {k: v for k, v in tensors.items() if keep(_dtypes.name_of_numpy(v.dtype))}
    path = tmp_path / "all.fzip"
    floatzip.save_file(tensors, path, metadata={"format": "np", "note": "every dtype"})
    return tensors, path


def test_every_dtype_round_trips_through_numpy(tmp_path):
    tensors, path = save_every_dtype(tmp_path)
    loaded = floatzip.numpy.load_file(path)
    assert sorted(loaded) == sorted(tensors)
    for name, array in tensors.items():
        assert loaded[name].dtype == array.dtype, name
        assert loaded[name].shape == array.shape, name
        assert raw_bytes(loaded[name]) == raw_bytes(array), name
    with floatzip.safe_open(path, framework="np") as f:
        assert f.metadata() == {"format": "np", "note": "every dtype"}
        for name, array in tensors.items():
            assert raw_bytes(f.get_tensor(name)) == raw_bytes(array), name


def test_the_file_is_a_compressed_safetensors_file(tmp_path):
    tensors, path = save_every_dtype(tmp_path)
    restored = tmp_path / "all.safetensors"
    floatzip.decompress_file(path, restored)
    original, metadata = read_safetensors(restored)
    assert metadata == {"format": "np", "note": "every dtype"}
    for name, array in tensors.items():
        dtype, shape, data = original[name]
        assert dtype == _dtypes.name_of_numpy(array.dtype)
        assert shape == list(array.shape) and data == raw_bytes(array), name


def test_save_file_compresses_bf16(tmp_path):
    rng = np.random.default_rng(3)
    block = {f"model.layers.0.{n}.weight": (rng.standard_t(5, size=(128, 256)) * 0.02).astype(
        ml_dtypes.bfloat16) for n in ("q", "k", "v")}
    floatzip.save_file(block, tmp_path / "block.fzip")
    floatzip.decompress_file(tmp_path / "block.fzip", tmp_path / "block.safetensors")
    # about 11 of 16 bits per weight
    assert (tmp_path / "block.fzip").stat().st_size < 0.75 * (tmp_path / "block.safetensors").stat().st_size


def test_every_dtype_round_trips_through_torch(tmp_path):
    torch = pytest.importorskip("torch", reason="torch is not installed: torch round trips skipped")


    def torch_has(dtype_name):  # uint16/32/64 arrived in torch 2.3, float8 in 2.1
        try:
            return _dtypes.torch_dtype(dtype_name) is not None
        except TypeError:
            return False

    tensors, path = save_every_dtype(tmp_path, keep=torch_has)
    assert "model.layers.0.a.weight" in tensors and "other.f32" in tensors
    loaded = floatzip.load_file(path)  # framework="pt" by default, like safetensors.torch
    assert sorted(loaded) == sorted(tensors)
    for name, array in tensors.items():
        expected = _dtypes.torch_dtype(_dtypes.name_of_numpy(array.dtype))
        assert loaded[name].dtype == expected, name
        assert list(loaded[name].shape) == list(array.shape), name
        assert raw_bytes(loaded[name]) == raw_bytes(array), name
    # ... and back: torch tensors saved, loaded again, equal bit for bit.
    again = tmp_path / "again.fzip"
    floatzip.torch.save_file(loaded, again)
    for name, tensor in floatzip.torch.load_file(again).items():
        assert tensor.dtype == loaded[name].dtype and raw_bytes(tensor) == raw_bytes(loaded[name])
    assert isinstance(loaded["model.layers.0.a.weight"], torch.Tensor)


def test_load_file_refuses_dtypes_the_framework_lacks(tmp_path):
    torch = pytest.importorskip("torch", reason="torch is not installed")
    if hasattr(torch, "uint32"):
        pytest.skip(f"torch {torch.__version__} has uint32")
    path = tmp_path / "u32.fzip"
    floatzip.save_file({"x": np.arange(4, dtype=np.uint32)}, path)
    with pytest.raises(TypeError, match="U32 has no equivalent in torch"):
        floatzip.load_file(path)
    assert raw_bytes(floatzip.numpy.load_file(path)["x"]) == np.arange(4, dtype=np.uint32).tobytes()


def test_without_torch_framework_pt_says_what_to_do(tmp_path):
    try:
        import torch  # noqa: F401

        pytest.skip("torch is installed: this checks the message given without it")
    except ImportError:
        pass
    _, path = save_every_dtype(tmp_path)
    with pytest.raises(ImportError, match="framework='np'"):
        floatzip.load_file(path)


def test_device_cuda_without_a_gpu_is_a_clear_error(tmp_path):
    pytest.importorskip("torch", reason="torch is not installed")
    if floatzip.cuda_available():
        pytest.skip("a CUDA device is present: test_gpu.py covers device='cuda'")
    _, path = save_every_dtype(tmp_path)
    with pytest.raises(RuntimeError, match="CUDA decoder|no CUDA device"):
        floatzip.load_file(path, device="cuda")
    with pytest.raises(ValueError, match="NumPy arrays live on the CPU"):
        floatzip.load_file(path, device="cuda", framework="np")


def test_tensors_of_a_block_share_one_decoded_buffer(tmp_path):
    # Two compressible tensors of one transformer block: one coded bundle. (A block of
    # incompressible values, such as every BF16 pattern, is stored verbatim instead.)
    rng = np.random.default_rng(11)
    path = tmp_path / "block.fzip"
    floatzip.save_file(
        {
            "model.layers.0.a.weight": rng.standard_normal((64, 32)).astype(ml_dtypes.bfloat16),
            "model.layers.0.b.weight": rng.standard_t(4, size=(33, 7)).astype(ml_dtypes.bfloat16),
        },
        path,
    )
    loaded = floatzip.numpy.load_file(path)
    a, b = loaded["model.layers.0.a.weight"], loaded["model.layers.0.b.weight"]

    # load_file decoded the block once into one buffer and copied nothing out of it.
    assert buffer_root(a) is buffer_root(b)
    assert buffer_root(a).nbytes == a.nbytes + b.nbytes


def weights_of_every_format(rng):
    """Weight-like tensors of every float format the container codes, in transformer blocks
    (one bundle per format and block) and loose (packed per format)."""
    f32 = (rng.standard_t(5, size=(2, 96, 64)) * 0.02).astype(np.float32)
    widened = f32.astype(ml_dtypes.bfloat16).astype(np.float32)  # BF16 in F32: low halves zero
    scale = 448.0 / np.abs(f32).max()
    tensors = {}
    for layer in range(2):
        p = f"model.layers.{layer}."
        tensors[p + "bf16.weight"] = f32[layer].astype(ml_dtypes.bfloat16)
        tensors[p + "f16.weight"] = f32[layer].astype(np.float16)
        tensors[p + "f32.weight"] = f32[layer]
        tensors[p + "widened.weight"] = widened[layer]
        tensors[p + "e4m3.weight"] = (f32[layer] * scale).astype(ml_dtypes.float8_e4m3fn)
        tensors[p + "e5m2.weight"] = (f32[layer] * 1000).astype(ml_dtypes.float8_e5m2)
        # BF16 weights saved as F16 (bf16-in-fp16): the BF16 values rounded to F16.
        tensors[p + "f16_of_bf16.weight"] = widened[layer].astype(np.float16)
    tensors["lm_head.f16"] = f32[0, :40].astype(np.float16)
    tensors["lm_head.e4m3"] = (f32[1, :40] * scale).astype(ml_dtypes.float8_e4m3fn)
    return tensors


FORMATS = {"bf16", "fp16", "fp32", "bf16-in-fp32", "fp8-e4m3", "fp8-e5m2", "bf16-in-fp16"}


def test_every_float_format_is_coded_and_loads_bit_exactly(tmp_path):
    tensors = weights_of_every_format(np.random.default_rng(12))
    path = tmp_path / "formats.fzip"
    floatzip.save_file(tensors, path)
    totals = floatzip._floatzip.Reader(str(path)).totals()
    assert set(totals["formats"]) == FORMATS
    for name, f in totals["formats"].items():
        assert f["stored_bytes"] < f["original_bytes"], name  # coded, smaller than the values
        assert f["bits_per_value"] >= f["huffman_ideal_bits_per_value"], name
    loaded = floatzip.numpy.load_file(path)
    assert sorted(loaded) == sorted(tensors)
    for name, array in tensors.items():
        assert loaded[name].dtype == array.dtype and loaded[name].shape == array.shape, name
        assert raw_bytes(loaded[name]) == raw_bytes(array), name
    with floatzip.safe_open(path, framework="np") as f:
        for name in reversed(f.keys()):
            assert raw_bytes(f.get_tensor(name)) == raw_bytes(tensors[name]), name


def test_every_float_format_loads_into_torch(tmp_path):
    torch = pytest.importorskip("torch", reason="torch is not installed: torch round trips skipped")
    tensors = weights_of_every_format(np.random.default_rng(13))
    if not hasattr(torch, "float8_e4m3fn"):  # torch before 2.1: the other formats
        tensors = {k: v for k, v in tensors.items() if v.dtype.itemsize > 1}
    path = tmp_path / "formats.fzip"
    floatzip.save_file(tensors, path)
    loaded = floatzip.torch.load_file(path)
    expected_dtypes = {np.dtype(np.float16): torch.float16, np.dtype(np.float32): torch.float32,
                       np.dtype(ml_dtypes.bfloat16): torch.bfloat16,
                       np.dtype(ml_dtypes.float8_e4m3fn): getattr(torch, "float8_e4m3fn", None),
                       np.dtype(ml_dtypes.float8_e5m2): getattr(torch, "float8_e5m2", None)}
    for name, array in tensors.items():
        assert loaded[name].dtype == expected_dtypes[array.dtype], name
        assert list(loaded[name].shape) == list(array.shape), name
        assert raw_bytes(loaded[name]) == raw_bytes(array), name
    # Torch tensors of every format saved again: the same bytes come back.
    again = tmp_path / "again.fzip"
    floatzip.torch.save_file(loaded, again)
    for name, tensor in floatzip.torch.load_file(again).items():
        assert tensor.dtype == loaded[name].dtype and raw_bytes(tensor) == raw_bytes(loaded[name])
    with floatzip.safe_open(path, framework="pt") as f:
        for name in reversed(f.keys()):
            tensor = f.get_tensor(name)
            assert tensor.dtype == loaded[name].dtype and raw_bytes(tensor) == raw_bytes(tensors[name])


def test_a_block_of_another_format_shares_one_decoded_buffer(tmp_path):
    rng = np.random.default_rng(14)
    path = tmp_path / "f16.fzip"
    floatzip.save_file(
        {
            "model.layers.0.a.weight": (rng.standard_normal((64, 32)) * 0.02).astype(np.float16),
            "model.layers.0.b.weight": (rng.standard_t(4, size=(33, 7)) * 0.02).astype(np.float16),
        },
        path,
    )
    loaded = floatzip.numpy.load_file(path)
    a, b = loaded["model.layers.0.a.weight"], loaded["model.layers.0.b.weight"]

    assert buffer_root(a) is buffer_root(b)
    assert buffer_root(a).nbytes == a.nbytes + b.nbytes


# ---- single tensors ----------------------------------------------------------------------------


def test_compress_round_trips_every_bf16_pattern():
    data = floatzip.compress(ALL_BF16)
    assert isinstance(data, bytes)
    values = floatzip.decompress(data)
    assert values.dtype == ml_dtypes.bfloat16
    assert np.array_equal(values.view(np.uint16), ALL_BF16)
    # bytes-like inputs without a copy: memoryview and bytearray
    assert np.array_equal(floatzip.decompress(memoryview(data)).view(np.uint16), ALL_BF16)
    assert np.array_equal(floatzip.decompress(bytearray(data)).view(np.uint16), ALL_BF16)


def test_compress_shrinks_trained_like_weights_and_decompresses_into_out():
    rng = np.random.default_rng(1)
    weights = (rng.standard_t(5, size=(256, 384)) * 0.02).astype(ml_dtypes.bfloat16)
    data = floatzip.compress(weights, threads=2)
    assert len(data) < 0.75 * weights.nbytes
    out = np.empty_like(weights)
    assert floatzip.decompress(data, out=out) is out
    assert raw_bytes(out) == raw_bytes(weights)
    with pytest.raises(floatzip.FloatzipError, match="room for") as info:
        floatzip.decompress(data, out=np.empty(10, dtype=ml_dtypes.bfloat16))
    assert info.value.code == "insufficient_space"


def test_compress_with_torch_tensors():
    torch = pytest.importorskip("torch", reason="torch is not installed: torch round trips skipped")
    t = torch.randn(64, 48).to(torch.bfloat16)
    data = floatzip.compress(t.t())  # not contiguous: compressed in row-major order of t.t()
    out = torch.empty(48, 64, dtype=torch.bfloat16)
    floatzip.decompress(data, out=out)
    assert torch.equal(out, t.t())
    assert raw_bytes(floatzip.decompress(floatzip.compress(t))) == raw_bytes(t)
    with pytest.raises(TypeError, match="BF16 only"):
        floatzip.compress(t.float())


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.int16, np.uint8])
def test_compress_is_bf16_only(dtype):
    with pytest.raises(TypeError, match="BF16 only"):
        floatzip.compress(np.zeros(8, dtype=dtype))


def test_decompress_rejects_bad_data():
    data = floatzip.compress(ALL_BF16)
    for bad in (b"", data[:100], b"\0" * len(data), data[: len(data) // 2]):
        with pytest.raises(floatzip.FloatzipError) as info:
            floatzip.decompress(bad)
        assert info.value.code in {"truncated", "bad_data", "unsupported_version"}
        assert str(info.value)
    # Corrupt exponent codewords: found while decoding, reported, nothing crashes.
    corrupt = bytearray(data)
    for i in range(len(corrupt) - 200, len(corrupt) - 100):
        corrupt[i] ^= 0x5A
    try:
        floatzip.decompress(bytes(corrupt))
    except floatzip.FloatzipError as e:
        assert e.code == "bad_data"


# ---- files: errors ------------------------------------------------------------------------------


def test_bad_files_raise_floatzip_errors(tmp_path):
    _, path = save_every_dtype(tmp_path)
    good = path.read_bytes()
    cases = {
        "truncated": good[: len(good) // 2],
        "empty": b"",
        "not a container": b"not a floatzip file at all" * 10,
        "flipped bundle byte": good[:-200] + bytes([good[-200] ^ 1]) + good[-199:],
        "flipped header byte": good[:20] + bytes([good[20] ^ 1]) + good[21:],
    }
    for what, data in cases.items():
        bad = tmp_path / "bad.fzip"
        bad.write_bytes(data)
        with pytest.raises(floatzip.FloatzipError) as info:
            floatzip.load_file(bad, framework="np")
            with floatzip.safe_open(bad, framework="np") as f:
                for name in f.keys():
                    f.get_tensor(name)
        assert info.value.code in {"truncated", "bad_data", "unsupported_version",
                                   "checksum_mismatch"}, what
        assert "bad.fzip" in str(info.value), what
        with pytest.raises(floatzip.FloatzipError):
            floatzip.decompress_file(bad, tmp_path / "out.safetensors")
        assert not (tmp_path / "out.safetensors").exists()  # nothing half-written left
    with pytest.raises(floatzip.FloatzipError) as info:
        floatzip.load_file(tmp_path / "missing.fzip")
    assert info.value.code == "io_error"


def test_error_messages_are_the_clis(tmp_path, cli):
    _, path = save_every_dtype(tmp_path)
    data = path.read_bytes()
    bad = tmp_path / "bad.fzip"
    bad.write_bytes(data[: len(data) - 1000])
    with pytest.raises(floatzip.FloatzipError) as info:
        floatzip.decompress_file(bad, tmp_path / "out.safetensors")
    run = subprocess.run([cli, "decompress", str(bad), "-o", str(tmp_path / "cli.safetensors")],
                         capture_output=True, text=True)
    assert run.returncode != 0
    assert f"floatzip: error: {info.value}" in run.stderr


def test_compress_file_of_a_bad_safetensors_file_leaves_nothing(tmp_path):
    src = tmp_path / "bad.safetensors"
    src.write_bytes((20).to_bytes(8, "little") + b'{"x": {"dtype": "Q"}')
    dst = tmp_path / "bad.fzip"
    with pytest.raises(floatzip.FloatzipError):
        floatzip.compress_file(src, dst)
    assert list(tmp_path.iterdir()) == [src]


def test_save_file_checks_its_arguments(tmp_path):
    with pytest.raises(TypeError, match="metadata"):
        floatzip.save_file({"x": np.zeros(2, np.float32)}, tmp_path / "x.fzip", metadata={"a": 1})
    with pytest.raises(TypeError, match="no safetensors equivalent"):
        floatzip.save_file({"x": np.zeros(2, np.complex128)}, tmp_path / "x.fzip")
    with pytest.raises(ValueError, match="framework"):
        floatzip.load_file(tmp_path / "x.fzip", framework="jax")
    assert list(tmp_path.iterdir()) == []  # no staging file left behind


# ---- the stubs ---------------------------------------------------------------------------------


def test_the_stubs_name_what_the_extension_defines():
    stub = pathlib.Path(floatzip.__file__).with_name("_floatzip.pyi").read_text()
    declared = set(re.findall(r"^(?:def|class) (\w+)", stub, re.M))
    declared |= set(re.findall(r"^(\w+): ", stub, re.M))
    defined = {n for n in dir(floatzip._floatzip) if not n.startswith("__")}
    cuda_only = {n for n in declared if n.startswith("cuda_")}
    assert defined == declared - (set() if floatzip._floatzip.has_cuda else cuda_only)


def test_threads_load_and_compress_at_once(tmp_path):
    """The GIL is released while the library works: several Python threads decode and encode at
    the same time, each getting exactly its own result."""
    import concurrent.futures

    tensors, path = save_every_dtype(tmp_path)
    rng = np.random.default_rng(11)
    arrays = [rng.standard_normal(50_000).astype(ml_dtypes.bfloat16) for _ in range(4)]

    def load(_):
        return floatzip.numpy.load_file(path, threads=1)

    def round_trip(array):
        return floatzip.decompress(floatzip.compress(array, threads=1))

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        loads = list(pool.map(load, range(4)))
        trips = list(pool.map(round_trip, arrays))
    for loaded in loads:
        for name, array in tensors.items():
            assert raw_bytes(loaded[name]) == raw_bytes(array), name
    for array, back in zip(arrays, trips):
        assert raw_bytes(back) == raw_bytes(array)
