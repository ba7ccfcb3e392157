#!/usr/bin/env bash
# Runs one libFuzzer harness for ctest (tests/fuzz/CMakeLists.txt, docs/TESTING.md).
#   run.sh replay BIN NAME SRC               every file of SRC/corpus/NAME and SRC/crashes/NAME, once
#   run.sh fuzz   BIN NAME SRC SECONDS WORK  fuzz for SECONDS from a copy of SRC/corpus/NAME in WORK
# Limits (both modes): 2 GiB RSS, 1 GiB per allocation (index_h5: see below), 10 s per input:
# exceeding one is a failure.
set -euo pipefail
mode=$1 bin=$2 name=$3 src=$4
limits=(-rss_limit_mb=2048 -malloc_limit_mb=1024 -timeout=10)
case $name in  # longest input: room for a 1024-byte shard header, a whole tokenizer.json, an index.h5
  token_shard|mort) max_len=8192 ;;
  tokenizer) max_len=65536 ;;
  jsonl) max_len=4096 ;;
  index_h5) max_len=131072 ;;
  *) echo "run.sh: unknown harness $name" >&2; exit 2 ;;
esac
opts=(-max_len=$max_len)
# Leaks inside third-party libraries that the caller cannot free (see the file).
export LSAN_OPTIONS=suppressions=$src/lsan.supp${LSAN_OPTIONS:+:$LSAN_OPTIONS}
if [ "$name" = index_h5 ]; then
  # libhdf5 has no frame pointers: only the slow unwinder gets a leak's stack through it.
  # HDF5 mallocs sizes read from a corrupt file (an object header of 2^56 bytes) before it can
  # check them, and handles NULL: let malloc fail for it as it does outside ASan. Our code
  # allocates with operator new, which still fails loudly; RSS stays limited to 2 GiB.
  export ASAN_OPTIONS=fast_unwind_on_malloc=0:allocator_may_return_null=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}
  limits=(-rss_limit_mb=2048 -malloc_limit_mb=1048576 -timeout=10)
fi
case $name in tokenizer|jsonl) opts+=(-dict="$src/json.dict") ;; esac

files=()
for d in "$src/corpus/$name" "$src/crashes/$name"; do
  [ -d "$d" ] || continue
  while IFS= read -r -d '' f; do files+=("$f"); done < <(find "$d" -type f ! -name 'README*' -print0 | sort -z)
done

case $mode in
  replay)
    n_corpus=$(find "$src/corpus/$name" -type f 2>/dev/null | wc -l)
    if [ "$n_corpus" -eq 0 ]; then echo "FAIL: no seed inputs in $src/corpus/$name" >&2; exit 1; fi
    echo "replaying ${#files[@]} inputs of $name (corpus + crashes)"
    # Given files, libFuzzer runs each once and stops at the first that fails.
    "$bin" "${limits[@]}" "${files[@]}"
    echo "ok: ${#files[@]} inputs ran cleanly"
    ;;
  fuzz)
    secs=${MOR_FUZZ_SECONDS:-$5} work=$6  # the environment overrides the configured time
    rm -rf "$work"; mkdir -p "$work/corpus" "$work/artifacts"
    cp "${files[@]}" "$work/corpus/"
    set +e
    "$bin" "${limits[@]}" "${opts[@]}" -max_total_time="$secs" -print_final_stats=1 \
      -artifact_prefix="$work/artifacts/" "$work/corpus" > "$work/log" 2>&1
    rc=$?
    set -e
    tail -n 40 "$work/log"
    if [ $rc -ne 0 ] || [ -n "$(ls -A "$work/artifacts")" ]; then
      echo "FAIL: fuzz_$name found a problem (exit $rc); the input(s):" >&2
      ls -l "$work/artifacts" >&2
      echo "Reproduce: $bin <input>. Fix the parser, then save the input to tests/fuzz/crashes/$name/ so it is replayed forever." >&2
      exit 1
    fi
    echo "ok: $secs s of fuzzing found nothing ($(ls "$work/corpus" | wc -l) inputs in the corpus)"
    ;;
  *) echo "run.sh: mode is replay or fuzz" >&2; exit 2 ;;
esac
