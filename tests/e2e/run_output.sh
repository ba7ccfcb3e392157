#!/usr/bin/env bash
# What a user sees while a run goes: progress, elapsed time and ETA on each line, a summary at the
# end, the metrics JSONL fields, small-data and epoch notes, and the resume messages.
source "$(dirname "$0")/common.sh"
PY=/usr/bin/python3
train=(train --config "$MOR_SRC/configs/tiny_mor.ini" --train.threads 1 --train.peak_gflops 100
       --data.train "$MOR_DATA/edu_fineweb_train_*.bin" --data.val "$MOR_DATA/edu_fineweb_val_*.bin" --train.eval_samples 16)
"$MOR_BIN" "${train[@]}" --train.steps 12 --train.log_every 4 --train.eval_every 6 --ckpt.dir "$WORK/ck" --save-every 6 \
  --train.metrics "$WORK/m.jsonl" > "$WORK/run.log"
grep -qE '^step      4/12  33\.3% \| loss [0-9.]+ \|.* \| 4\.1k tok \| [0-9]+s, ETA [0-9]+s$' "$WORK/run.log" ||
  fail "step line lacks progress/tokens/ETA: $(grep -m1 '^step' "$WORK/run.log")"
grep -qE '^step     12/12 100\.0% .*, ETA 0s$' "$WORK/run.log" || fail "last step line: $(grep '^step     12' "$WORK/run.log")"
grep -qE '^done: steps 1-12 in [0-9]+s \([0-9.]+ s training, [0-9]+ tok/s mean\) \| 12\.3k tokens \| final train loss [0-9.]+, final val loss [0-9.]+ \| 2 checkpoints written$' \
  "$WORK/run.log" || fail "summary line: $(grep '^done' "$WORK/run.log")"
$PY - "$WORK/m.jsonl" <<'PYEOF' || fail "metrics fields"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
steps = [r for r in rows if "loss" in r]
vals = [r for r in rows if "val_loss" in r]
assert [r["step"] for r in steps] == [1, 4, 8, 12], [r["step"] for r in steps]
for r in steps:
    for k in ("step_time_s", "window_time_s", "window_steps", "elapsed_s", "tokens_seen", "tokens_per_s", "skipped_nonfinite"):
        assert k in r, k
    assert abs(r["step_time_s"] * r["window_steps"] - r["window_time_s"]) < 1e-3, r
    assert r["tokens_seen"] == r["step"] * 16 * 64, r
assert steps[2]["window_steps"] == 4 and steps[0]["window_steps"] == 1
assert [v["step"] for v in vals] == [6, 12] and all("elapsed_s" in v for v in vals)
line = open(sys.argv[1]).read().split('"val_loss":')[1].split(",")[0]   # 17 significant digits, as the losses
assert len(line.replace(".", "").lstrip("0")) >= 16, line
print("ok: metrics: step_time_s per step, window_time_s, elapsed_s, tokens_seen; val_loss with 17 digits")
PYEOF
grep -q '^eval       6 | val_loss' "$WORK/run.log" || fail "no eval line at step 6"
echo "ok: step lines carry %, tokens seen, elapsed and ETA; the run ends with a summary"

# resuming a finished run: says so, exits 0; a longer schedule is announced
out=$("$MOR_BIN" "${train[@]}" --train.steps 12 --ckpt.dir "$WORK/ck" --resume auto 2>&1) || fail "resume of a finished run failed: $out"
grep -q "the checkpoint is already at step 12 and train.steps is 12: nothing to train" <<<"$out" || fail "finished run: $out"
! grep -q '^step' <<<"$out" || fail "a finished run trained again"
out=$("$MOR_BIN" "${train[@]}" --train.steps 14 --ckpt.dir "$WORK/ck" --resume auto 2>&1) || fail "resume with more steps failed"
grep -q "note: the checkpoint's run had a 12-step schedule, this one has 14 (train.steps): the wsd learning rate at step 13 is" \
  <<<"$out" || fail "no schedule-change note: $(grep -m2 'resumed\|note' <<<"$out")"
echo "ok: resuming a finished run says so and exits 0; a longer train.steps announces the schedule change"

# fewer windows than one global batch: a warning; the loader wrapping: a line per new epoch
"$MOR_BIN" train --config "$MOR_SRC/configs/tiny_mor.ini" --train.threads 1 --train.peak_gflops 100 --model.seq_len 1024 \
  --data.train "$MOR_DATA/edu_fineweb_val_*.bin" --data.val "" --train.global_batch 64 --train.micro_batch 8 \
  --train.steps 2 > "$WORK/small.log" 2>&1 || fail "small data run: $(tail -2 "$WORK/small.log")"
grep -qE "warning: the training data holds [0-9]+ windows of 1024 tokens, fewer than one global batch \(64\)" "$WORK/small.log" ||
  fail "no small-data warning: $(grep -m1 data: "$WORK/small.log")"
grep -q "data: epoch 2 begins at step 2" "$WORK/small.log" || fail "no epoch line"
echo "ok: small data warns, a new epoch is announced"

# eval reads HDF5 checkpoints directly, on any shard count (a root: its newest checkpoint)
want=$(grep '^eval      14' <<<"$out" | grep -o 'val_loss [0-9.]*')
"$MOR_BIN" convert --in "$WORK/ck/step_00000014" --out "$WORK/c3" --shards 3 > /dev/null
for src in "$WORK/ck" "$WORK/c3"; do
  got=$("$MOR_BIN" eval --config "$MOR_SRC/configs/tiny_mor.ini" --train.init_params "$src" --train.threads 1 \
        --data.val "$MOR_DATA/edu_fineweb_val_*.bin" --train.eval_samples 16 2>&1) || fail "eval $src: $got"
  grep -q "^$want over 16 windows" <<<"$got" || fail "eval of $src: '$got', want '$want' (the training run's)"
done
echo "ok: eval of a checkpoint root and of a 3-shard conversion give the training run's $want"

# MFU never silently above 100 %: a window faster than the reference re-measures it and says so
# (MOR_TEST_PEAK_SCALE fakes a bad first measurement). Long steps report micro-batch progress.
MOR_TEST_PEAK_SCALE=0.01 MOR_PROGRESS_EVERY_S=0.0001 "$MOR_BIN" train --config "$MOR_SRC/configs/tiny_mor.ini" \
  --train.threads 1 --data.train "$MOR_DATA/edu_fineweb_train_*.bin" --data.val "" --train.steps 2 \
  --train.micro_batch 4 > "$WORK/mfu.log" 2>&1 || fail "MFU run: $(tail -2 "$WORK/mfu.log")"
grep -qE "^note: step 1 ran at [0-9]+ GFLOP/s per rank, above the [0-9]+ GFLOP/s GEMM reference; re-measured it: [0-9]+ GFLOP/s \(best of [0-9]+ runs over [0-9.]+ s\), used from now on" \
  "$WORK/mfu.log" || fail "no re-measurement note: $(grep -m2 'MFU\|note' "$WORK/mfu.log")"
grep -q "^  step 2: micro-batch 3/4 done" "$WORK/mfu.log" || fail "no micro-batch progress: $(head -12 "$WORK/mfu.log")"
echo "ok: a too-low MFU reference is re-measured and said so; long steps report micro-batch progress"
