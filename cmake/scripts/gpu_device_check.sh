#!/usr/bin/env bash
# The GPU check, prepared for a bare GPU machine (nvcc, CMake, ninja, ncu, compute-sanitizer, but
# none of the -dev packages the build needs, no network, minutes of device time):
#
#   cmake/scripts/gpu_device_check.sh prepare    # here, with network: fills gpu_carry/
#   cmake/scripts/gpu_device_check.sh rehearse   # here: configure and build from gpu_carry/ alone
#   cmake/scripts/gpu_device_check.sh device     # on the GPU machine, with gpu_carry/ carried
#   cmake/scripts/gpu_device_check.sh sanitize   # on the GPU machine: compute-sanitizer
#   cmake/scripts/gpu_device_check.sh python     # on the GPU machine: the Python package's
#                                                # device="cuda" tests
#
# prepare  downloads the Debian packages the build needs (fmt, nlohmann-json, xxhash, GoogleTest,
#          Google Benchmark, zstd, with their runtime libraries) with `apt-get download`, unpacks
#          them with `dpkg -x` into gpu_carry/root, and copies the models (FLOATZIP_MODELS_DIR,
#          default ../shared/models) into gpu_carry/models. gpu_carry/ is git-ignored: the
#          models are never committed.
# device   configures a Release build for sm_90 only (build-device/) whose only package search
#          path is gpu_carry/root/usr, builds the GPU tests and benchmark, runs the `gpu` and
#          `kernel` tests (a skipped test fails the check: here a skip means it did not run), the
#          GPU benchmark on bundles of 256 and 1024 MiB (decode of the Llama-shaped block with
#          12-bit codes, with 15-bit codes and with 128-byte chunks, the real-model statistics,
#          the stage sweep, device-to-device copy and plain BF16 loads of the same output; a
#          missing real-model figure fails the check), every value format
#          (floatzip_bench_gpu_formats: per format a bundle of as many values as 256 MiB of BF16,
#          decoded by the GPU and compared byte for byte with the CPU decoder, then the decode
#          and a device-to-device copy of the same output bytes timed with CUDA events, 50
#          interleaved rounds, medians; a missing or incorrect format fails the check) and
#          Nsight Compute on one decode launch. Everything lands in $OUT (or OUT_DIR, default
#          build-device/out): gpu_check.json (device, driver, every GB/s and ratio, per format
#          its correctness, GB/s and time over the copy's, the ncu metrics, each step's
#          verdict), the benchmarks' and ncu's own output, and the log. Commit gpu_check.json under
#          bench/results/. Sized to finish within 6 minutes on an H200 (16 cores) before the
#          formats step and the per-format tests were added (their time is not measured yet).
# python   builds the Python package with CUDA for sm_90 against gpu_carry/root (the machine's
#          own Python with its torch; pytest, nanobind, scikit-build-core and ml_dtypes from the
#          wheels prepare put in gpu_carry/wheels where the machine lacks them, never from the
#          network) and runs its `gpu`-marked tests (load_file / safe_open with device="cuda" for
#          every value format, compared byte for byte with the CPU load), each skip a failure;
#          log and JUnit XML in the same folder. A separate command: device time is scarce.
# sanitize builds test_gpu if needed and runs compute-sanitizer memcheck, racecheck and synccheck
#          on a narrow filter (SANITIZER_GTEST_FILTER) into the same folder.
# rehearse runs device's configure and build here with the system's -dev packages out of reach:
#          CMAKE_IGNORE_PREFIX_PATH=/usr;/usr/local hides them from every find_package and
#          find_library/find_path (the compiler's own default include path cannot be hidden
#          without a container, so the step then checks that every dependency CMake resolved,
#          and every header the compiler read from them, lies in gpu_carry/). It stops where a
#          GPU is needed.
set -uo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
carry=$root/gpu_carry
build=${BUILD_DIR:-$root/build-device}
out=${OUT:-${OUT_DIR:-$build/out}}
jobs=${JOBS:-$(nproc)}
packages=(libfmt-dev libfmt9 nlohmann-json3-dev libxxhash-dev libxxhash0 libgtest-dev libgmock-dev
  libbenchmark-dev libbenchmark1debian libzstd-dev libzstd1)
sanitizer_filter=${SANITIZER_GTEST_FILTER:-'Gpu.AllBf16PatternsAtEveryAlignment:Gpu.OddSizesAndGeometries:Gpu.StagingInTiles:Gpu.OneSymbolAndLongestCodes:Gpu.CorruptDeviceMetadataIsReported:GpuFormats/*.StagedBundleCarriesTheFormat'}
device_targets=(test_gpu test_kernel_logic floatzip_bench_gpu floatzip_bench_gpu_formats)

say() { echo "=== gpu_device_check: $*" | tee -a "$out/gpu_check.log"; }

configure() {
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DFLOATZIP_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES=90 -DFLOATZIP_BUILD_EXAMPLES=OFF -DFLOATZIP_INSTALL=OFF \
    -DFLOATZIP_FUZZ=OFF "-DCMAKE_PREFIX_PATH=$carry/root/usr" \
    "-DFLOATZIP_MODELS_DIR=$carry/models" "$@"
}
build_targets() { cmake --build "$build" -j "$jobs" --target "$@"; }

prepare() {
  mkdir -p "$carry/debs" "$carry/root" "$carry/models"
  (cd "$carry/debs" && apt-get download "${packages[@]}") || exit 1
  for deb in "$carry"/debs/*.deb; do dpkg -x "$deb" "$carry/root" || exit 1; done
  rm -rf "$carry/debs" "$carry/root/usr/share/doc"
  local models=${FLOATZIP_MODELS_DIR:-$root/../shared/models}
  cp "$models"/*.safetensors "$models"/*.json "$models"/*.bin "$carry/models/" 2>/dev/null
  ls "$carry/models"/*.bf16.safetensors >/dev/null || { echo "no models in $models" >&2; exit 1; }
  # For `python`: pytest, nanobind and scikit-build-core (pure Python) and ml_dtypes (compiled:
  # one wheel per CPython the machine may have), used only where the machine lacks them.
  rm -rf "$carry/wheels"
  mkdir -p "$carry/wheels"
  python3 -m pip download --quiet --disable-pip-version-check --dest "$carry/wheels" \
    --only-binary=:all: pytest nanobind scikit-build-core || exit 1
  local v
  for v in 3.10 3.11 3.12 3.13; do
    python3 -m pip download --quiet --disable-pip-version-check --dest "$carry/wheels" \
      --only-binary=:all: --no-deps --python-version "$v" --platform manylinux2014_x86_64 \
      'ml_dtypes>=0.2' || exit 1
  done
  du -sh "$carry" "$carry/root" "$carry/models" "$carry/wheels"
}

rehearse() {
  mkdir -p "$out"
  configure "-DCMAKE_IGNORE_PREFIX_PATH=/usr;/usr/local" || exit 1
  local bad=0
  while IFS= read -r line; do
    case $line in
      *"$carry"* | *NOTFOUND*) ;;
      *) echo "rehearse: resolved outside gpu_carry: $line"; bad=1 ;;
    esac
  done < <(grep -E '^(fmt_DIR|nlohmann_json_DIR|GTest_DIR|benchmark_DIR|xxhash_(INCLUDE_DIR|LIBRARY)|zstd_(INCLUDE_DIR|LIBRARY)):[A-Z]+=' \
    "$build/CMakeCache.txt")
  build_targets "${device_targets[@]}" || exit 1
  # Every dependency header the compiler read came from gpu_carry (ninja's depfile record).
  local leaked
  leaked=$(ninja -C "$build" -t deps 2>/dev/null | grep -E '^ +/usr/include/(fmt|nlohmann|gtest|gmock|benchmark|xxhash|zstd)' | sort -u)
  [[ -z $leaked ]] || { echo "rehearse: system headers used: $leaked"; bad=1; }
  ((bad == 0)) && echo "rehearse: configured and built with only gpu_carry on the search path"
  exit "$bad"
}

device() {
  mkdir -p "$out"
  : >"$out/gpu_check.log"
  local verdicts=() failed=0
  step() {  # step NAME COMMAND...: runs, logs, records PASS/FAIL
    local name=$1
    shift
    say "$name: $*"
    local start=$SECONDS
    "$@" >>"$out/gpu_check.log" 2>&1
    local status=$?
    local verdict=PASS
    ((status == 0)) || { verdict="FAIL (exit $status)"; failed=1; }
    verdicts+=("$name=$verdict ($((SECONDS - start)) s)")
    say "$name: $verdict"
    return "$status"
  }
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem \
    --format=csv >"$out/nvidia_smi.csv" 2>&1
  step configure configure && step build build_targets "${device_targets[@]}"
  if ((failed == 0)); then
    step tests ctest --test-dir "$build" --output-on-failure -L 'gpu|kernel' --timeout 240
    local skipped
    skipped=$(grep -c '(Skipped)' "$out/gpu_check.log")
    if ((skipped > 0)); then
      verdicts+=("skipped_tests=FAIL ($skipped skipped)")
      failed=1
    fi
    FLOATZIP_BENCH_GPU_JSON="$out/bench_gpu.json" step bench "$build/bench/floatzip_bench_gpu" \
      '--benchmark_filter=/(256|1024)($|/)' --benchmark_min_time=0.3 \
      --benchmark_out="$out/bench_gpu_google.json" --benchmark_out_format=json
    step formats "$build/bench/floatzip_bench_gpu_formats" --mib 256 --runs 50 \
      --json "$out/bench_gpu_formats.json"
    local ncu
    ncu=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
    step ncu "$ncu" --kernel-name regex:decode_bundle_kernel --launch-count 1 --csv --page raw \
      --section SpeedOfLight --section Occupancy --section LaunchStats \
      --metrics smsp__inst_executed.sum,l1tex__data_pipe_lsu_wavefronts_mem_shared.sum,l1tex__data_bank_conflicts_pipe_lsu_mem_shared.sum,dram__bytes_read.sum,dram__bytes_write.sum,gpu__time_duration.sum,sm__cycles_elapsed.avg.per_second \
      --log-file "$out/ncu_raw.csv" "$build/bench/floatzip_bench_gpu" \
      '--benchmark_filter=^decode/llama/256$' --benchmark_min_time=0.01
  fi
  python3 - "$out" "$failed" "${verdicts[@]}" <<'PY'
import csv, json, os, sys
out, failed, verdicts = sys.argv[1], sys.argv[2], sys.argv[3:]
result = {"steps": dict(v.split("=", 1) for v in verdicts)}
try:
    rows = list(csv.reader(open(os.path.join(out, "nvidia_smi.csv"))))
    result["nvidia_smi"] = dict(zip([c.strip() for c in rows[0]], [c.strip() for c in rows[1]]))
except Exception as e:  # noqa: BLE001
    result["nvidia_smi"] = f"unavailable: {e}"
try:
    result["bench"] = json.load(open(os.path.join(out, "bench_gpu.json")))
    names = {r["name"] for r in result["bench"]["results"]}
    missing = [n for n in ("decode/real/256", "decode/real/1024", "decode/llama/256",
                           "decode/llama_L15/256", "decode/llama_c128/256", "copy_d2d/256",
                           "raw_bf16_load/256") if n not in names]
    if missing:
        result["steps"]["bench_complete"] = f"FAIL (missing {missing})"
        failed = "1"
except Exception as e:  # noqa: BLE001
    result["bench"] = f"unavailable: {e}"
    failed = "1"
try:
    result["formats"] = json.load(open(os.path.join(out, "bench_gpu_formats.json")))
    seen = {r["format"] for r in result["formats"]["results"]}
    wanted = {"bf16", "fp16", "fp32", "bf16-in-fp32", "fp8-e4m3", "fp8-e5m2", "bf16-in-fp16"}
    wrong = [r["format"] for r in result["formats"]["results"] if not r["correct"]]
    if wanted - seen or wrong:
        result["steps"]["formats_complete"] = (
            f"FAIL (missing {sorted(wanted - seen)}, incorrect {wrong})")
        failed = "1"
except Exception as e:  # noqa: BLE001
    result["formats"] = f"unavailable: {e}"
    failed = "1"
try:
    lines = [l for l in open(os.path.join(out, "ncu_raw.csv")) if l.startswith('"')]
    rows = list(csv.reader(lines))
    header, units, first = rows[0], rows[1], rows[2]
    result["ncu"] = {h: (v, u) for h, u, v in zip(header, units, first) if "__" in h or "." in h}
except Exception as e:  # noqa: BLE001
    result["ncu"] = f"unavailable: {e}"
result["passed"] = failed == "0"
json.dump(result, open(os.path.join(out, "gpu_check.json"), "w"), indent=2)
print("gpu_check.json:", "PASS" if result["passed"] else "FAIL", result["steps"])
PY
  exit "$failed"
}

sanitize() {
  mkdir -p "$out"
  : >>"$out/gpu_check.log"
  [[ -x $build/tests/test_gpu ]] || { configure >>"$out/gpu_check.log" 2>&1 && build_targets test_gpu >>"$out/gpu_check.log" 2>&1; } || exit 1
  local tool failed=0 sanitizer
  sanitizer=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
  for tool in memcheck racecheck synccheck; do
    say "sanitize $tool: $sanitizer_filter"
    if "$sanitizer" --tool "$tool" --error-exitcode 1 "$build/tests/test_gpu" \
      "--gtest_filter=$sanitizer_filter" >"$out/sanitize_$tool.log" 2>&1 &&
      ! grep -q '\[  SKIPPED \]' "$out/sanitize_$tool.log"; then
      say "sanitize $tool: PASS"
    else
      say "sanitize $tool: FAIL (see sanitize_$tool.log)"
      failed=1
    fi
  done
  exit "$failed"
}

python_gpu() {
  mkdir -p "$out"
  : >>"$out/gpu_check.log"
  say "python: the package with CUDA (sm_90), then its gpu-marked tests"
  local status=0
  # Offline: pip looks only in the carried wheels for what the machine's Python lacks.
  PIP_NO_INDEX=1 PIP_FIND_LINKS="$carry/wheels ${PIP_FIND_LINKS:-}" FLOATZIP_PYTHON=${FLOATZIP_PYTHON:-python3} \
    FLOATZIP_MODELS_DIR=$carry/models \
    FLOATZIP_PYTHON_CMAKE_ARGS="-DFLOATZIP_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DCMAKE_PREFIX_PATH=$carry/root/usr" \
    "$root/cmake/scripts/python_tests.sh" "$build/python" -m gpu -rs \
    --junitxml="$out/python_gpu.xml" >"$out/python_gpu.log" 2>&1 || status=$?
  # A skipped GPU test did not run: here that is a failure, as in `device`.
  if ((status == 0)) && grep -q -E '^SKIPPED|[0-9]+ skipped' "$out/python_gpu.log"; then
    status=1
  fi
  if ((status == 0)); then say "python: PASS"; else say "python: FAIL (exit $status, see python_gpu.log)"; fi
  tail -5 "$out/python_gpu.log"
  exit "$status"
}

case ${1:-} in
  prepare) prepare ;;
  rehearse) rehearse ;;
  device) device ;;
  sanitize) sanitize ;;
  python) python_gpu ;;
  *)
    echo "usage: $0 prepare|rehearse|device|sanitize|python" >&2
    exit 2
    ;;
esac
