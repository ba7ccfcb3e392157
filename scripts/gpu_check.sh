#!/usr/bin/env bash
# The GPU check of the CUDA backend (issue #21), for a short GPU window on a fresh machine that has
# this repository, the system's CUDA Toolkit and the build dependencies of scripts/setup.sh. Within
# an overall budget of 470 s (8 minutes on one H100 with room to spare), in order:
#   1. configure the CUDA variant for the GPU it finds (one architecture);
#   2. build the gpu test binaries (cuda_targets) and run them: the backend-conformance suite on the
#      GPU (gpu_conformance), the model against the CPU (gpu_model) and the NCCL communicator under
#      mpirun (gpu_nccl_np1; gpu_nccl_np2 where 2 GPUs are present);
#   3. build mor-dist and run the end-to-end GPU test (gpu_e2e: training vs the CPU, bf16, GPU<->CPU
#      resume), with whatever time is left;
#   4. with what is still left (at least 60 s), bench/gpu_throughput (SmolLM-360M shapes, bf16,
#      seq 2048: tokens/s and MFU, the flash attention kernel first, then the simple one), whose
#      summary line joins this one's.
# Then it prints a summary. Exit status 0 only when every gpu test ran and passed: a Skipped test
# (no GPU) is a failure here; the benchmark's figures do not change it. A rerun reuses the build
# (incremental).
#   scripts/gpu_check.sh                     # build-gpu/
#   GPU_BUILD_DIR=/tmp/b MOR_GPU_CHECK_BUDGET=900 scripts/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD=${GPU_BUILD_DIR:-build-gpu}
JOBS=$(nproc)
t_start=$(date +%s)
deadline=$(( t_start + ${MOR_GPU_CHECK_BUDGET:-470} ))
summary=()
status=0
note() { summary+=("$*"); echo "gpu_check: $*"; }
finish() {
  echo "gpu_check: ==== summary ($(( $(date +%s) - t_start )) s) ===="
  printf 'gpu_check: %s\n' "${summary[@]}"
  exit "$1"
}
left() { echo $(( deadline - $(date +%s) )); }
# limit CAP: the smaller of CAP and the time left (at least 1 s)
limit() { local l; l=$(left); [ "$l" -lt "$1" ] || l=$1; [ "$l" -ge 1 ] || l=1; echo "$l"; }

# run_gpu_tests NAME REGEX: ctest -L gpu -R REGEX, verbose into the log, summarised.
run_gpu_tests() {
  local name=$1 regex=$2 t rc log="$BUILD/ctest_$1.log"
  t=$(date +%s)
  timeout "$(limit 400)" ctest --test-dir "$BUILD" -L gpu -R "$regex" -V --no-tests=error --timeout 300 > "$log" 2>&1
  rc=$?
  grep -E '^[0-9]+: \[ +(FAILED|PASSED|SKIPPED) +\]|Failure|Expected|Which is|FAIL|CUDA device|^[0-9]+: device:|worst relative|Skipped:|Test +#' \
    "$log" | tail -80
  local ran skipped failed cases why
  ran=$(grep -cE 'Test +#[0-9]+: .* Passed' "$log")
  skipped=$(grep -cE '\*\*\*Skipped' "$log")
  failed=$(grep -cE '\*\*\*(Failed|Timeout|Exception)' "$log")
  cases=$(grep -E '^[0-9]+: \[  (PASSED|FAILED) +\]' "$log" | sed -E 's/^[0-9]+: //' | tr '\n' ' ')
  why=$(grep -o 'Skipped: .*' "$log" | sort -u | head -2 | tr '\n' ' ')
  note "$name: ctest exit $rc, $ran passed, $skipped skipped, $failed failed in $(( $(date +%s) - t )) s; gtest: ${cases:-none}"
  [ -z "$why" ] || note "$name skip reason: $why"
  if [ "$rc" -ne 0 ] || [ "$skipped" -ne 0 ] || [ "$ran" -eq 0 ]; then status=1; fi
}

nvcc=$(command -v nvcc || true)
if [ -z "$nvcc" ] && [ -x /usr/local/cuda/bin/nvcc ]; then nvcc=/usr/local/cuda/bin/nvcc; fi
[ -n "$nvcc" ] || { note "FAILED: nvcc not found (PATH, /usr/local/cuda/bin)"; finish 1; }
note "nvcc: $("$nvcc" --version | grep -o 'release [0-9.]*' | head -1) ($nvcc)"
gpu="unknown (nvidia-smi not found)"
arch="80;90"
if command -v nvidia-smi > /dev/null; then
  gpu=$(nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv,noheader 2>&1 | head -1)
  # Only the architecture of the GPU present: half the device-code compile time.
  cc=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .')
  [[ "$cc" =~ ^[0-9]+$ ]] && arch=$cc
fi
note "GPU: $gpu; CUDA architectures: $arch"

t=$(date +%s)
mkdir -p "$BUILD"
if ! timeout "$(limit 90)" cmake -S . -B "$BUILD" -DMOR_CUDA=ON -DCMAKE_CUDA_COMPILER="$nvcc" \
    -DCMAKE_CUDA_ARCHITECTURES="$arch" > "$BUILD/configure.log" 2>&1; then
  tail -30 "$BUILD/configure.log"
  note "FAILED: configure (log: $BUILD/configure.log; the build dependencies are scripts/setup.sh's packages)"
  finish 1
fi
note "configure: $(( $(date +%s) - t )) s"

t=$(date +%s)
if ! timeout "$(limit 200)" cmake --build "$BUILD" -j "$JOBS" --target cuda_targets > "$BUILD/build.log" 2>&1; then
  grep -E 'error|Error' "$BUILD/build.log" | head -30
  note "FAILED: build of cuda_targets in $(( $(date +%s) - t )) s (log: $BUILD/build.log)"
  finish 1
fi
note "build cuda_targets (-j $JOBS): $(( $(date +%s) - t )) s"
run_gpu_tests kernels+model '^gpu_(conformance|model)$'
run_gpu_tests nccl '^gpu_nccl_np1$'
ngpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | grep -c . || true)
if [ "${ngpu:-0}" -ge 2 ]; then run_gpu_tests nccl-2gpu '^gpu_nccl_np2$'; else note "nccl-2gpu: not run (${ngpu:-0} GPU here)"; fi

t=$(date +%s)
if timeout "$(limit 400)" cmake --build "$BUILD" -j "$JOBS" --target mor-dist > "$BUILD/build_mor_dist.log" 2>&1; then
  note "build mor-dist: $(( $(date +%s) - t )) s"
  run_gpu_tests e2e '^gpu_e2e$'
  # The throughput benchmark, a few steps per run, in what is left of the budget.
  l=$(left)
  if [ "$l" -ge 60 ]; then
    data=()
    [ -d "$BUILD/data/fortunes" ] && data=(BENCH_DATA="$BUILD/data/fortunes")
    env "${data[@]}" MORDIST="$BUILD/mor-dist" BUDGET=$((l - 5)) RUN_MIN=45 WARMUP=1 STEPS=3 \
      timeout "$l" bench/gpu_throughput > "$BUILD/gpu_throughput.log" 2>&1
    grep -vE '^(gpu_throughput summary:|   )' "$BUILD/gpu_throughput.log" | tail -25
    line=$(grep '^gpu_throughput summary:' "$BUILD/gpu_throughput.log" | tail -1)
    note "${line:-gpu_throughput: no summary line, out of time? (log: $BUILD/gpu_throughput.log)}"
  else
    note "gpu_throughput: not run, $l s of the budget left (run bench/gpu_throughput by itself)"
  fi
else
  grep -E 'error|Error' "$BUILD/build_mor_dist.log" | head -30
  note "FAILED: build of mor-dist in $(( $(date +%s) - t )) s, $(left) s of the budget left (log: $BUILD/build_mor_dist.log; a rerun goes on from there)"
  status=1
fi
[ "$status" -eq 0 ] && note "RESULT: passed" || note "RESULT: FAILED (a skip counts as a failure here: the point is to run on the GPU)"
finish "$status"
