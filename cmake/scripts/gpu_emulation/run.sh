#!/usr/bin/env bash
# Host emulation of the llama_generate GPU engine (NOT a GPU test): checks the engine's plumbing
# (offsets, plans, cuBLAS call shapes per the cuBLAS docs, kernel index arithmetic, load/resident
# logic) by compiling examples/llama_generate/gpu_engine.cu as C++ against the shims in include/
# (kernels run on host threads; floatzip::decompress runs the CPU executor) and running the real
# tests/test_llama_gpu.cpp and llama_generate --device gpu --verify under ASan/UBSan.
# Usage: cmake/scripts/gpu_emulation/run.sh [WORK_DIR]   (about 4 min of compiling, 5 min of tests)
# Models: $FLOATZIP_MODELS_DIR, else ../shared/models beside the repository.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
models=${FLOATZIP_MODELS_DIR:-$repo/../shared/models}
if [[ ! -f "$models/stories260K.bf16.safetensors" ]]; then
  echo "gpu_emulation: no models at $models (set FLOATZIP_MODELS_DIR); nothing to run" >&2
  exit 2
fi
models=$(cd "$models" && pwd)
work=${1:-/tmp/gpu_emu_run}
mkdir -p "$work"
cd "$work"
flags=(-std=c++20 -O1 -g -fsanitize=address,undefined -I"$here/include" -I"$repo/include")
python3 - "$repo/examples/llama_generate/gpu_engine.cu" gpu_engine_emu.cpp <<'PY'
import re, sys
src = open(sys.argv[1]).read()
barrier = {'rmsnorm_kernel', 'attention_kernel'}  # the kernels that call __syncthreads
out = re.sub(r'(\w+)<<<(.*?)>>>\(', lambda m: 'emu::launch<%s>(%s, %s, ' % (
    'true' if m.group(1) in barrier else 'false', m.group(2), m.group(1)), src, flags=re.S)
open(sys.argv[2], 'w').write(out)
PY
g++ "${flags[@]}" -I"$repo/examples/llama_generate" -c gpu_engine_emu.cpp -o gpu_engine_emu.o
g++ "${flags[@]}" -c "$here/emu_floatzip.cpp" -o emu_floatzip.o
g++ "${flags[@]}" -I"$repo/tests" -c "$repo/tests/test_llama_gpu.cpp" -o test_llama_gpu.o
g++ -fsanitize=address,undefined -o test_llama_gpu_emu test_llama_gpu.o gpu_engine_emu.o \
  emu_floatzip.o -lgtest_main -lgtest -lxxhash -lzstd -pthread
g++ "${flags[@]}" -DLLAMA_GENERATE_GPU -c "$repo/examples/llama_generate/main.cpp" -o main_emu.o
g++ -fsanitize=address,undefined -o llama_generate_emu main_emu.o gpu_engine_emu.o emu_floatzip.o \
  -lfmt -lxxhash -lzstd -pthread
g++ -std=c++20 -O2 -I"$repo/include" "$here/compress.cpp" -o compress -lxxhash -lzstd -pthread
FLOATZIP_MODELS_DIR=$models ./test_llama_gpu_emu
./compress "$models/stories260K.bf16.safetensors" stories260K.fzip
./llama_generate_emu stories260K.fzip --config "$models/stories260K.config.json" \
  --tokenizer "$models/stories260K.tok512.bin" --prompt "Once upon a time" --steps 20 \
  --device gpu --verify "$models/stories260K.bf16.safetensors"
