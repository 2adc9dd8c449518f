#!/usr/bin/env bash
# Everything floatzip checks on a machine with an NVIDIA GPU, in one command:
#
#   cmake/scripts/gpu_checks.sh [STEPS] [LOG]
#
# STEPS: comma-separated, default all = build,test,memcheck,racecheck,synccheck,bench
#   build      configure (Release, FLOATZIP_CUDA=ON) and build the GPU tests and benchmark
#   test       ctest -L 'gpu|kernel' (the real kernel against the CPU decoder, and its logic; the
#              llama_generate example's GPU path against its uncompressed run and the CPU path)
#   memcheck   compute-sanitizer memcheck (with leak check) on test_gpu and test_llama_gpu
#   racecheck  compute-sanitizer racecheck (shared-memory hazards) on test_gpu and test_llama_gpu
#   synccheck  compute-sanitizer synccheck (barrier misuse) on test_gpu and test_llama_gpu
#   bench      floatzip_bench_gpu: decode GB/s beside D2D copy and raw BF16 loads
#              and floatzip_bench_gpu_formats: every value format checked against the CPU
#              decoder, its decode time over a device copy of the same bytes
# LOG: where everything is written (default: BUILD_DIR/gpu_checks.log); also echoed to stdout.
#
# Each step runs even when an earlier one failed (except after a failed build); the last lines of
# the log list every step as PASS or FAIL and the exit code is non-zero if any failed. The
# sanitizers skip the >2 GiB test, which takes minutes under instrumentation and exercises no
# path the smaller tests do not. Steps can be run separately to fit a time limit per command.
# A test that skips fails its step: on the machine this script is for, a skip means the check did
# not run (no usable CUDA device, the models directory not found, too little device memory), and
# ctest and GoogleTest would otherwise count it as passed. FLOATZIP_MODELS_DIR, when set, is the
# models directory the build step configures (default ../shared/models beside the checkout).
# BUILD_DIR (default build-gpu-checks), JOBS (default: all cores), SANITIZER_GTEST_FILTER
# (test_gpu's tests under the sanitizers; default -Gpu.BundleLargerThan2GiB; e.g.
# 'Gpu.*Alignment*:Gpu.Graph*' to shorten a run) and LLAMA_SANITIZER_GTEST_FILTER
# (test_llama_gpu's; default all: the models are tiny) may be set. The log is written as the steps
# run, so a run cut short by a time limit keeps its output.
set -uo pipefail
cd "$(dirname "$0")/../.."

steps=${1:-all}
[[ $steps == all ]] && steps=build,test,memcheck,racecheck,synccheck,bench
build_dir=${BUILD_DIR:-build-gpu-checks}
jobs=${JOBS:-$(nproc)}
log=${2:-$build_dir/gpu_checks.log}
mkdir -p "$build_dir" "$(dirname "$log")"
: >"$log"

results=()
failed=0
say() { echo "$*" | tee -a "$log"; }
run_step() {
  local name=$1
  shift
  say "=== gpu_checks: $name: $*"
  local start=$SECONDS
  local output
  output=$(mktemp)
  "$@" 2>&1 | tee -a "$log" "$output"
  local status=${PIPESTATUS[0]}
  # Tests that skipped, each once: ctest lists them as "NN - Suite.Test (Skipped)", GoogleTest
  # as "[  SKIPPED ] Suite.Test" (twice: as it runs and in its summary).
  local skipped
  skipped=$(grep -oE '[^ ]+ \(Skipped\)$|^\[  SKIPPED \] [^ ]+\.[^ ]+' "$output" |
    sed -E 's/ \(Skipped\)$//; s/^\[  SKIPPED \] //' | sort -u | wc -l)
  rm -f "$output"
  local verdict=PASS
  if ((status != 0)); then
    verdict="FAIL (exit $status)"
    failed=1
  elif ((skipped > 0)); then
    verdict="FAIL ($skipped tests skipped: no device, no models or too little memory; see above)"
    status=1
    failed=1
  fi
  results+=("$name: $verdict, $((SECONDS - start)) s")
  say "=== gpu_checks: $name: $verdict"
  return "$status"
}

sanitizer=""
for candidate in compute-sanitizer /usr/local/cuda/bin/compute-sanitizer \
  /usr/local/cuda/compute-sanitizer/compute-sanitizer; do
  if command -v "$candidate" >/dev/null 2>&1; then
    sanitizer=$(command -v "$candidate")
    break
  fi
done

{
  echo "=== gpu_checks: $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo ' (modified)')"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv 2>&1 || echo "nvidia-smi not available"
  /usr/local/cuda/bin/nvcc --version 2>&1 | tail -1
  echo "compute-sanitizer: ${sanitizer:-not found}"
} 2>&1 | tee -a "$log"

test_gpu=$build_dir/tests/test_gpu
sanitizer_filter=--gtest_filter=${SANITIZER_GTEST_FILTER:--Gpu.BundleLargerThan2GiB}
test_llama_gpu=$build_dir/tests/test_llama_gpu
llama_sanitizer_filter=--gtest_filter=${LLAMA_SANITIZER_GTEST_FILTER:-*}

IFS=, read -r -a step_list <<<"$steps"
for step in "${step_list[@]}"; do
  case $step in
    build)
      run_step configure cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release \
        -DFLOATZIP_CUDA=ON -DFLOATZIP_BUILD_EXAMPLES=OFF \
        ${FLOATZIP_MODELS_DIR:+"-DFLOATZIP_MODELS_DIR=$FLOATZIP_MODELS_DIR"} &&
        run_step build cmake --build "$build_dir" -j "$jobs" \
          --target test_gpu test_kernel_logic test_llama_gpu floatzip_bench_gpu \
          floatzip_bench_gpu_formats ||
        break
      ;;
    test)
      run_step test ctest --test-dir "$build_dir" --output-on-failure -L 'gpu|kernel'
      ;;
    memcheck | racecheck | synccheck)
      if [[ -z $sanitizer ]]; then
        say "=== gpu_checks: $step: compute-sanitizer not found"
        results+=("$step: FAIL (compute-sanitizer not found)")
        failed=1
        continue
      fi
      extra=()
      [[ $step == memcheck ]] && extra=(--leak-check full)
      [[ $step == racecheck ]] && extra=(--racecheck-report all)
      run_step "$step" "$sanitizer" --tool "$step" "${extra[@]}" --error-exitcode 1 \
        "$test_gpu" "$sanitizer_filter"
      run_step "$step (llama_generate)" "$sanitizer" --tool "$step" "${extra[@]}" \
        --error-exitcode 1 "$test_llama_gpu" "$llama_sanitizer_filter"
      ;;
    bench)
      run_step bench "$build_dir/bench/floatzip_bench_gpu"
      run_step "bench (every value format)" "$build_dir/bench/floatzip_bench_gpu_formats"
      ;;
    *)
      say "gpu_checks: unknown step '$step' (build, test, memcheck, racecheck, synccheck, bench)"
      exit 2
      ;;
  esac
done

say "=== gpu_checks: summary"
for r in "${results[@]}"; do say "  $r"; done
say "log: $log"
exit "$failed"
