#!/usr/bin/env bash
# The GPU decode kernel's cost model, on any machine with the CUDA toolkit and no GPU:
#
#   cmake/scripts/kernel_model.sh BUILD_DIR [--no-build] [--quick] [--llama-mib N]
#
# BUILD_DIR: a Release build with FLOATZIP_CUDA=ON whose CMAKE_CUDA_ARCHITECTURES include 90 (the
# model reads the sm_90 cubin). Builds floatzip_cuda and floatzip_gpu_model there, runs the
# warp-lockstep replay (bench/bench_gpu_model.cpp) on the real models and the Llama-shaped block
# (64 MiB by default), reads the SASS with cuobjdump/nvdisasm (the toolkit's when it has them,
# else the registry wheels nvidia-cuda-cuobjdump / nvidia-cuda-nvdisasm installed into a venv at
# BUILD_DIR/kernel_model_venv) and prints the model (cmake/scripts/kernel_model.py) as a table.
# The last line is one JSON object for the default options on the Llama-shaped block. A MODEL,
# not a measurement. --quick: default options only (CI runs it with --llama-mib 8). --no-build:
# use the targets as built (ctest passes it: a second ninja in the same build folder, beside
# ctest's other tests, could clash).
set -euo pipefail
if (($# < 1)); then
  echo "usage: $0 BUILD_DIR [--quick] [--llama-mib N]" >&2
  exit 2
fi
build_dir=$(cd "$1" && pwd)
shift
source_dir=$(cd "$(dirname "$0")/../.." && pwd)

if [[ ${1:-} == --no-build ]]; then
  shift
else
  cmake --build "$build_dir" --target floatzip_cuda floatzip_gpu_model >&2
fi
[[ -x $build_dir/bench/floatzip_gpu_model ]] ||
  { echo "kernel_model: $build_dir/bench/floatzip_gpu_model not built" >&2; exit 1; }
object="$build_dir/cuda/CMakeFiles/floatzip_cuda.dir/floatzip_cuda.cu.o"
[[ -f $object ]] || { echo "kernel_model: $object not found (a FLOATZIP_CUDA=ON build?)" >&2; exit 1; }

find_tool() {
  local name=$1
  for candidate in "$(command -v "$name" 2>/dev/null || true)" "/usr/local/cuda/bin/$name" \
    "$build_dir/kernel_model_venv/bin/$name"; do
    [[ -n $candidate && -x $candidate ]] && { echo "$candidate"; return 0; }
  done
  return 1
}
if ! cuobjdump=$(find_tool cuobjdump) || ! nvdisasm=$(find_tool nvdisasm); then
  venv="$build_dir/kernel_model_venv"
  echo "kernel_model: installing cuobjdump/nvdisasm (PyPI wheels) into $venv" >&2
  [[ -x $venv/bin/pip ]] || python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm >&2
  for tool in cuobjdump nvdisasm; do
    found=$(find "$venv" -path "*/nvidia/*/bin/$tool" -type f | head -1)
    [[ -n $found ]] || { echo "kernel_model: $tool not found in the wheels" >&2; exit 1; }
    chmod +x "$found"
    ln -sf "$found" "$venv/bin/$tool"
  done
  cuobjdump=$(find_tool cuobjdump)
  nvdisasm=$(find_tool nvdisasm)
fi

lockstep="$build_dir/kernel_model_lockstep.jsonl"
"$build_dir/bench/floatzip_gpu_model" "$@" >"$lockstep"
python3 "$source_dir/cmake/scripts/kernel_model.py" --cuobjdump "$cuobjdump" --nvdisasm "$nvdisasm" \
  --object "$object" --source-dir "$source_dir" --lockstep "$lockstep"
