"""examples/hf_llama.py: a Hugging Face Llama loaded from a .fzip through load_state_dict gives
the same logits as one loaded from the original safetensors file. Skips without transformers."""

import importlib.util
import pathlib

import pytest
from conftest import models_dir

EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "examples" / "hf_llama.py"


def run_example(*args):
    pytest.importorskip("torch", reason="torch is not installed: the Hugging Face example skipped")
    pytest.importorskip("transformers",
                        reason="transformers is not installed: the Hugging Face example skipped")
    if not (models_dir() / "stories260K.bf16.safetensors").exists():
        pytest.skip(f"models directory {models_dir()} not found")
    spec = importlib.util.spec_from_file_location("hf_llama", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(["--models", str(models_dir()), *args])


def test_hf_llama_logits_are_identical(capsys):
    assert run_example() == 0
    assert "identical to the safetensors model" in capsys.readouterr().out


@pytest.mark.gpu
def test_hf_llama_logits_are_identical_on_the_gpu(capsys):
    assert run_example("--device", "cuda") == 0
    assert "identical to the safetensors model" in capsys.readouterr().out
