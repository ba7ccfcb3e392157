#!/usr/bin/env bash
# HDF5 checkpoints end to end, under real mpirun:
#  - save at step 10 + resume to 20 == a straight 20-step run, bitwise (W = 2);
#  - elastic resume 4->2, 2->3, 1->4: same samples, losses within 1e-5 of the straight run;
#  - convert 4->3->4 and 4->1 keep every tensor bit-identical; h5py reads whole tensors from index.h5;
#  - kill -9 of the writer inside the save window leaves `latest` on a valid checkpoint;
#  - SIGUSR1 saves and exits 85;
#  - corruption cases give clear errors naming the file, and nothing is overwritten.
source "$(dirname "$0")/common.sh"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_mpi_yield_when_idle=1 OMP_NUM_THREADS=1
PY=/usr/bin/python3
run() {  # run NP ARGS...: NP=1 runs the binary directly
  local np=$1; shift
  if [ "$np" -eq 1 ]; then "$MOR_BIN" "$@"; else mpirun --oversubscribe --bind-to none -np "$np" "$MOR_BIN" "$@"; fi
}
train=(train --config "$MOR_SRC/configs/tiny_mor.ini" --train.global_batch 12 --train.log_every 1 --train.threads 1
       --train.peak_gflops 100 --data.train "$MOR_DATA/edu_fineweb_train_*.bin" --data.val "")
losses() { $PY -c "import json,sys; [print(repr(json.loads(l)['loss'])) for l in open(sys.argv[1]) if '\"loss\"' in l]" "$1"; }

# 1. same world size: bitwise
run 2 "${train[@]}" --train.steps 20 --train.metrics "$WORK/straight2.jsonl" --train.save_params "$WORK/straight2.mort" > /dev/null
run 2 "${train[@]}" --train.steps 10 --ckpt.dir "$WORK/ck2" > /dev/null
run 2 "${train[@]}" --train.steps 20 --ckpt.dir "$WORK/ck2" --resume auto --train.metrics "$WORK/resumed2.jsonl" \
  --train.save_params "$WORK/resumed2.mort" > "$WORK/resumed2.log"
grep -q "resumed from $WORK/ck2/step_00000010: step 10" "$WORK/resumed2.log" || fail "did not resume from step 10"
diff <(losses "$WORK/straight2.jsonl" | tail -10) <(losses "$WORK/resumed2.jsonl") > /dev/null || fail "resumed losses differ (W=2)"
cmp "$WORK/straight2.mort" "$WORK/resumed2.mort" || fail "resumed final parameters differ (W=2)"
echo "ok: save@10 + resume to 20 on 2 ranks is bitwise identical to a straight run"

# 2. elastic: a -> b
for pair in "4 2" "2 3" "1 4"; do
  set -- $pair; a=$1; b=$2
  [ -f "$WORK/straight$a.jsonl" ] || run "$a" "${train[@]}" --train.steps 20 --train.metrics "$WORK/straight$a.jsonl" > /dev/null
  rm -rf "$WORK/ck" "$WORK/el.jsonl"; run "$a" "${train[@]}" --train.steps 10 --ckpt.dir "$WORK/ck" > /dev/null
  run "$b" "${train[@]}" --train.steps 20 --ckpt.dir "$WORK/ck" --resume auto --train.metrics "$WORK/el.jsonl" > "$WORK/el.log"
  grep -q "saved on $a rank" "$WORK/el.log" || fail "elastic $a->$b: resume banner missing"
  $PY - "$WORK/straight$a.jsonl" "$WORK/el.jsonl" "$a" "$b" <<'PYEOF' || fail "elastic $a->$b losses differ"
import json, sys
load = lambda p: [json.loads(l)["loss"] for l in open(p) if '"loss"' in l]
ref, got = load(sys.argv[1])[10:], load(sys.argv[2])
assert len(got) == 10, len(got)
worst = max(abs(x - y) / abs(y) for x, y in zip(got, ref))
print(f"ok: elastic {sys.argv[3]}->{sys.argv[4]} ranks: steps 11-20 within {worst:.1e} of the uninterrupted run")
sys.exit(0 if worst <= 1e-5 else 1)
PYEOF
done

# 3. convert 4 -> 3 -> 4 and 4 -> 1: bit-identical tensors; h5py reads whole tensors
rm -rf "$WORK/ck4"; run 4 "${train[@]}" --train.steps 3 --ckpt.dir "$WORK/ck4" --train.save_params "$WORK/p4.mort" > /dev/null
src="$WORK/ck4/step_00000003"
run 1 convert --in "$src" --out "$WORK/c3" --shards 3 > /dev/null
run 2 convert --in "$WORK/c3" --out "$WORK/c34" --shards 4 > /dev/null   # under MPI too
run 1 convert --in "$src" --out "$WORK/c1" --shards 1 > /dev/null
[ "$(ls "$WORK/c1"/shard_*.h5 | wc -l)" -eq 1 ] || fail "convert --shards 1 did not write one file"
[ "$(ls "$WORK/c3"/shard_*.h5 | wc -l)" -eq 3 ] || fail "convert --shards 3 did not write three files"
"$MOR_BIN" inspect "$WORK/c34" | grep -q "verified" || fail "inspect did not verify the converted checkpoint"
(cd / && $PY - "$src" "$WORK/c3" "$WORK/c34" "$WORK/c1" "$WORK/p4.mort" "$MOR_SRC") <<'PYEOF' || fail "convert changed a tensor or h5py disagrees"
import sys, h5py, numpy as np
sys.path.insert(0, sys.argv[6] + "/tests/reference")
from mort import read_mort
dirs, params = sys.argv[1:5], read_mort(sys.argv[5])
ref = h5py.File(dirs[0] + "/index.h5", "r")
names = list(ref["shard_map"].keys())
assert set(names) == set(params), "tensor names differ"
for n in names:  # h5py through the virtual datasets == what the engine trained (run from another cwd)
    assert np.array_equal(ref[n][:], params[n]), n
for d in dirs[1:]:
    f = h5py.File(d + "/index.h5", "r")
    for n in names:
        for g in ("", "exp_avg/", "exp_avg_sq/"):
            a, b = ref[g + n][:], f[g + n][:]
            assert a.tobytes() == b.tobytes(), (d, g + n)
print(f"ok: convert 4->3->4 and 4->1 bit-identical over {len(names)} tensors x (param, exp_avg, exp_avg_sq); h5py == engine")
PYEOF

# 4. kill -9 inside the save window: `latest` stays on the previous checkpoint, resume works
rm -rf "$WORK/ckk"
run 1 "${train[@]}" --train.steps 4 --ckpt.dir "$WORK/ckk" > /dev/null
MOR_TEST_SAVE_DELAY_MS=20000 "$MOR_BIN" "${train[@]}" --train.steps 8 --ckpt.dir "$WORK/ckk" --resume auto > "$WORK/kill.log" 2>&1 &
pid=$!
BG_PIDS+=("$pid")
for _ in $(seq 200); do [ -d "$WORK/ckk/step_00000008.tmp" ] && ls "$WORK/ckk/step_00000008.tmp"/shard_* > /dev/null 2>&1 && break; sleep 0.1; done
sleep 0.5
kill -9 $pid; wait $pid 2>/dev/null || true
[ "$(cat "$WORK/ckk/latest")" = step_00000004 ] || fail "latest moved during a killed save"
[ ! -d "$WORK/ckk/step_00000008" ] || fail "an incomplete checkpoint was published"
run 1 "${train[@]}" --train.steps 6 --ckpt.dir "$WORK/ckk" --resume auto > "$WORK/after_kill.log"
grep -q "resumed from $WORK/ckk/step_00000004" "$WORK/after_kill.log" || fail "resume after kill -9 did not use step 4"
echo "ok: kill -9 during a save left latest on step 4 and the next resume succeeded"

# 5. SIGUSR1: every rank saves once and exits 85
rm -rf "$WORK/cks"
set +e
mpirun --oversubscribe --bind-to none -np 2 "$MOR_BIN" "${train[@]}" --train.steps 100000 --ckpt.dir "$WORK/cks" > "$WORK/sig.log" 2>&1 &
mpid=$!
BG_PIDS+=("$mpid")
for _ in $(seq 300); do grep -q "^step      3" "$WORK/sig.log" && break; sleep 0.1; done
# Every thread of every rank blocks SIGUSR1 and SIGTERM but one, which takes them in sigwait
# (the kernel unblocks them while it waits in rt_sigtimedwait, syscall 128): a handler run on a
# compute thread's stack corrupted oneDNN's GEMM (launcher/stop_signal.h).
nthreads=0
for r in $(pgrep -P $mpid -x mor-dist); do
  waiters=0
  for t in /proc/$r/task/*; do
    blk=$(sed -n 's/^SigBlk:[[:space:]]*//p' "$t/status" 2> /dev/null) || continue
    [ -n "$blk" ] || continue
    nthreads=$((nthreads + 1))
    (( (0x$blk & 0x4202) == 0x4202 )) && continue  # SIGTERM, SIGUSR1, SIGINT
    [ "$(cut -d' ' -f1 "$t/syscall" 2> /dev/null)" = 128 ] ||
      fail "thread ${t##*/} of rank pid $r takes SIGUSR1/SIGTERM/SIGINT (SigBlk $blk) outside sigwait"
    waiters=$((waiters + 1))
  done
  [ "$waiters" = 1 ] || fail "rank pid $r: $waiters threads wait for the stop signals, want 1"
done
[ "$nthreads" -ge 6 ] || fail "found only $nthreads threads of the 2 ranks"
kill -USR1 $mpid; wait $mpid; rc=$?   # mpirun forwards SIGUSR1 to every rank
set -e
[ "$rc" -eq 85 ] || fail "SIGUSR1: exit status $rc, want 85 ($(tail -3 "$WORK/sig.log"))"
grep -q "stop signal received" "$WORK/sig.log" || fail "SIGUSR1: no message"
[ -f "$WORK/cks/$(cat "$WORK/cks/latest")/index.h5" ] || fail "SIGUSR1: no checkpoint"
echo "ok: SIGUSR1 -> checkpoint $(cat "$WORK/cks/latest") and exit 85 (of the $nthreads threads of 2 ranks, one per rank takes it)"

# 6. corruption: each case a clear error naming the file; nothing overwritten
expect_fail() {  # expect_fail "text" cmd...
  local want=$1; shift
  set +e; out=$("$@" 2>&1); rc=$?; set -e
  [ "$rc" -ne 0 ] || fail "succeeded on a corrupt checkpoint: $*"
  grep -qF -- "$want" <<<"$out" || fail "error lacks '$want': $out"
  echo "ok: $(grep -m1 error <<<"$out")"
}
good="$WORK/ck4/step_00000003"
mk() { rm -rf "$WORK/bad"; mkdir -p "$WORK/bad"; cp -r "$good" "$WORK/bad/step_00000003"; echo step_00000003 > "$WORK/bad/latest"; }
resume_bad() { run 1 "${train[@]}" --train.steps 5 --ckpt.dir "$WORK/bad" --resume auto; }
mk; rm "$WORK/bad/step_00000003/shard_00002_of_00004.h5"
expect_fail "shard_00002_of_00004.h5': shard file is missing" resume_bad
mk; f="$WORK/bad/step_00000003/shard_00001_of_00004.h5"; truncate -s 2000 "$f"
expect_fail "shard_00001_of_00004.h5': shard file is 2000 bytes, index.h5 records" resume_bad
mk; f="$WORK/bad/step_00000003/shard_00003_of_00004.h5"; printf '\x42' | dd of="$f" bs=1 seek=5000 conv=notrunc 2>/dev/null
expect_fail "shard_00003_of_00004.h5': checksum mismatch" resume_bad
mk
expect_fail "model config differs: checkpoint has 'd_model = 128', this run has 'd_model = 64'" \
  run 1 "${train[@]}" --train.steps 5 --ckpt.dir "$WORK/bad" --resume auto --model.d_model 64
# an index edited behind mor-dist's back is caught by its seal; resealed, the field itself is checked
mk; $PY -c "import h5py,sys; f=h5py.File(sys.argv[1],'r+'); f.attrs['format_version']=99" "$WORK/bad/step_00000003/index.h5"
expect_fail "but index.h5.xxh3 records" resume_bad
"$MOR_RESEAL" "$WORK/bad/step_00000003"
expect_fail "format version 99 is newer than this mor-dist reads" resume_bad
# `latest` naming a checkpoint that does not exist: the newest complete one is used, and said so
mk; echo step_00000099 > "$WORK/bad/latest"
run 1 "${train[@]}" --train.steps 4 --ckpt.dir "$WORK/bad" --resume auto > "$WORK/l99.log" 2>&1 || fail "latest -> missing dir: $(tail -2 "$WORK/l99.log")"
grep -q "'latest' names 'step_00000099', which does not exist; $WORK/bad/step_00000003 (step 3) is the newest complete checkpoint" \
  "$WORK/l99.log" || fail "latest -> missing dir: no note ($(head -3 "$WORK/l99.log"))"
echo "ok: latest naming a missing step resumed from the newest complete checkpoint, saying so"
mk; truncate -s 100 "$WORK/bad/step_00000003/index.h5"
expect_fail "index.h5': is 100 bytes but index.h5.xxh3 records" resume_bad
# same world size takes the one-pass path (each rank hashes its own shard while reading it)
rm -rf "$WORK/bad1"; mkdir -p "$WORK/bad1"; cp -r "$WORK/ckk/step_00000006" "$WORK/bad1/"; echo step_00000006 > "$WORK/bad1/latest"
printf '\x42' | dd of="$WORK/bad1/step_00000006/shard_00000_of_00001.h5" bs=1 seek=300000 conv=notrunc 2>/dev/null
expect_fail "shard_00000_of_00001.h5': checksum mismatch" run 1 "${train[@]}" --train.steps 8 --ckpt.dir "$WORK/bad1" --resume auto
expect_fail "already exists: convert never overwrites" run 1 convert --in "$good" --out "$WORK/c3" --shards 2
"$MOR_BIN" inspect "$good" | grep -q verified || fail "the good checkpoint was damaged"
echo "checkpoint: all checks passed"
