#!/usr/bin/env bash
# Installs what floatzip needs to build and test on Debian bookworm (or a derivative). Idempotent:
# when every package is already there it touches nothing and needs no network or root.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config git
  libgtest-dev libgmock-dev libbenchmark-dev
  libfmt-dev nlohmann-json3-dev libxxhash-dev libzstd-dev zstd
  clang-format clang-tidy
  clang-14 libclang-rt-14-dev  # libFuzzer for the container fuzz target
  ccache                       # CI reuses compilations between runs on the same machine
)

missing=()
for package in "${packages[@]}"; do
  dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done

if ((${#missing[@]} > 0)); then
  echo "setup: installing ${missing[*]}"
  as_root=()
  if ((EUID != 0)); then
    command -v sudo >/dev/null || { echo "setup: need root (or sudo) to install ${missing[*]}" >&2; exit 1; }
    as_root=(sudo)
  fi
  "${as_root[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq --no-install-recommends \
    "${missing[@]}"
fi

# The CUDA toolkit is not a Debian package here; CMake finds /usr/local/cuda by itself.
if command -v nvcc >/dev/null || [[ -x /usr/local/cuda/bin/nvcc ]]; then
  echo "setup: CUDA compiler found, the GPU decoder will be built"
else
  echo "setup: no CUDA compiler, building the CPU side only"
fi
