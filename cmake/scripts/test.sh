#!/usr/bin/env bash
# Sets up, builds (Release, CUDA when a compiler is found) and runs every test. GPU tests skip
# themselves on machines without a GPU. Extra arguments go to the CMake configure step, e.g.
#   ./cmake/scripts/test.sh -DFLOATZIP_WERROR=ON
# BUILD_DIR (default: build) and JOBS (default: 2) may be set in the environment.
set -euo pipefail
cd "$(dirname "$0")/../.."

./cmake/scripts/setup.sh
build_dir=${BUILD_DIR:-build}
jobs=${JOBS:-2}

cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DFLOATZIP_CUDA=AUTO "$@"
cmake --build "$build_dir" -j "$jobs"
ctest --test-dir "$build_dir" --output-on-failure -j "$jobs"
