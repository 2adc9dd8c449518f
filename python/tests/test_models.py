"""The real models of ../shared/models: byte-exact file round trips, the CLI's output, and
tensors that match the original safetensors files bit for bit."""

import subprocess

import pytest
from conftest import raw_bytes, read_safetensors

import floatzip


def test_file_round_trip_is_byte_exact(model, tmp_path):
    compressed = tmp_path / "model.fzip"
    restored = tmp_path / "model.safetensors"
    totals = floatzip.compress_file(model, compressed)
    assert totals["original_bytes"] == model.stat().st_size
    assert totals["file_bytes"] == compressed.stat().st_size
    floatzip.decompress_file(compressed, restored)
    assert restored.read_bytes() == model.read_bytes()
    floatzip.verify_file(model, compressed)


def test_compress_file_writes_what_the_cli_writes(model, tmp_path, cli):
    ours = tmp_path / "python.fzip"
    theirs = tmp_path / "cli.fzip"
    floatzip.compress_file(model, ours, threads=1)
    subprocess.run([cli, "compress", str(model), "-o", str(theirs)], check=True,
                   capture_output=True)
    assert ours.read_bytes() == theirs.read_bytes()


@pytest.mark.parametrize("framework", ["np", "pt"])
def test_load_file_matches_the_original(model, tmp_path, framework):
    if framework == "pt":
        pytest.importorskip("torch", reason="torch is not installed: torch round trips skipped")
    compressed = tmp_path / "model.fzip"
    floatzip.compress_file(model, compressed)
    original, _ = read_safetensors(model)
    loaded = floatzip.load_file(compressed, framework=framework)
    assert list(loaded) == list(original)  # the order of the data, as safetensors' load_file
    for name, (dtype, shape, data) in original.items():
        assert list(loaded[name].shape) == shape, name
        assert raw_bytes(loaded[name]) == data, name


def test_safe_open_reads_single_tensors(model, tmp_path):
    compressed = tmp_path / "model.fzip"
    floatzip.compress_file(model, compressed)
    original, metadata = read_safetensors(model)
    with floatzip.safe_open(compressed, framework="np") as f:
        assert f.keys() == sorted(original)
        assert f.offset_keys() == list(original)
        assert f.metadata() == metadata
        # Backwards through the keys, so that the bundle cache is changed at every block.
        for name in reversed(f.keys()):
            tensor = f.get_tensor(name)
            assert raw_bytes(tensor) == original[name][2], name
            root = tensor  # a tensor of its own, not a view pinning its whole bundle
            while root.base is not None:
                root = root.base
            assert root.nbytes == tensor.nbytes, name
        with pytest.raises(KeyError, match="no tensor named"):
            f.get_tensor("not.a.tensor")
    with pytest.raises(ValueError, match="closed"):
        f.keys()


def test_load_file_is_safetensors_load_file(model, tmp_path):
    """The issue's 'done': floatzip.load_file(.fzip) == safetensors.torch.load_file(original)."""
    pytest.importorskip("torch", reason="torch is not installed")
    st = pytest.importorskip("safetensors.torch", reason="safetensors is not installed")
    compressed = tmp_path / "model.fzip"
    floatzip.compress_file(model, compressed)
    expected = st.load_file(str(model))
    loaded = floatzip.load_file(compressed)
    assert list(loaded) == list(expected)
    for name, tensor in expected.items():
        assert loaded[name].dtype == tensor.dtype and loaded[name].shape == tensor.shape, name
        assert raw_bytes(loaded[name]) == raw_bytes(tensor), name
