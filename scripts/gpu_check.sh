#!/usr/bin/env bash
# The GPU check of the CUDA backend (issue #21), for a short GPU window on a fresh machine that has
# this repository, the system's CUDA Toolkit and the build dependencies of scripts/setup.sh:
# configures and builds the CUDA variant for the GPU it finds (only the targets that see CUDA),
# runs ctest -L gpu (the backend-conformance suite on the GPU) and prints a summary. Meant to fit
# in 8 minutes on one H100 (each step has its own time limit). Exit status 0 only when every gpu
# test ran and passed; a Skipped test (no GPU) is a failure here.
#   scripts/gpu_check.sh                     # build-gpu/
#   GPU_BUILD_DIR=/tmp/b scripts/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD=${GPU_BUILD_DIR:-build-gpu}
JOBS=$(nproc)
t_start=$(date +%s)
summary=()
note() { summary+=("$*"); echo "gpu_check: $*"; }
finish() {
  echo "gpu_check: ==== summary ($(( $(date +%s) - t_start )) s) ===="
  printf 'gpu_check: %s\n' "${summary[@]}"
  exit "$1"
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
if ! timeout 150 cmake -S . -B "$BUILD" -DMOR_CUDA=ON -DCMAKE_CUDA_COMPILER="$nvcc" \
    -DCMAKE_CUDA_ARCHITECTURES="$arch" > "$BUILD/configure.log" 2>&1; then
  tail -30 "$BUILD/configure.log"
  note "FAILED: configure (log: $BUILD/configure.log; the build dependencies are scripts/setup.sh's packages)"
  finish 1
fi
note "configure: $(( $(date +%s) - t )) s"

t=$(date +%s)
if ! timeout 330 cmake --build "$BUILD" -j "$JOBS" --target cuda_targets > "$BUILD/build.log" 2>&1; then
  grep -E 'error|Error' "$BUILD/build.log" | head -30
  note "FAILED: build of cuda_targets (log: $BUILD/build.log)"
  finish 1
fi
note "build (cuda_targets, -j $JOBS): $(( $(date +%s) - t )) s"

t=$(date +%s)
# -V: every gtest line goes into the log (and the window's record), passes included.
timeout 240 ctest --test-dir "$BUILD" -L gpu -V --no-tests=error --timeout 200 > "$BUILD/ctest.log" 2>&1
rc=$?
grep -E '^[0-9]+: \[ +(RUN|OK|FAILED|PASSED|SKIPPED) +\]|Failure|Expected|Which is|error|CUDA device|Skipped:|Test +#' \
  "$BUILD/ctest.log" | tail -150
ran=$(grep -cE 'Test +#[0-9]+: .* Passed' "$BUILD/ctest.log")
skipped=$(grep -cE '\*\*\*Skipped' "$BUILD/ctest.log")
failed=$(grep -cE '\*\*\*(Failed|Timeout|Exception)|\(Failed\)|\(Timeout\)' "$BUILD/ctest.log")
cases=$(grep -E '^[0-9]+: \[  (PASSED|FAILED) +\]' "$BUILD/ctest.log" | sed -E 's/^[0-9]+: //' | tr '\n' ' ')
why=$(grep -o 'Skipped: .*' "$BUILD/ctest.log" | sort -u | head -2 | tr '\n' ' ')
note "ctest -L gpu: exit $rc, $ran passed, $skipped skipped, $failed failed in $(( $(date +%s) - t )) s; gtest: ${cases:-none}"
[ -z "$why" ] || note "skip reason: $why"
if [ "$rc" -ne 0 ] || [ "$skipped" -ne 0 ] || [ "$ran" -eq 0 ]; then
  note "RESULT: FAILED (a skip counts as a failure here: the point is to run on the GPU)"
  finish 1
fi
note "RESULT: passed"
finish 0
