#!/usr/bin/env bash
# Same seed -> bitwise-identical losses (every logged step, printed with 17 digits);
# another seed -> different losses. Also checks the banner's parameter count.
source "$(dirname "$0")/common.sh"
for run in a b; do
  tiny_train --train.steps 12 --train.log_every 1 --train.eval_samples 16 --train.metrics "$WORK/$run.jsonl" > "$WORK/$run.log"
done
tiny_train --train.steps 12 --train.log_every 1 --train.seed 7 --train.metrics "$WORK/c.jsonl" > /dev/null
losses() { grep -o '"loss":[^,]*,"ce":[^,]*' "$1"; }
[ "$(losses "$WORK/a.jsonl" | wc -l)" -eq 12 ] || fail "expected 12 metric lines"
diff <(losses "$WORK/a.jsonl") <(losses "$WORK/b.jsonl") || fail "same seed gave different losses"
# On 2 threads the tiny model's GEMMs (1024 rows, >= 2e7 flops) take the threaded paths of
# kernels/cpu/gemm.cpp (row blocks, dx/dW side by side): still bitwise repeatable.
for run in t1 t2; do
  tiny_train --train.steps 6 --train.log_every 1 --train.threads 2 --train.metrics "$WORK/$run.jsonl" > /dev/null
done
[ "$(losses "$WORK/t1.jsonl" | wc -l)" -eq 6 ] || fail "expected 6 metric lines on 2 threads"
diff <(losses "$WORK/t1.jsonl") <(losses "$WORK/t2.jsonl") || fail "same seed on 2 threads gave different losses"
if diff -q <(losses "$WORK/a.jsonl") <(losses "$WORK/c.jsonl") > /dev/null; then fail "another seed gave identical losses"; fi
# --train.recompute layer: the same losses bit for bit, less activation memory (the run says how much).
tiny_train --train.steps 12 --train.log_every 1 --train.eval_samples 16 --train.recompute layer \
  --train.metrics "$WORK/r.jsonl" > "$WORK/r.log"
diff <(losses "$WORK/a.jsonl") <(losses "$WORK/r.jsonl") || fail "--train.recompute layer changed the losses"
act() { sed -nE 's/^memory: peak resident [0-9.]+ MB on rank 0; activations ([0-9.]+) MB .*/\1/p' "$1"; }
[ -n "$(act "$WORK/a.log")" ] && [ -n "$(act "$WORK/r.log")" ] || fail "no memory line: $(grep memory "$WORK/a.log")"
awk -v a="$(act "$WORK/a.log")" -v r="$(act "$WORK/r.log")" 'BEGIN { exit !(r < a / 2) }' ||
  fail "recompute kept $(act "$WORK/r.log") MB of activations, without it $(act "$WORK/a.log") MB"
line=$(grep '^params: total' "$WORK/a.log") || fail "no parameter banner"
total=$(sed -E 's/^params: total ([0-9]+) \(analytic ([0-9]+)\).*/\1/' <<<"$line")
analytic=$(sed -E 's/^params: total ([0-9]+) \(analytic ([0-9]+)\).*/\2/' <<<"$line")
[ "$total" = "$analytic" ] || fail "parameter count $total != analytic $analytic"
grep -q 'shared block' <<<"$line" || fail "banner lacks the shared-block count"
echo "determinism: 12 steps bitwise identical (6 more on 2 threads, and with recompute: activations $(act "$WORK/r.log") MB instead of $(act "$WORK/a.log") MB); params $total"
