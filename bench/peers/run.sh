#!/usr/bin/env bash
# floatzip against its peers (ZipNN, zstd) on the same files in one run. See README.md here.
#
#   bench/peers/run.sh                      # every model in ../shared/models (BF16, F16, F32),
#                                           # BF16-in-F32 and FP8 files made from them
#                                           # (floatzip_format_files) + a 256 MB generated
#                                           # Llama-shaped checkpoint, 3 repetitions
#   bench/peers/run.sh --reps 5 --llama-mb 0 FILE...   # chosen files, no generated checkpoint
#
# Makes its own virtual environment (build/peers-venv) with a pinned ZipNN, installs the zstd
# command from Debian when it is missing, and builds the floatzip command (Release) when
# build/examples/floatzip or build/bench/floatzip_format_files is absent.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${FLOATZIP_PEERS_VENV:-$root/build/peers-venv}"
# Pinned: the version the published table was measured with. ZipNN's package depends on torch
# (imported at module load even for byte input), so the environment is large (~3 GB).
zipnn_version="0.5.4"
zstandard_version="0.25.0"

sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
if ! command -v zstd > /dev/null; then
  sudo_if_needed apt-get update -q && sudo_if_needed apt-get install -y -q zstd
fi
if ! python3 -c 'import venv, ensurepip' 2> /dev/null; then
  sudo_if_needed apt-get update -q && sudo_if_needed apt-get install -y -q python3-venv
fi
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c "import zipnn, zstandard, importlib.metadata as m; \
assert m.version('zipnn') == '$zipnn_version'" 2> /dev/null; then
  "$venv/bin/pip" install -q "zipnn==$zipnn_version" "zstandard==$zstandard_version"
fi

floatzip="${FLOATZIP_BIN:-$root/build/examples/floatzip}"
format_files="${FLOATZIP_FORMAT_FILES_BIN:-$root/build/bench/floatzip_format_files}"
if [ ! -x "$floatzip" ] || [ ! -x "$format_files" ]; then
  "$root/cmake/scripts/setup.sh"
  cmake -S "$root" -B "$root/build" -G Ninja -DCMAKE_BUILD_TYPE=Release > /dev/null
  cmake --build "$root/build" --target floatzip_cli floatzip_format_files
fi
exec "$venv/bin/python" "$here/peers.py" --floatzip "$floatzip" --format-files "$format_files" \
  --root "$root" "$@"
