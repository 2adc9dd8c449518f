#!/usr/bin/env bash
# The Python package's tests: makes (or reuses) a virtual environment, builds and installs the
# package from python/ into it, and runs its pytest suite (python/tests).
#
#   cmake/scripts/python_tests.sh [WORK_DIR] [pytest arguments...]
#
# WORK_DIR (default build/python) holds the environment (venv/) and the extension's CMake build
# (build/, reused, so a rerun recompiles only what changed). ctest runs this as the test
# `python_package` (label python) of the build directory that test.sh configures, whose CMake
# writes WORK_DIR/cmake-defines.txt: NAME=VALUE lines (warnings as errors, CUDA, architectures)
# that the extension is configured with too.
#
# The environment sees the system's site-packages, so Debian's python3-torch (installed by
# `FLOATZIP_WITH_TORCH=1 cmake/scripts/setup.sh`) is used where present; without torch the torch
# tests skip with a message. pip installs what is missing of nanobind, scikit-build-core,
# ml_dtypes, pytest and numpy, and (optional, for the comparisons and the Hugging Face example)
# safetensors and, where torch is, transformers; from pip's cache when it can.
#
# Environment: FLOATZIP_PYTHON (the interpreter; default /usr/bin/python3 where it exists, so
# that Debian's packages fit), FLOATZIP_PYTHON_CMAKE_ARGS (extra -D options for the extension's
# configure, e.g. "-DFLOATZIP_WERROR=ON -DFLOATZIP_CUDA=OFF"), FLOATZIP_MODELS_DIR and
# FLOATZIP_CLI (passed on to the tests).
#
# Exit status: pytest's. 5 means pytest collected no test; ctest reports that as a skipped test
# (SKIP_RETURN_CODE), so it neither passes silently nor fails the run.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
work_dir=$(mkdir -p "${1:-$repo/build/python}" && cd "${1:-$repo/build/python}" && pwd)
shift $(($# > 0 ? 1 : 0))

python=${FLOATZIP_PYTHON:-}
if [[ -z $python ]]; then
  if [[ -x /usr/bin/python3 ]]; then python=/usr/bin/python3; else python=python3; fi
fi
venv=$work_dir/venv

if [[ ! -x $venv/bin/python ]]; then
  echo "python_tests: making $venv"
  "$python" -m venv --system-site-packages "$venv"
fi
have() { "$venv/bin/python" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('$1') is None)"; }

# What the tests need and the environment (or the system) lacks comes from pip; nothing is asked
# of the network when everything is there (a rerun, or an offline machine that has it all).
# numpy stays the system's when it has one: Debian's torch is built against it, and a numpy 2
# from pip in front of it breaks torch's NumPy interop.
needed=()
for spec in nanobind:nanobind scikit_build_core:scikit-build-core ml_dtypes:ml_dtypes \
  pytest:pytest numpy:numpy; do
  have "${spec%%:*}" || needed+=("${spec#*:}")
done
pin=()
if numpy_version=$("$venv/bin/python" -c 'import numpy; print(numpy.__version__)' 2>/dev/null); then
  pin=("numpy==$numpy_version")
fi
if ((${#needed[@]} > 0)); then
  echo "python_tests: installing ${needed[*]}"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${needed[@]}" "${pin[@]}"
fi
# Optional: safetensors (the reference the loads are compared with) and, where torch is, the
# Hugging Face example's transformers (before 4.45 for a torch 1.x such as Debian's 1.13). The
# tests that need them skip without them, so a failed install is only reported.
optional=()
have safetensors || optional+=(safetensors)
if have torch && ! have transformers; then
  if "$venv/bin/python" -c 'import sys, torch; sys.exit(int(torch.__version__.split(".")[0]) >= 2)'; then
    optional+=("transformers<4.45")
  else
    optional+=(transformers)
  fi
fi
if ((${#optional[@]} > 0)); then
  echo "python_tests: installing ${optional[*]} (optional)"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${optional[@]}" \
    "${pin[@]}" || echo "python_tests: could not install ${optional[*]}; their tests will skip"
fi

# The package, built by scikit-build-core against the venv's nanobind (no isolated build env:
# nothing to download again), into a build directory kept between runs.
config=(--config-settings=build-dir="$work_dir/build")
if command -v ccache >/dev/null; then
  export CCACHE_BASEDIR=${CCACHE_BASEDIR:-$repo} CCACHE_NOHASHDIR=true
  config+=(--config-settings=cmake.define.CMAKE_CXX_COMPILER_LAUNCHER=ccache
           --config-settings=cmake.define.CMAKE_CUDA_COMPILER_LAUNCHER=ccache)
fi
if [[ -f $work_dir/cmake-defines.txt ]]; then
  while IFS= read -r define; do
    [[ -n $define ]] && config+=(--config-settings=cmake.define."$define")
  done <"$work_dir/cmake-defines.txt"
fi
for arg in ${FLOATZIP_PYTHON_CMAKE_ARGS:-}; do
  [[ $arg == -D* ]] || { echo "python_tests: not a -D option: $arg" >&2; exit 2; }
  config+=(--config-settings=cmake.define."${arg#-D}")
done
echo "python_tests: building and installing python/ into $venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-build-isolation \
  --no-deps --force-reinstall "${config[@]}" "$repo/python"

# From the work dir, so that `import floatzip` finds the installed package, not python/floatzip.
cd "$work_dir"
export FLOATZIP_MODELS_DIR=${FLOATZIP_MODELS_DIR:-$repo/../shared/models}
status=0
"$venv/bin/python" -m pytest -p no:cacheprovider -ra "$repo/python/tests" "$@" || status=$?
if ((status == 5)); then
  echo "python_tests: pytest collected no tests (exit 5): reported as skipped, not passed" >&2
fi
exit "$status"
