"""floatzip.load_file on the CPU against the C++ decoder doing the same work, interleaved.

    python bench/python_load.py [--layers 4] [--dim 1024] [--hidden 2752] [--rounds 9]

Writes a Llama-shaped BF16 checkpoint (Student-t weights at per-matrix scales of 0.01-0.04, one
bundle per transformer block) as a .fzip with save_file, then times, round after round:
  native  floatzip._floatzip.decode_all_native: open the file and decode every bundle into
          buffers of its own in C++ (container_reader::decode_bundle), nothing else
  np      floatzip.load_file(path, framework="np")
  pt      floatzip.load_file(path) (torch tensors), when torch is installed
and reports each one's median time and the median of the per-round ratios to native (the ratio
is taken within a round, so that a machine that changes speed between rounds, or other work on
it, affects both sides alike). Needs the floatzip package installed (cmake/scripts/python_tests.sh
makes a venv that has it: build/python/venv/bin/python bench/python_load.py).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import ml_dtypes
import numpy as np

import floatzip
from floatzip import _floatzip


def llama_tensors(layers: int, dim: int, hidden: int, vocab: int, seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)

    def weight(*shape):
        scale = rng.uniform(0.01, 0.04)
        return (rng.standard_t(5, size=shape).astype(np.float32) * scale).astype(ml_dtypes.bfloat16)

    tensors = {"model.embed_tokens.weight": weight(vocab, dim),
               "model.norm.weight": np.ones(dim, dtype=ml_dtypes.bfloat16)}
    for i in range(layers):
        p = f"model.layers.{i}."
        tensors[p + "self_attn.q_proj.weight"] = weight(dim, dim)
        tensors[p + "self_attn.k_proj.weight"] = weight(dim, dim)
        tensors[p + "self_attn.v_proj.weight"] = weight(dim, dim)
        tensors[p + "self_attn.o_proj.weight"] = weight(dim, dim)
        tensors[p + "mlp.gate_proj.weight"] = weight(hidden, dim)
        tensors[p + "mlp.up_proj.weight"] = weight(hidden, dim)
        tensors[p + "mlp.down_proj.weight"] = weight(dim, hidden)
        tensors[p + "input_layernorm.weight"] = np.ones(dim, dtype=ml_dtypes.bfloat16)
        tensors[p + "post_attention_layernorm.weight"] = np.ones(dim, dtype=ml_dtypes.bfloat16)
    return tensors


def timed(fn) -> float:
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    del result  # freed outside the timed region
    return seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--hidden", type=int, default=2752)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--threads", type=int, default=0, help="decoder threads, 0 = all cores")
    args = parser.parse_args(argv)

    try:
        import torch  # noqa: F401
        have_torch = True
    except ImportError:
        have_torch = False

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "llama.fzip")
        tensors = llama_tensors(args.layers, args.dim, args.hidden, args.vocab)
        floatzip.save_file(tensors, path)
        original = sum(t.nbytes for t in tensors.values())
        del tensors
        print(f"checkpoint: {original / 1e6:.1f} MB BF16 in {args.layers} blocks, "
              f".fzip {os.path.getsize(path) / 1e6:.1f} MB; {args.rounds} rounds, "
              f"threads={args.threads or os.cpu_count()}")
        cases = {
            "native": lambda: _floatzip.decode_all_native(path, args.threads),
            "np": lambda: floatzip.load_file(path, framework="np", threads=args.threads),
        }
        if have_torch:
            cases["pt"] = lambda: floatzip.load_file(path, threads=args.threads)
        for fn in cases.values():  # warm the page cache and the allocator
            timed(fn)
        times = {name: [] for name in cases}
        for r in range(args.rounds):
            order = list(cases) if r % 2 == 0 else list(reversed(cases))  # alternate the order
            for name in order:
                times[name].append(timed(cases[name]))
    native = times["native"]
    for name, series in times.items():
        ratios = [t / n for t, n in zip(series, native)]
        print(f"{name:7s} median {statistics.median(series) * 1e3:8.1f} ms  "
              f"{original / statistics.median(series) / 1e9:6.2f} GB/s  "
              f"ratio to native: median {statistics.median(ratios):.3f} "
              f"(min {min(ratios):.3f}, max {max(ratios):.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
