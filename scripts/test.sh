#!/usr/bin/env bash
# The test command: (re)builds incrementally, then runs the whole ctest suite
# (unit tests, finite-difference and PyTorch parity checks, end-to-end runs of
# the mor-dist binary). Extra arguments go to ctest, e.g. `scripts/test.sh -R parity`.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
if [ ! -f "$BUILD_DIR/CMakeCache.txt" ]; then
  echo "test: no build in $BUILD_DIR/ — run scripts/setup.sh first" >&2
  exit 2
fi
cmake --build "$BUILD_DIR" -j "$(nproc)"
# Each test sets its own thread count; two at a time keeps both cores busy.
ctest --test-dir "$BUILD_DIR" --output-on-failure -j "${CTEST_JOBS:-2}" --timeout 1200 "$@"
