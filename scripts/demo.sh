#!/usr/bin/env bash
# Sets up, builds Release and runs the main job: `floatzip demo` from the command-line tool, or,
# in a tree that does not have the tool yet, the codec benchmark. Arguments go to the program.
# BUILD_DIR (default: build) and JOBS (default: 2) may be set in the environment.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup.sh
build_dir=${BUILD_DIR:-build}
jobs=${JOBS:-2}

cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DFLOATZIP_CUDA=AUTO
targets=$(cmake --build "$build_dir" --target help)
has_target() { grep -q "^$1:" <<<"$targets"; }

if has_target floatzip_cli; then
  cmake --build "$build_dir" -j "$jobs" --target floatzip_cli
  exec "$build_dir/examples/floatzip" demo "$@"
elif has_target floatzip_bench_codec; then
  cmake --build "$build_dir" -j "$jobs" --target floatzip_bench_codec
  exec "$build_dir/bench/floatzip_bench_codec" "$@"
else
  echo "demo: neither the floatzip tool nor the codec benchmark is part of this tree" >&2
  exit 1
fi
