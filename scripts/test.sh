#!/usr/bin/env bash
# The test command, in three stages, each (re)built incrementally in its own folder
# (docs/TESTING.md):
#   main   build/       the whole ctest suite: unit tests, finite-difference and PyTorch parity
#                       checks, end-to-end runs of the mor-dist binary;
#   fuzz   build-fuzz/  clang + libFuzzer (-DMOR_FUZZ=ON): every harness of tests/fuzz replays its
#                       saved inputs, then fuzzes for MOR_FUZZ_SECONDS (default 30) s;
#   asan   build-asan/  GCC with ASan + UBSan (-DMOR_SANITIZE=ON): the io unit tests and the
#                       end-to-end checkpoint test;
#   cuda   build-cuda/  -DMOR_CUDA=ON where nvcc is found (PATH, else /usr/local/cuda/bin): compiles
#                       the CUDA backend, its launcher glue and its gpu tests (compile only: the gpu
#                       tests then report Skipped without a GPU; scripts/gpu_check.sh runs them on one).
# Every stage runs even when an earlier one failed; the exit status is non-zero when any failed.
# Extra arguments go to the main stage's ctest and then only that stage runs, e.g.
# `scripts/test.sh -R parity`; MOR_TEST_STAGES="fuzz asan" picks the stages explicitly.
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
FUZZ_DIR=${FUZZ_DIR:-build-fuzz}
ASAN_DIR=${ASAN_DIR:-build-asan}
CUDA_DIR=${CUDA_DIR:-build-cuda}
JOBS=$(nproc)
if [ $# -gt 0 ]; then STAGES=${MOR_TEST_STAGES:-main}; else STAGES=${MOR_TEST_STAGES:-main fuzz asan cuda}; fi

stage_main() {
  if [ ! -f "$BUILD_DIR/CMakeCache.txt" ]; then
    echo "test: no build in $BUILD_DIR/ — run scripts/setup.sh first" >&2
    return 2
  fi
  cmake --build "$BUILD_DIR" -j "$JOBS" || return 1
  # Each test sets its own thread count; two at a time keeps both cores busy.
  ctest --test-dir "$BUILD_DIR" --output-on-failure -j "${CTEST_JOBS:-2}" --timeout 1200 "$@"
}

stage_fuzz() {
  local cc=()
  if command -v clang++ > /dev/null && command -v clang > /dev/null; then
    cc=(-DCMAKE_CXX_COMPILER=clang++ -DCMAKE_C_COMPILER=clang)
  else
    echo "test: clang++ not found: the fuzz tests will report Skipped (scripts/setup.sh installs clang)"
  fi
  if [ ! -f "$FUZZ_DIR/CMakeCache.txt" ]; then
    mkdir -p "$FUZZ_DIR"
    cmake -S . -B "$FUZZ_DIR" -DMOR_FUZZ=ON "${cc[@]}" > "$FUZZ_DIR/configure.log" 2>&1 ||
      { cat "$FUZZ_DIR/configure.log"; return 1; }
  fi
  cmake --build "$FUZZ_DIR" -j "$JOBS" --target fuzzers || return 1
  ctest --test-dir "$FUZZ_DIR" --output-on-failure --no-tests=error -j 2 -L fuzz
}

stage_asan() {
  if [ ! -f "$ASAN_DIR/CMakeCache.txt" ]; then
    mkdir -p "$ASAN_DIR"
    cmake -S . -B "$ASAN_DIR" -DMOR_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo > "$ASAN_DIR/configure.log" 2>&1 ||
      { cat "$ASAN_DIR/configure.log"; return 1; }
  fi
  cmake --build "$ASAN_DIR" -j "$JOBS" --target sanitize_targets || return 1
  # detect_leaks=0: OpenMPI and OpenMP keep allocations to process exit by design (runtime
  # state, not our leaks); every other ASan and UBSan check stays on and halts the test.
  ASAN_OPTIONS=detect_leaks=0:abort_on_error=0:detect_stack_use_after_return=1 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir "$ASAN_DIR" --output-on-failure --no-tests=error -j 2 --timeout 1800 -L '^(io|checkpoint)$'
}

stage_cuda() {
  local nvcc
  nvcc=$(command -v nvcc || true)
  if [ -z "$nvcc" ] && [ -x /usr/local/cuda/bin/nvcc ]; then nvcc=/usr/local/cuda/bin/nvcc; fi
  if [ -z "$nvcc" ]; then
    echo "test: nvcc not found (PATH, /usr/local/cuda/bin): skipped the CUDA build"
    return 0
  fi
  if [ ! -f "$CUDA_DIR/CMakeCache.txt" ]; then
    mkdir -p "$CUDA_DIR"
    cmake -S . -B "$CUDA_DIR" -DMOR_CUDA=ON -DCMAKE_CUDA_COMPILER="$nvcc" > "$CUDA_DIR/configure.log" 2>&1 ||
      { cat "$CUDA_DIR/configure.log"; return 1; }
  fi
  # Only the targets that see CUDA (the rest of the tree is the main stage's, unchanged by it).
  cmake --build "$CUDA_DIR" -j "$JOBS" --target cuda_targets || return 1
  # Without a GPU this says Skipped (with the reason); with one it runs them.
  ctest --test-dir "$CUDA_DIR" --output-on-failure --no-tests=error -L gpu
}

status=0
summary=()
for stage in $STAGES; do
  echo "test: ==== stage $stage ===="
  t0=$(date +%s)
  case $stage in
    main) stage_main "$@" ;;
    fuzz) stage_fuzz ;;
    asan) stage_asan ;;
    cuda) stage_cuda ;;
    *) echo "test: unknown stage '$stage' (main, fuzz, asan, cuda)" >&2; false ;;
  esac
  rc=$?
  [ $rc -eq 0 ] || status=1
  summary+=("$stage: $([ $rc -eq 0 ] && echo passed || echo "FAILED (exit $rc)") in $(( $(date +%s) - t0 )) s")
done
echo "test: ==== summary ===="
printf 'test: %s\n' "${summary[@]}"
exit $status
