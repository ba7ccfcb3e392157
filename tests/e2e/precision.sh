#!/usr/bin/env bash
# Mixed precision end to end (--train.precision bf16, --dist.param_dtype / reduce_dtype bf16). Cases:
#   learn   300 steps of configs/tiny_mor.ini in bf16 end within 0.02 nats of the fp32 run's final
#           validation loss (same seed and data)
#   repeat  two bf16 runs (same seed, threads, world size) give bitwise the same per-step losses
#   dist    bf16 parameter all-gathers (and bf16 gradient reduce-scatters) under mpirun -np 2, 3, 4:
#           20 per-step losses within 1e-3 relative of one bf16 process, and the all-gather bytes
#           half those of fp32 all-gathers
#   resume  a run saved in fp32 resumes in bf16 and one saved in bf16 resumes in fp32 (the
#           checkpoint holds fp32 masters either way): both reach step 20, losses within 1e-3
#           relative of the uninterrupted run of the precision they finish in
# CPUs without bf16 instructions run the bf16 GEMMs emulated (MOR_ALLOW_EMULATED_BF16=1): slower,
# same checks.
source "$(dirname "$0")/common.sh"
export MOR_ALLOW_EMULATED_BF16=1 OMP_NUM_THREADS=1
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_mpi_yield_when_idle=1
case_=${1:?case: learn | repeat | dist | resume}
# tiny_train (common.sh) without validation: the checks below compare training losses
train_only() {
  "$MOR_BIN" train --config "$MOR_SRC/configs/tiny_mor.ini" --data.train "$MOR_DATA/edu_fineweb_train_*.bin" \
    --data.val "" --train.peak_gflops 100 "$@"
}
losses() { /usr/bin/python3 -c "import json,sys; print(' '.join(repr(json.loads(l)['loss']) for l in open(sys.argv[1]) if '\"loss\"' in l))" "$1"; }
# close A B TOL: two space-separated loss lists of equal length, within TOL relative everywhere
close() {
  /usr/bin/python3 - "$1" "$2" "$3" "$4" <<'PY'
import sys
a, b, tol, what = [float(x) for x in sys.argv[1].split()], [float(x) for x in sys.argv[2].split()], float(sys.argv[3]), sys.argv[4]
assert len(a) == len(b) and a, f"{what}: {len(a)} vs {len(b)} losses"
worst = max(abs(x - y) / abs(y) for x, y in zip(a, b))
print(f"{what}: {len(a)} losses within {worst:.2e} relative (bound {tol})")
sys.exit(0 if worst <= tol else 1)
PY
}

case $case_ in
learn)
  for p in fp32 bf16; do
    tiny_train --train.precision $p --train.log_every 100 --train.eval_every 300 --train.threads 2 > "$WORK/$p.log"
  done
  grep '^precision' "$WORK/bf16.log"
  f=$(grep '^eval' "$WORK/fp32.log" | tail -1 | sed -E 's/.*val_loss ([0-9.]+).*/\1/')
  b=$(grep '^eval' "$WORK/bf16.log" | tail -1 | sed -E 's/.*val_loss ([0-9.]+).*/\1/')
  /usr/bin/python3 -c "import sys; f,b=$f,$b; print(f'final val_loss: fp32 {f:.4f}, bf16 {b:.4f}, |diff| {abs(b-f):.4f} (bound 0.02)'); sys.exit(0 if abs(b-f) <= 0.02 else 1)" \
    || fail "bf16 final validation loss $b is not within 0.02 of fp32's $f"
  ;;
repeat)
  for i in 1 2; do
    train_only --train.precision bf16 --train.steps 20 --train.log_every 1 --train.threads 2 \
      --train.metrics "$WORK/r$i.jsonl" > "$WORK/r$i.log"
  done
  [ "$(losses "$WORK/r1.jsonl")" = "$(losses "$WORK/r2.jsonl")" ] || fail "two bf16 runs gave different losses"
  echo "20 bf16 losses bitwise equal in two runs: $(losses "$WORK/r1.jsonl" | cut -d' ' -f1-3) ..."
  ;;
dist)
  common=(--train.precision bf16 --train.global_batch 12 --train.steps 20 --train.log_every 1 --train.threads 1)
  train_only "${common[@]}" --train.metrics "$WORK/w1.jsonl" > "$WORK/w1.log"
  for np in 2 3 4; do
    mpirun --oversubscribe --bind-to none -np $np "$MOR_BIN" train --config "$MOR_SRC/configs/tiny_mor.ini" \
      --data.train "$MOR_DATA/edu_fineweb_train_*.bin" --data.val "" --train.peak_gflops 100 "${common[@]}" \
      --dist.param_dtype bf16 --dist.reduce_dtype bf16 --train.metrics "$WORK/w$np.jsonl" > "$WORK/w$np.log"
    close "$(losses "$WORK/w$np.jsonl")" "$(losses "$WORK/w1.jsonl")" 1e-3 "np=$np, bf16 all-gathers and reduce-scatters vs 1 process"
  done
  mpirun --oversubscribe --bind-to none -np 2 "$MOR_BIN" train --config "$MOR_SRC/configs/tiny_mor.ini" \
    --data.train "$MOR_DATA/edu_fineweb_train_*.bin" --data.val "" --train.peak_gflops 100 "${common[@]}" > "$WORK/f2.log"
  gathered() { grep -oE 'allgather/shared_block=[0-9]+' "$1" | cut -d= -f2; }
  g32=$(gathered "$WORK/f2.log"); g16=$(gathered "$WORK/w2.log")
  [ -n "$g32" ] && [ -n "$g16" ] && [ $((g32)) -eq $((2 * g16)) ] ||
    fail "shared-block all-gather bytes: fp32 '$g32', bf16 '$g16' (want exactly half)"
  echo "shared-block all-gather bytes over 20 steps at np=2: fp32 $g32, bf16 $g16"
  ;;
resume)
  for p in fp32 bf16; do
    train_only --train.precision $p --train.steps 20 --train.log_every 1 --train.threads 2 \
      --train.metrics "$WORK/full_$p.jsonl" > /dev/null
  done
  for from in fp32 bf16; do
    to=$([ $from = fp32 ] && echo bf16 || echo fp32)
    train_only --train.precision $from --train.steps 10 --train.log_every 1 --train.threads 2 \
      --ckpt.dir "$WORK/ck_$from" > /dev/null
    train_only --train.precision $to --train.steps 20 --train.log_every 1 --train.threads 2 \
      --ckpt.dir "$WORK/ck_$from" --ckpt.resume auto --train.metrics "$WORK/b_$from.jsonl" > "$WORK/b_$from.log"
    grep -E '^resum' "$WORK/b_$from.log" | head -2
    grep -q '^done: steps' "$WORK/b_$from.log" || fail "the $to run resumed from $from did not finish"
    n=$(losses "$WORK/b_$from.jsonl" | wc -w)
    close "$(losses "$WORK/b_$from.jsonl")" "$(losses "$WORK/full_$to.jsonl" | tr ' ' '\n' | tail -n "$n" | tr "\n" " ")" 1e-3 \
      "saved in $from, resumed in $to: the last $n losses vs an uninterrupted $to run"
  done
  ;;
*) fail "unknown case '$case_'" ;;
esac
