#!/usr/bin/env bash
# SLURM end to end, on the real local cluster of slurm/local-cluster.sh (ctest fixture
# `slurm`). One case per ctest test: tests/e2e/slurm.sh CASE
#   srun_parity  srun -n 4 --overcommit gives the same per-step losses as mpirun -np 4
#   srun_threads srun -n 4 --overcommit without OMP_NUM_THREADS: each rank takes its share of
#                the node's CPUs (1 thread on 2 cores), and the banner says why
#   requeue      slurm/train.sbatch with --time=1 --signal=B:USR1@50: saves on the signal,
#                requeues itself, resumes (restart 1) and ends with the same final
#                parameters (.mort bytes) as an uninterrupted run
#   rank_kill    kill -9 of one rank: the job fails within 60 s naming the dead task; a
#                resubmitted job resumes from the last complete checkpoint
#   elastic      a 4-task job checkpoints; slurm/convert.sbatch reshards it; a 2-task job
#                continues from the same global sample (and train.sbatch retries a step
#                that failed to launch while srun said 0)
#   chain        slurm/train-chain.sbatch: on the signal link 0 saves and exits 85, link 1
#                (afternotok dependency) resumes and finishes, link 2 is dropped
# MOR_NO_SLURM=1: print that the SLURM tests are disabled and exit 77, which ctest reports as
# Skipped (SKIP_RETURN_CODE in tests/CMakeLists.txt).
if [ "${MOR_NO_SLURM:-0}" = 1 ]; then
  echo "SLURM tests disabled by MOR_NO_SLURM"
  exit 77
fi
source "$(dirname "$0")/common.sh"
case_name=${1:?usage: slurm.sh srun_parity|srun_threads|requeue|rank_kill|elastic|chain}
export SLURM_CONF=${MOR_SLURM_DIR:-/tmp/mor-slurm}/slurm.conf
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_mpi_yield_when_idle=1 OMP_NUM_THREADS=1
unset SLURM_JOB_ID SLURM_JOBID   # never attach to an allocation this test may run inside
if ! [ -f "$SLURM_CONF" ] || ! sinfo -h > /dev/null 2>&1; then
  fail "no local SLURM cluster answers (SLURM_CONF=$SLURM_CONF): the fixture test slurm_cluster_up failed or was not run.
      Start it with slurm/local-cluster.sh up, or set MOR_NO_SLURM=1 to skip the SLURM tests on purpose."
fi
PY=/usr/bin/python3
JOBS=()
BG=()
HELD=()   # ranks stopped by hold_ranks
cleanup() {
  local j p
  for p in "${HELD[@]}"; do kill -CONT "$p" 2> /dev/null || true; done
  for j in "${JOBS[@]}"; do scancel "$j" 2> /dev/null || true; done
  for p in "${BG[@]}"; do kill "$p" 2> /dev/null || true; done
  [ -z "${stale:-}" ] || rm -f "$stale"
  rm -rf "$WORK"
}
trap cleanup EXIT
T0=$SECONDS
note() { echo "[$((SECONDS - T0))s] $*"; }
submit() {  # submit VAR SBATCH_ARGS...: VAR = the job id (also remembered for the cleanup)
  local var=$1 j; shift
  j=$(sbatch --parsable "$@") || fail "sbatch $* failed"
  j=${j%%;*}
  JOBS+=("$j")
  printf -v "$var" %s "$j"
}
field() { scontrol show job "$1" 2> /dev/null | tr ' ' '\n' | sed -n "s/^$2=//p" | head -1; }
wait_gone() {  # wait_gone JOB SECONDS: until the job left the queue; prints its final state
  local j=$1 limit=$2 t=$SECONDS
  while [ -n "$(squeue -h -j "$j" -o %T 2> /dev/null)" ]; do
    [ $((SECONDS - t)) -lt "$limit" ] || { scontrol show job "$j" >&2; fail "job $j still queued/running after ${limit}s"; }
    sleep 0.5
  done
  field "$j" JobState
}
show_log() {  # the job log without per-step lines, Open MPI's abort banners and tensor listings
  # (MOR_SLURM_LOG_DIR=DIR keeps a full copy of every job log there)
  [ -z "${MOR_SLURM_LOG_DIR:-}" ] || cp "$1" "$MOR_SLURM_LOG_DIR/${case_name}_$(basename "$1")"
  echo "---- $1"
  grep -vE '^\[job [0-9]+ restart [0-9]+\] step +[0-9]+/|^    [a-z_.0-9]+ +float32|^(MPI_ABORT|NOTE: invoking|You may or may not|exactly when|with errorcode|-{20,}|$)' "$1" || true
  echo "----"
}
steps_alive() {  # steps_alive JOB: is any slurmstepd of the job still there?
  ps -eo args= | grep -q "^slurmstepd: \[$1\."
}
# Holding a job's ranks (SIGSTOP) until a signal is queued for them makes the signal
# cases independent of this machine's speed: the runs would otherwise have to outlast
# the time limit's warning (0-30 s late: slurmctld checks limits every 30 s) and the
# sbatch scripts' forwarding delay on their own, which a fast machine does not.
RANKS=()
job_ranks() {  # job_ranks MARKER N: RANKS = PIDs of the N mor-dist ranks whose command line holds MARKER
  local marker=$1 n=$2 p t=$SECONDS   # (no subshell: fail must end the test)
  while :; do
    RANKS=()
    for p in $(pgrep -x mor-dist); do
      tr '\0' ' ' < "/proc/$p/cmdline" 2> /dev/null | grep -qF -- "$marker" && RANKS+=("$p")
    done
    [ ${#RANKS[@]} -lt "$n" ] || return 0
    [ $((SECONDS - t)) -lt 30 ] || fail "found ${#RANKS[@]} of $n mor-dist ranks running with '$marker'"
    sleep 0.2
  done
}
hold_ranks() {  # hold_ranks PIDS...: stop the ranks (SIGCONT again in the cleanup if a check fails)
  HELD+=("$@")
  kill -STOP "$@"
}
release_when_signalled() {  # release_when_signalled SIG LIMIT PIDS...: once SIG is pending in every held rank, SIGCONT them
  local sig=$1 limit=$2 t=$SECONDS p bit pending; shift 2
  bit=$((1 << ($(kill -l "$sig") - 1)))
  while :; do
    pending=0
    for p in "$@"; do
      (( 0x$(sed -n 's/^ShdPnd:[[:space:]]*//p' "/proc/$p/status" 2> /dev/null || echo 0) & bit )) && pending=$((pending + 1))
    done
    [ "$pending" -lt $# ] || break
    [ $((SECONDS - t)) -lt "$limit" ] || fail "SIG$sig reached $pending of $# held ranks within ${limit}s"
    sleep 0.2
  done
  kill -CONT "$@"
}
wait_log() {  # wait_log FILE REGEX SECONDS: until a line of FILE matches REGEX
  local t=$SECONDS
  until grep -qE -- "$2" "$1" 2> /dev/null; do
    [ $((SECONDS - t)) -lt "$3" ] || { [ -f "$1" ] && show_log "$1"; fail "no line matching '$2' in $1 after ${3}s"; }
    sleep 0.1
  done
}
mpi4() { mpirun --oversubscribe --bind-to none -np 4 "$MOR_BIN" "$@"; }
losses() { $PY -c "import json,sys; [print(repr(json.loads(l)['loss'])) for l in open(sys.argv[1]) if '\"loss\"' in l]" "$1"; }

# options shared by every run (MOR_ARGS is shell-quoted: the glob reaches mor-dist unexpanded)
TRAIN=(--train.global_batch 12 --train.log_every 1 --train.threads 1 --train.peak_gflops 100
       --data.train "$MOR_DATA/edu_fineweb_train_*.bin")
ARGS="--train.global_batch 12 --train.log_every 1 --train.threads 1 --train.peak_gflops 100 --data.train '$MOR_DATA/edu_fineweb_train_*.bin'"
export MOR_BIN MOR_CONFIG="$MOR_SRC/configs/tiny_mor.ini"
SBATCH_TRAIN=$MOR_SRC/slurm/train.sbatch

case "$case_name" in
# ---------------------------------------------------------------------------------------
srun_parity)
  mpi4 train --config "$MOR_CONFIG" "${TRAIN[@]}" --data.val "" --train.steps 20 --train.metrics "$WORK/mpirun.jsonl" > "$WORK/mpirun.log"
  note "mpirun -np 4: done"
  srun -n 4 --overcommit "$MOR_BIN" train --config "$MOR_CONFIG" "${TRAIN[@]}" --data.val "" --train.steps 20 \
    --train.metrics "$WORK/srun.jsonl" > "$WORK/srun.log" 2>&1 || { cat "$WORK/srun.log"; fail "srun -n 4 failed"; }
  note "srun -n 4 --overcommit: done"
  grep -qE '^\[job [0-9]+ restart 0\] dist: mpi, world 4' "$WORK/srun.log" || { cat "$WORK/srun.log"; fail "srun run is not a 4-rank MPI run with the [job N restart 0] prefix"; }
  $PY - "$WORK/mpirun.jsonl" "$WORK/srun.jsonl" <<'PYEOF' || fail "srun and mpirun losses differ"
import json, sys
load = lambda p: [json.loads(l) for l in open(p) if '"loss"' in l]
a, b = load(sys.argv[1]), load(sys.argv[2])
assert len(a) == len(b) == 20, (len(a), len(b))
assert all(r["world"] == 4 for r in a + b)
assert all(r["job_id"] == "" for r in a) and all(r["job_id"] != "" and r["restart"] == 0 for r in b), "job_id/restart fields"
worst = max(abs(x["loss"] - y["loss"]) for x, y in zip(a, b))
same = all(x["loss"] == y["loss"] for x, y in zip(a, b))
print(f"ok: srun -n 4 vs mpirun -np 4: 20 losses {'bitwise identical' if same else f'within {worst:.1e}'} (job {b[0]['job_id']})")
sys.exit(0 if worst <= 1e-12 else 1)
PYEOF
  ;;
# ---------------------------------------------------------------------------------------
srun_threads)
  # The README's srun example without OMP_NUM_THREADS (this script exports 1 for the others):
  # the tasks must split the node's CPUs, not take them all each.
  env -u OMP_NUM_THREADS srun -n 4 --overcommit "$MOR_BIN" train --config "$MOR_CONFIG" --train.global_batch 12 \
    --train.peak_gflops 100 --data.train "$MOR_DATA/edu_fineweb_train_*.bin" --data.val "" --train.steps 1 \
    > "$WORK/srun.log" 2>&1 || { cat "$WORK/srun.log"; fail "srun -n 4 failed"; }
  line=$(grep -E '^\[job [0-9]+ restart 0\] batch: global' "$WORK/srun.log") || { cat "$WORK/srun.log"; fail "no batch line"; }
  cpus=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)   # nproc honours OMP_NUM_THREADS, set above
  want=$((cpus / 4)); [ "$want" -ge 1 ] || want=1
  grep -qE "\| threads $want \(.*4 ranks on this node" <<<"$line" || fail "want $want thread(s) per rank from $cpus CPUs / 4 ranks: $line"
  echo "ok: srun -n 4 --overcommit on $cpus CPUs: ${line#*| threads }"
  ;;
# ---------------------------------------------------------------------------------------
requeue)
  # The first run is held (its ranks stopped) from step 5 until the time limit's SIGUSR1,
  # forwarded by the batch script after MOR_SIGNAL_DEFER s, is pending in every rank:
  # it comes 10-40 s after the start (--time=1 --signal=B:USR1@50; slurmctld checks
  # limits every 30 s), so the run saves on it whatever this machine's speed. It
  # evaluates on the validation shard at the end only; evaluation does not touch the
  # training state, and the uninterrupted reference run, which skips it, must match
  # bit for bit.
  S=60
  ck=$WORK/ck; out=$WORK/job.out
  MOR_CKPT_DIR=$ck MOR_SAVE_EVERY=0 MOR_SIGNAL_DEFER=8 \
    MOR_ARGS="$ARGS --train.steps $S --data.val '$MOR_DATA/edu_fineweb_val_*.bin' --train.eval_every 0 --train.eval_samples 24 --train.metrics $WORK/job.jsonl --train.save_params $WORK/job.mort" \
    submit job -n 4 --ntasks-per-node=4 --time=1 --signal=B:USR1@50 -o "$out" "$SBATCH_TRAIN"
  note "submitted job $job (--time=1 --signal=B:USR1@50 --requeue)"
  wait_log "$out" "^\[job $job restart 0\] step +5/" 120
  job_ranks "$WORK/job.jsonl" 4; ranks=("${RANKS[@]}")
  hold_ranks "${ranks[@]}"
  note "restart 0 at step 5: ranks ${ranks[*]} held until SIGUSR1 is pending in all of them"
  # the uninterrupted reference, meanwhile, outside SLURM
  mpi4 train --config "$MOR_CONFIG" "${TRAIN[@]}" --data.val "" --train.steps $S --train.save_params "$WORK/ref.mort" > "$WORK/ref.log" 2>&1 &
  BG+=($!)
  release_when_signalled USR1 90 "${ranks[@]}"
  note "SIGUSR1 pending in the held ranks: released"
  sped_up=0
  while :; do
    st=$(field "$job" JobState); restarts=$(field "$job" Restarts)
    if [ "$sped_up" = 0 ] && [ "${restarts:-0}" -ge 1 ] && [ "$st" = PENDING ] && ! steps_alive "$job"; then
      # a requeued job waits cred_expire+1 s (BeginTime); start it in 2 s instead (once
      # the first run's steps are gone: a new step 0 cannot bind the PMIx socket of an
      # old one that is still being torn down), and give it time to finish without
      # another warning
      if scontrol update JobId="$job" StartTime=now+2 TimeLimit=10; then
        note "job $job requeued (restart $restarts): StartTime=now+2 TimeLimit=10"
      else
        note "job $job requeued (restart $restarts) and already started again"
      fi
      sped_up=1
    fi
    case "$st" in COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY|BOOT_FAIL|DEADLINE) break ;; esac
    [ $((SECONDS - T0)) -lt 400 ] || { show_log "$out"; fail "job $job not done after 400 s (state $st)"; }
    sleep 0.5
  done
  note "job $job: $st after $(field "$job" Restarts) restart(s)"
  wait "${BG[0]}" || { cat "$WORK/ref.log"; fail "reference run failed"; }
  show_log "$out"
  [ "$st" = COMPLETED ] || fail "job $job ended $st"
  [ "$sped_up" = 1 ] || fail "job $job was never requeued"
  grep -qE "^\[job $job restart 0\] train.sbatch: got SIGUSR1" "$out" || fail "the batch script never got SIGUSR1 from the time limit"
  k=$(sed -nE "s/^\[job $job restart 0\] stop signal received: saving at step ([0-9]+) .*/\1/p" "$out")
  [ -n "$k" ] || fail "restart 0 did not save on the signal"
  [ "$k" -lt "$S" ] || fail "the signal came after the last step"
  grep -qE "^\[job $job restart 0\] train.sbatch: checkpoint saved on signal \(exit 85\): requeueing" "$out" || fail "no requeue after exit 85"
  grep -qF "[job $job restart 1] train.sbatch: SLURM_RESTART_COUNT=1:" "$out" || fail "SLURM_RESTART_COUNT=1 not seen by the batch script"
  kk=$(printf %08d "$k")
  grep -qF "[job $job restart 1] resumed from $ck/step_$kk: step $k, next sample $((k * 12)) (saved on 4 ranks, now 4)" "$out" ||
    fail "restart 1 did not resume from step $k"
  grep -qE "^\[job $job restart [1-9]\] step +$S/" "$out" || fail "never reached step $S"
  grep -qE "^\[job $job restart [1-9]\] train.sbatch: training finished" "$out" || fail "no 'training finished'"
  cmp "$WORK/ref.mort" "$WORK/job.mort" || fail "final parameters differ from the uninterrupted run"
  $PY - "$WORK/job.jsonl" "$S" "$job" <<'PYEOF' || fail "metrics of the requeued job are wrong"
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if '"loss"' in l]
S, job = int(sys.argv[2]), sys.argv[3]
steps = [r["step"] for r in recs]
assert steps == list(range(1, S + 1)), steps          # every step exactly once over both runs
assert all(r["job_id"] == job for r in recs)
assert {r["restart"] for r in recs} >= {0, 1}
print(f"ok: metrics of job {job}: steps 1-{S} once each, restart 0 up to step {max(r['step'] for r in recs if r['restart'] == 0)}")
PYEOF
  echo "ok: job $job saved at step $k on the time-limit signal, requeued itself, resumed as restart 1; final parameters == uninterrupted run (cmp)"
  ;;
# ---------------------------------------------------------------------------------------
rank_kill)
  ck=$WORK/ck; out=$WORK/job.out
  MOR_CKPT_DIR=$ck MOR_SAVE_EVERY=5 MOR_ARGS="$ARGS --data.val '' --train.steps 100000" \
        submit job -n 4 --ntasks-per-node=4 --time=30 -o "$out" "$SBATCH_TRAIN"
  note "submitted job $job"
  for _ in $(seq 600); do [ "$(cat "$ck/latest" 2> /dev/null)" = step_00000010 ] && break; sleep 0.1; done
  [ "$(cat "$ck/latest" 2> /dev/null)" = step_00000010 ] || { show_log "$out"; fail "no checkpoint at step 10 after 60 s"; }
  # rank 2 of the job: the mor-dist process whose environment has this job and SLURM_PROCID=2
  victim=""
  for p in /proc/[0-9]*; do
    [ "$(cat "$p/comm" 2> /dev/null)" = mor-dist ] || continue
    e=$(tr '\0' '\n' < "$p/environ" 2> /dev/null) || continue
    grep -qx "SLURM_JOB_ID=$job" <<< "$e" && grep -qx "SLURM_PROCID=2" <<< "$e" && victim="$victim ${p#/proc/}"
  done
  victim=${victim# }
  [ -n "$victim" ] && [ "${victim// /}" = "$victim" ] || fail "expected one rank-2 process of job $job, found '$victim'"
  grep -q "^$victim " <(scontrol listpids "$job" 2> /dev/null | awk '{print $1 " " $5}') || fail "pid $victim is not listed by scontrol listpids $job"
  sleep 1   # a few more steps, maybe inside a save
  kill -9 "$victim"; t_kill=$SECONDS
  note "kill -9 $victim (rank 2 of job $job)"
  st=$(wait_gone "$job" 90)
  dt=$((SECONDS - t_kill))
  note "job $job ended $st ($(field "$job" ExitCode)) ${dt}s after the kill"
  show_log "$out"
  [ "$dt" -lt 60 ] || fail "job took ${dt}s to end after a rank was killed (hang?)"
  [ "$st" = FAILED ] || fail "job ended $st, want FAILED"
  grep -qE "^srun: error: [^:]+: task 2: Killed" "$out" || fail "no message naming the killed task 2"
  grep -qF "train.sbatch: mor-dist failed with status" "$out" || fail "batch script did not report the failure"
  last=$(cat "$ck/latest"); n=$((10#${last#step_}))
  "$MOR_BIN" inspect "$ck/$last" | grep -q verified || fail "latest checkpoint $last does not verify"
  # resubmit: resumes from the last complete checkpoint and runs 3 more steps
  out2=$WORK/job2.out
  MOR_CKPT_DIR=$ck MOR_SAVE_EVERY=5 MOR_ARGS="$ARGS --data.val '' --train.steps $((n + 3))" \
    submit job2 -n 4 --ntasks-per-node=4 --time=30 -o "$out2" "$SBATCH_TRAIN"
  st2=$(wait_gone "$job2" 120)
  show_log "$out2"
  [ "$st2" = COMPLETED ] || fail "resubmitted job $job2 ended $st2"
  grep -qF "[job $job2 restart 0] resumed from $ck/$last: step $n, next sample $((n * 12)) (saved on 4 ranks, now 4)" "$out2" ||
    fail "resubmitted job did not resume from $last"
  grep -qE "^\[job $job2 restart 0\] step +$((n + 3))/" "$out2" || fail "resubmitted job did not reach step $((n + 3))"
  echo "ok: rank 2 killed -> job $job FAILED in ${dt}s naming task 2; job $job2 resumed from $last (step $n)"
  ;;
# ---------------------------------------------------------------------------------------
elastic)
  ck=$WORK/ck
  MOR_CKPT_DIR=$ck MOR_SAVE_EVERY=0 MOR_ARGS="$ARGS --data.val '' --train.steps 10" \
         submit job4 --hold -n 4 --ntasks-per-node=4 --time=30 -o "$WORK/job4.out" "$SBATCH_TRAIN"
  # Its first step cannot launch: a stale PMIx socket of "step 0" is in the way, as when a
  # requeued run starts before the previous run's step is torn down. srun then exits 0
  # (Slurm 22.05); train.sbatch notices that no task started and launches it again.
  spool=$(scontrol show config | sed -nE 's/^SlurmdSpoolDir *= *//p')
  stale=$spool/stepd.slurm.pmix.$job4.0
  $PY -c "import socket, sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])" "$stale"
  scontrol release "$job4"
  MOR_CONVERT_IN=$ck/step_00000010 MOR_CONVERT_OUT=$WORK/conv2 MOR_CONVERT_SHARDS=2 \
         submit jobc -n 2 --time=30 --dependency=afterok:"$job4" -o "$WORK/conv.out" "$MOR_SRC/slurm/convert.sbatch"
  MOR_CKPT_DIR=$ck MOR_SAVE_EVERY=0 MOR_ARGS="$ARGS --data.val '' --train.steps 14" \
         submit job2 -n 2 --ntasks-per-node=2 --time=30 --dependency=afterok:"$jobc" -o "$WORK/job2.out" "$SBATCH_TRAIN"
  note "submitted $job4 (4 tasks) -> $jobc (convert.sbatch, 2 tasks) -> $job2 (2 tasks)"
  st=$(wait_gone "$job2" 240)
  rm -f "$stale"
  show_log "$WORK/job4.out"; show_log "$WORK/conv.out"; show_log "$WORK/job2.out"
  grep -qE "^srun: error: task 0 launch failed" "$WORK/job4.out" || fail "the first step of job $job4 was expected to fail to launch"
  grep -qF "[job $job4 restart 0] train.sbatch: the job step did not start (srun status 0): retrying in 5 s" "$WORK/job4.out" ||
    fail "train.sbatch did not notice the failed launch"
  [ "$(field "$job4" JobState)" = COMPLETED ] || fail "4-task job $job4 ended $(field "$job4" JobState)"
  [ "$(field "$jobc" JobState)" = COMPLETED ] || fail "convert job $jobc ended $(field "$jobc" JobState)"
  [ "$st" = COMPLETED ] || fail "2-task job $job2 ended $st"
  [ "$(ls "$WORK/conv2"/shard_*.h5 | wc -l)" -eq 2 ] || fail "convert.sbatch did not write 2 shards"
  grep -q verified "$WORK/conv.out" || fail "convert.sbatch did not verify its output"
  grep -qF "[job $job2 restart 0] resumed from $ck/step_00000010: step 10, next sample 120 (saved on 4 ranks, now 2)" "$WORK/job2.out" ||
    fail "2-task job did not continue from global sample 120 of the 4-task checkpoint"
  grep -qE "^\[job $job2 restart 0\] step +14/" "$WORK/job2.out" || fail "2-task job did not reach step 14"
  echo "ok: job $job4: a step that failed to launch (srun said 0) was retried"
  echo "ok: job $job4 (4 tasks) saved step 10; convert.sbatch resharded it 4->2; job $job2 (2 tasks) resumed at step 10, next sample 120"
  ;;
# ---------------------------------------------------------------------------------------
chain)
  ck=$WORK/ck; out=$WORK/chain.out
  MOR_CKPT_DIR=$ck MOR_SAVE_EVERY=0 MOR_SIGNAL_DEFER=3 MOR_CHAIN_SCRIPT=$MOR_SRC/slurm/train-chain.sbatch \
         MOR_ARGS="$ARGS --data.val '' --train.steps 16" \
         submit job0 -n 4 --ntasks-per-node=4 --time=30 -o "$out" "$MOR_SRC/slurm/train-chain.sbatch"
  note "submitted chain link 0: job $job0"
  wait_log "$out" "^\[job $job0 restart 0\] step +5/" 120
  job_ranks "$WORK/ck" 4; ranks=("${RANKS[@]}")
  hold_ranks "${ranks[@]}"   # until the signal is pending in them: see release_when_signalled
  job1=$(sed -nE "s/^\[job $job0 link 0\] train-chain.sbatch: submitted link 1 as job ([0-9]+).*/\1/p" "$out")
  [ -n "$job1" ] || { show_log "$out"; fail "link 0 did not submit link 1"; }
  JOBS+=("$job1")
  [ "$(field "$job1" JobState)" = PENDING ] || fail "link 1 is not pending while link 0 runs"
  scancel --signal=USR1 --batch "$job0"   # what the time limit's --signal does, without waiting for it
  note "SIGUSR1 to link 0's batch script (ranks ${ranks[*]} held at step 5)"
  release_when_signalled USR1 30 "${ranks[@]}"
  st0=$(wait_gone "$job0" 60)
  st1=$(wait_gone "$job1" 120)
  show_log "$out"
  [ "$st0" = FAILED ] && [ "$(field "$job0" ExitCode)" = 85:0 ] || fail "link 0 ended $st0 $(field "$job0" ExitCode), want FAILED 85:0"
  [ "$st1" = COMPLETED ] || fail "link 1 (job $job1) ended $st1"
  k=$(sed -nE "s/^\[job $job0 restart 0\] stop signal received: saving at step ([0-9]+) .*/\1/p" "$out")
  [ -n "$k" ] || fail "link 0 did not save on the signal"
  grep -qF "[job $job1 restart 0] resumed from $ck/step_$(printf %08d "$k"): step $k" "$out" || fail "link 1 did not resume from step $k"
  grep -qE "^\[job $job1 restart 0\] step +16/" "$out" || fail "link 1 did not reach step 16"
  job2=$(sed -nE "s/^\[job $job1 link 1\] train-chain.sbatch: submitted link 2 as job ([0-9]+).*/\1/p" "$out")
  [ -n "$job2" ] || fail "link 1 did not submit link 2"
  JOBS+=("$job2")
  st2=$(wait_gone "$job2" 30)
  [ "$st2" = CANCELLED ] || fail "link 2 (job $job2) is $st2, want CANCELLED after link 1 finished"
  echo "ok: chain: link 0 (job $job0) saved at step $k and exited 85; link 1 (job $job1) resumed and finished; link 2 (job $job2) cancelled"
  ;;
*) fail "unknown case '$case_name'" ;;
esac
note "$case_name: passed"
