# Shared helpers for the end-to-end tests of the mor-dist binary.
# Usage from a test: source common.sh; needs MOR_BIN and MOR_DATA in the environment.
set -euo pipefail
: "${MOR_BIN:?path to mor-dist}" "${MOR_DATA:?corpus directory}" "${MOR_SRC:?source dir}"
WORK=$(mktemp -d)
BG_PIDS=()   # background runs a test starts: ended on exit, so a failed check leaves none behind
trap 'for p in "${BG_PIDS[@]}"; do kill "$p" 2> /dev/null || true; done; rm -rf "$WORK"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
# Tiny-config training command on the fortunes corpus.
tiny_train() {
  "$MOR_BIN" train --config "$MOR_SRC/configs/tiny_mor.ini" \
    --data.train "$MOR_DATA/edu_fineweb_train_*.bin" --data.val "$MOR_DATA/edu_fineweb_val_*.bin" \
    --train.peak_gflops 100 "$@"
}
