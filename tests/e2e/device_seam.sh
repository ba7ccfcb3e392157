#!/usr/bin/env bash
# The launcher on a backend whose memory the host cannot touch outside the backend's operations
# (MOR_TEST_GUARDED_BACKEND=1: the CPU kernels behind PROT_NONE pages, host_addressable false, as
# a GPU's memory would be; any stray host read or write faults): training, a checkpoint saved at
# step 10 and resumed to 20, the .mort save and eval of both give bitwise the CPU backend's results.
source "$(dirname "$0")/common.sh"
PY=/usr/bin/python3
train=(train --config "$MOR_SRC/configs/tiny_mor.ini" --train.global_batch 8 --train.log_every 1 --train.threads 1
       --train.peak_gflops 100 --data.train "$MOR_DATA/edu_fineweb_train_*.bin" --data.val "")
evaluate=(eval --config "$MOR_SRC/configs/tiny_mor.ini" --train.threads 1 --train.eval_samples 16
          --data.val "$MOR_DATA/edu_fineweb_val_*.bin")
losses() { $PY -c "import json,sys; [print(repr(json.loads(l)['loss'])) for l in open(sys.argv[1]) if '\"loss\"' in l]" "$1"; }

"$MOR_BIN" "${train[@]}" --train.steps 20 --train.metrics "$WORK/cpu.jsonl" --train.save_params "$WORK/cpu.mort" > /dev/null
cpu_eval=$("$MOR_BIN" "${evaluate[@]}" --train.init_params "$WORK/cpu.mort" | grep val_loss)

export MOR_TEST_GUARDED_BACKEND=1
"$MOR_BIN" "${train[@]}" --train.steps 10 --ckpt.dir "$WORK/ck" > "$WORK/g1.log"
grep -q "MOR_TEST_GUARDED_BACKEND=1" "$WORK/g1.log" || fail "the guarded backend was not used: $(cat "$WORK/g1.log")"
"$MOR_BIN" "${train[@]}" --train.steps 20 --ckpt.dir "$WORK/ck" --resume auto --train.metrics "$WORK/g.jsonl" \
  --train.save_params "$WORK/g.mort" > "$WORK/g2.log"
grep -q "resumed from $WORK/ck/step_00000010: step 10" "$WORK/g2.log" || fail "did not resume from step 10"
diff <(losses "$WORK/cpu.jsonl" | tail -10) <(losses "$WORK/g.jsonl") || fail "guarded losses differ from the CPU's"
cmp "$WORK/cpu.mort" "$WORK/g.mort" || fail "guarded final parameters differ from the CPU's"
echo "ok: guarded training with save@10 + resume to 20 is bitwise the CPU backend's run"

g_mort=$("$MOR_BIN" "${evaluate[@]}" --train.init_params "$WORK/g.mort" | grep val_loss)
g_ckpt=$("$MOR_BIN" "${evaluate[@]}" --train.init_params "$WORK/ck" | grep val_loss)
[ "$g_mort" = "$cpu_eval" ] || fail "guarded eval of the .mort: '$g_mort', CPU: '$cpu_eval'"
[ "$g_ckpt" = "$cpu_eval" ] || fail "guarded eval of the checkpoint: '$g_ckpt', CPU: '$cpu_eval'"
echo "ok: guarded eval of the .mort and of the checkpoint: $g_ckpt"
