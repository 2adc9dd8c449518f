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
  python3-dev python3-venv     # the Python package (python/) and its tests' virtual environment
)
# Debian's PyTorch for the Python package's torch tests (which skip without it): about 150 MB
# of packages and 1.5 minutes to install on the 2-core VM, so only on request.
if [[ ${FLOATZIP_WITH_TORCH:-0} == 1 ]]; then
  packages+=(python3-torch)
fi

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
