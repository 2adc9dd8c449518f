#!/usr/bin/env bash
# Sets up, builds Release and runs the main job: `floatzip demo`, which generates a Llama-shaped
# checkpoint (about 256 MB), compresses, verifies and reports. Arguments go to `floatzip demo`.
# BUILD_DIR (default: build) and JOBS (default: 2) may be set in the environment.
set -euo pipefail
cd "$(dirname "$0")/../.."

./cmake/scripts/setup.sh
build_dir=${BUILD_DIR:-build}
jobs=${JOBS:-2}

cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DFLOATZIP_CUDA=AUTO
cmake --build "$build_dir" -j "$jobs" --target floatzip_cli
exec "$build_dir/examples/floatzip" demo "$@"

