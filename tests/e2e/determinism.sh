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
if diff -q <(losses "$WORK/a.jsonl") <(losses "$WORK/c.jsonl") > /dev/null; then fail "another seed gave identical losses"; fi
line=$(grep '^params: total' "$WORK/a.log") || fail "no parameter banner"
total=$(sed -E 's/^params: total ([0-9]+) \(analytic ([0-9]+)\).*/\1/' <<<"$line")
analytic=$(sed -E 's/^params: total ([0-9]+) \(analytic ([0-9]+)\).*/\2/' <<<"$line")
[ "$total" = "$analytic" ] || fail "parameter count $total != analytic $analytic"
grep -q 'shared block' <<<"$line" || fail "banner lacks the shared-block count"
echo "determinism: 12 steps bitwise identical; params $total"
