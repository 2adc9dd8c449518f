"""Loads a Hugging Face Llama model from a .fzip file through load_state_dict, and shows that its
logits are identical to those of the same model loaded from the original safetensors file.

    python python/examples/hf_llama.py [--models ../shared/models] [--device cpu|cuda]

Builds transformers' LlamaForCausalLM from stories260K.config.json (llama2.c's field names),
compresses stories260K.bf16.safetensors to a temporary .fzip, loads each file's weights into a
model of its own, runs both on the same tokens and compares the logits bit for bit. Needs torch
and transformers; exits 0 when the logits are identical, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import tempfile

import torch
import transformers

import floatzip

HERE = pathlib.Path(__file__).resolve()
DEFAULT_MODELS = HERE.parents[2].parent / "shared" / "models"


def llama_config(path: pathlib.Path) -> transformers.LlamaConfig:
    """transformers' config from the llama2.c-style config the models folder ships."""
    c = json.loads(path.read_text())
    return transformers.LlamaConfig(
        hidden_size=c["dim"],
        intermediate_size=c["hidden_dim"],
        num_hidden_layers=c["n_layers"],
        num_attention_heads=c["n_heads"],
        num_key_value_heads=c["n_kv_heads"],
        vocab_size=c["vocab_size"],
        max_position_embeddings=c["seq_len"],
        rms_norm_eps=c["rms_norm_eps"],
        rope_theta=c["rope_theta"],
        tie_word_embeddings=c["tied_embeddings"],
        torch_dtype=torch.bfloat16,
    )


def read_safetensors(path: pathlib.Path) -> dict:
    """The reference load: safetensors' own loader (a dependency of transformers)."""
    from safetensors.torch import load_file

    return load_file(str(path))


def model_with(config: transformers.LlamaConfig, state: dict, device: str) -> torch.nn.Module:
    model = transformers.LlamaForCausalLM(config).to(torch.bfloat16)
    missing, unexpected = model.load_state_dict(state, strict=False)
    # A tied output head is the embedding: the file has no lm_head.weight of its own.
    if unexpected or set(missing) - {"lm_head.weight"}:
        raise RuntimeError(f"state dict mismatch: missing {missing}, unexpected {unexpected}")
    if config.tie_word_embeddings:
        model.tie_weights()
    return model.to(device).eval()


def logits_of(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(tokens).logits


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=pathlib.Path, default=DEFAULT_MODELS)
    parser.add_argument("--model", default="stories260K")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    original = args.models / f"{args.model}.bf16.safetensors"
    config = llama_config(args.models / f"{args.model}.config.json")
    with tempfile.TemporaryDirectory() as folder:
        compressed = pathlib.Path(folder) / f"{args.model}.fzip"
        totals = floatzip.compress_file(original, compressed)
        print(f"{original.name}: {totals['original_bytes']:,} bytes -> {compressed.name}: "
              f"{totals['file_bytes']:,} bytes ({totals['bits_per_bf16_value']:.2f} bits/weight)")
        fzip_state = floatzip.load_file(compressed, device=args.device)

    reference = model_with(config, read_safetensors(original), args.device)
    from_fzip = model_with(config, fzip_state, args.device)
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, config.vocab_size, (2, 32), generator=generator).to(args.device)
    expected, actual = logits_of(reference, tokens), logits_of(from_fzip, tokens)
    same = torch.equal(expected.view(torch.int16), actual.view(torch.int16)) if (
        expected.dtype == torch.bfloat16) else torch.equal(expected, actual)
    print(f"logits {tuple(actual.shape)} {actual.dtype} on {args.device}: "
          + ("identical to the safetensors model" if same else "DIFFERENT"))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
