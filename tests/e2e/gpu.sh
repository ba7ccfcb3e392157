#!/usr/bin/env bash
# The mor-dist binary on a GPU (label gpu; written and compiled without one, not yet run): 20 steps
# of the tiny MoR configs with the expert and the token router on --train.device cuda against the
# CPU, fp32 (each step's loss within 1e-3 relative) and bf16 on the GPU (2e-2); a checkpoint saved
# on the GPU resumed on the CPU and one saved on the CPU resumed on the GPU (the resumed steps
# within 1e-3 of a straight CPU run); the fused attention kernel (--train.attention_kernel flash, at
# head_dim 64: the tiny model with 2 heads) against the CPU, 1e-3. Exits 77 (Skipped) with the reason when mor-dist is not built
# (scripts/test.sh's cuda stage builds only the gpu test binaries) or no GPU is usable.
source "$(dirname "$0")/common.sh"
[ -x "$MOR_BIN" ] || { echo "Skipped: $MOR_BIN is not built (scripts/gpu_check.sh builds it)"; exit 77; }
PY=/usr/bin/python3
base=(train --train.global_batch 8 --train.log_every 1 --train.peak_gflops 100
      --data.train "$MOR_DATA/edu_fineweb_train_*.bin" --data.val "")
set +e
probe=$("$MOR_BIN" "${base[@]}" --config "$MOR_SRC/configs/tiny_mor.ini" --train.steps 1 --train.device cuda 2>&1)
rc=$?
set -e
if [ $rc -ne 0 ] && grep -qE "no usable CUDA GPU|needs a mor-dist built with the CUDA backend" <<<"$probe"; then
  echo "Skipped: $(grep -oE 'no usable CUDA GPU.*|cuda needs a mor-dist built.*' <<<"$probe" | head -1)"
  exit 77
fi
[ $rc -eq 0 ] || fail "one step on the GPU failed: $probe"
grep -m1 "^device: cuda:" <<<"$probe" || fail "the run did not name its GPU: $probe"
losses() { $PY -c "import json,sys; [print(repr(json.loads(l)['loss'])) for l in open(sys.argv[1]) if '\"loss\"' in l]" "$1"; }
# close A B RTOL WHAT: the loss lists of two metrics files agree step by step within RTOL.
close() {
  $PY - "$1" "$2" "$3" "$4" <<'PYEOF' || fail "$4"
import json, sys
def losses(p):
    return [json.loads(l)["loss"] for l in open(p) if '"loss"' in l]
a, b, rtol, what = losses(sys.argv[1]), losses(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
a = a[len(a) - len(b):]  # a resumed run logs only its own steps
worst = max(abs(x - y) / abs(x) for x, y in zip(a, b))
print(f"{what}: {len(b)} steps, worst relative loss difference {worst:.2e} (bound {rtol})")
sys.exit(0 if len(b) > 0 and worst <= rtol else 1)
PYEOF
}

for cfg in tiny_mor tiny_mor_token; do
  run=("${base[@]}" --config "$MOR_SRC/configs/$cfg.ini")
  "$MOR_BIN" "${run[@]}" --train.steps 20 --train.metrics "$WORK/cpu_$cfg.jsonl" > /dev/null
  "$MOR_BIN" "${run[@]}" --train.steps 20 --train.device cuda --train.metrics "$WORK/gpu_$cfg.jsonl" > /dev/null
  close "$WORK/cpu_$cfg.jsonl" "$WORK/gpu_$cfg.jsonl" 1e-3 "$cfg fp32: GPU vs CPU"
  "$MOR_BIN" "${run[@]}" --train.steps 20 --train.device cuda --train.precision bf16 \
    --train.metrics "$WORK/gpu16_$cfg.jsonl" > /dev/null
  close "$WORK/cpu_$cfg.jsonl" "$WORK/gpu16_$cfg.jsonl" 2e-2 "$cfg bf16 on the GPU vs fp32 on the CPU"
done

run=("${base[@]}" --config "$MOR_SRC/configs/tiny_mor.ini")
"$MOR_BIN" "${run[@]}" --train.steps 10 --train.device cuda --ckpt.dir "$WORK/ck_gpu" > /dev/null
"$MOR_BIN" "${run[@]}" --train.steps 20 --ckpt.dir "$WORK/ck_gpu" --resume auto --train.metrics "$WORK/g2c.jsonl" \
  > "$WORK/g2c.log"
grep -q "resumed from $WORK/ck_gpu/step_00000010: step 10" "$WORK/g2c.log" || fail "GPU->CPU: did not resume"
close "$WORK/cpu_tiny_mor.jsonl" "$WORK/g2c.jsonl" 1e-3 "saved on the GPU, resumed on the CPU"
"$MOR_BIN" "${run[@]}" --train.steps 10 --ckpt.dir "$WORK/ck_cpu" > /dev/null
"$MOR_BIN" "${run[@]}" --train.steps 20 --train.device cuda --ckpt.dir "$WORK/ck_cpu" --resume auto \
  --train.metrics "$WORK/c2g.jsonl" > "$WORK/c2g.log"
grep -q "resumed from $WORK/ck_cpu/step_00000010: step 10" "$WORK/c2g.log" || fail "CPU->GPU: did not resume"
close "$WORK/cpu_tiny_mor.jsonl" "$WORK/c2g.jsonl" 1e-3 "saved on the CPU, resumed on the GPU"
run=("${base[@]}" --config "$MOR_SRC/configs/tiny_mor.ini" --model.n_heads 2 --model.n_kv_heads 1)
"$MOR_BIN" "${run[@]}" --train.steps 20 --train.metrics "$WORK/cpu_hd64.jsonl" > /dev/null
"$MOR_BIN" "${run[@]}" --train.steps 20 --train.device cuda --train.attention_kernel flash \
  --train.metrics "$WORK/gpu_flash.jsonl" > "$WORK/gpu_flash.log" 2>&1
grep -q "attention kernel: flash" "$WORK/gpu_flash.log" || fail "the run did not name the flash kernel"
close "$WORK/cpu_hd64.jsonl" "$WORK/gpu_flash.jsonl" 1e-3 "tiny_mor at head_dim 64, flash attention: GPU vs CPU"
echo "ok: GPU training, bf16, GPU<->CPU resume and the flash attention kernel"
