#!/usr/bin/env bash
# Multi-node end to end, on the real 3-node cluster of `slurm/local-cluster.sh up --nodes 3` (ctest
# fixture `slurm_nodes`): every node a network namespace with its own address and host name, one
# slurmd each, Open MPI over TCP between them. One case per ctest test: tests/e2e/multinode.sh CASE
#   train       srun -N 2 -n 4 (2 tasks per node): TCP between the nodes, shared memory within
#               one, 1 thread per rank by default (2 CPUs / 2 ranks on the node), only rank 0
#               prints, the log names each rank's node; losses and final parameters are
#               bitwise those of a 4-rank single-node run (mpirun)
#   checkpoint  ranks on 2 nodes save into one checkpoint directory (every shard verifies, no
#               half-written directory is left); an elastic restart on 1 node x 3 tasks
#               continues at the same global sample, with the losses of a 3-rank mpirun resume
#   node_loss   slurm/train.sbatch -N 2 (of 3 nodes, --requeue); after its checkpoint at step 10
#               every process of its second node is SIGKILLed (slurmd included): the job leaves
#               the nodes within 90 s naming the lost node (srun, the next run's batch script), SLURM requeues it onto the 2 nodes left, it resumes from the last complete
#               checkpoint, and its final parameters equal an uninterrupted 4-rank run's (cmp)
#   link        bench/fsdp_scaling --nodes 2 on the tiny model over a 10 Gbit/s token bucket:
#               the report has step time, bytes per collective and the all-gather share hidden
# Skipped (exit 77, with the reason) where network namespaces cannot be made (not root, no
# CAP_SYS_ADMIN / CAP_NET_ADMIN) or with MOR_NO_SLURM=1.
if [ "${MOR_NO_SLURM:-0}" = 1 ]; then
  echo "SLURM tests disabled by MOR_NO_SLURM"
  exit 77
fi
LC="$(cd "$(dirname "$0")/../.." && pwd)/slurm/local-cluster.sh"
if ! reason=$("$LC" probe --nodes 3); then echo "SKIP: $reason"; exit 77; fi
source "$(dirname "$0")/common.sh"
case_name=${1:?usage: multinode.sh train|checkpoint|node_loss|link}
export SLURM_CONF=${MOR_SLURM_NODES_DIR:-/tmp/mor-slurm-nodes}/slurm.conf
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_mpi_yield_when_idle=1 OMP_NUM_THREADS=1
unset SLURM_JOB_ID SLURM_JOBID
if ! [ -f "$SLURM_CONF" ] || ! sinfo -h > /dev/null 2>&1; then
  fail "no multi-node cluster answers (SLURM_CONF=$SLURM_CONF): the fixture test slurm_nodes_up failed or was not run.
      Start it with slurm/local-cluster.sh up --nodes 3, or set MOR_NO_SLURM=1 to skip the SLURM tests on purpose."
fi
PY=/usr/bin/python3
SUBNET=${MOR_SLURM_SUBNET:-10.199.0}
JOBS=()
BG=()
KILLED=()   # nodes this test killed: revived in the cleanup, so the next test finds 3 nodes
cleanup() {
  local j p n
  for j in "${JOBS[@]}"; do scancel "$j" 2> /dev/null || true; done
  for p in "${BG[@]}"; do kill "$p" 2> /dev/null || true; done
  for n in "${KILLED[@]}"; do "$LC" revive-node "$n" || echo "warning: could not revive $n" >&2; done
  rm -rf "$WORK"
}
trap cleanup EXIT
T0=$SECONDS
note() { echo "[$((SECONDS - T0))s] $*"; }
field() { scontrol show job "$1" 2> /dev/null | tr ' ' '\n' | sed -n "s/^$2=//p" | head -1; }
wait_gone() {  # wait_gone JOB SECONDS: until the job left the queue; prints its final state
  local j=$1 limit=$2 t=$SECONDS
  while [ -n "$(squeue -h -j "$j" -o %T 2> /dev/null)" ]; do
    [ $((SECONDS - t)) -lt "$limit" ] || { scontrol show job "$j" >&2; fail "job $j still queued/running after ${limit}s"; }
    sleep 0.5
  done
  field "$j" JobState
}
show_log() {  # the log without per-step lines and Open MPI's banners (MOR_SLURM_LOG_DIR=DIR keeps a full copy)
  [ -z "${MOR_SLURM_LOG_DIR:-}" ] || cp "$1" "$MOR_SLURM_LOG_DIR/multinode_${case_name}_$(basename "$1")"
  echo "---- $1"
  grep -vE '^(\[job [0-9]+ restart [0-9]+\] )?step +[0-9]+/|^    [a-z_.0-9]+ +float32|^$' "$1" || true
  echo "----"
}
idle_nodes() { sinfo -h -N -t idle -o %N | sort -u | wc -l; }
need_idle() {  # need_idle N: at least N nodes idle within 60 s (an earlier test's node may still be rejoining)
  local t=$SECONDS
  until [ "$(idle_nodes)" -ge "$1" ]; do
    [ $((SECONDS - t)) -lt 60 ] || { sinfo -N; fail "fewer than $1 idle nodes"; }
    sleep 0.5
  done
}
mpi() { local n=$1; shift; mpirun --oversubscribe --bind-to none -np "$n" "$MOR_BIN" "$@"; }
same_losses() {  # same_losses A.jsonl B.jsonl N WHAT: N loss records, bitwise equal
  $PY - "$@" <<'PYEOF'
import json, sys
a, b, n, what = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
load = lambda p: [json.loads(l) for l in open(p) if '"loss"' in l]
x, y = load(a), load(b)
assert len(x) == len(y) == n, (what, len(x), len(y), n)
bad = [(r["step"], r["loss"], s["loss"]) for r, s in zip(x, y) if r["step"] != s["step"] or r["loss"] != s["loss"]]
assert not bad, f"{what}: losses differ: {bad[:3]}"
print(f"ok: {what}: {n} losses bitwise identical (steps {x[0]['step']}-{x[-1]['step']})")
PYEOF
}
TRAIN=(--config "$MOR_SRC/configs/tiny_mor.ini" --train.global_batch 12 --train.log_every 1 --train.peak_gflops 100
       --data.train "$MOR_DATA/edu_fineweb_train_*.bin" --data.val "")

case "$case_name" in
# ---------------------------------------------------------------------------------------
train)
  need_idle 2
  S=30
  # across 2 nodes, without --train.threads or OMP_NUM_THREADS: the default must give each rank its
  # share of its node (the README's command)
  env -u OMP_NUM_THREADS srun -N 2 -n 4 -J "mn-train-$$" "$MOR_BIN" train "${TRAIN[@]}" --train.steps $S \
    --train.metrics "$WORK/mn.jsonl" --train.save_params "$WORK/mn.mort" > "$WORK/mn.log" 2>&1 &
  srun_pid=$!; BG+=("$srun_pid")
  # while it runs: the ranks of the second node hold TCP connections to the first node's
  # address, and each node has its own shared-memory segments (vader_segment.<host>.*)
  tcp="" shm=""
  while kill -0 "$srun_pid" 2> /dev/null; do
    nodes=$(squeue -h -n "mn-train-$$" -t R -o %N 2> /dev/null | head -1)
    n2=$(scontrol show hostnames "$nodes" 2> /dev/null | sed -n 2p)
    n1=$(scontrol show hostnames "$nodes" 2> /dev/null | sed -n 1p)
    if [ -n "$n2" ] && [ -z "$tcp" ]; then
      tcp=$("$LC" exec "$n2" ss -tnpH state established 2> /dev/null |
            awk -v peer="$SUBNET.$((10 + ${n1#node})):" 'index($4, peer) == 1 && /"mor-dist"/' | head -1 || true)
    fi
    if [ -n "$n2" ] && [ -z "$shm" ] && compgen -G "/dev/shm/vader_segment.$n1.*" > /dev/null &&
       compgen -G "/dev/shm/vader_segment.$n2.*" > /dev/null; then shm="$n1 $n2"; fi
    [ -n "$tcp" ] && [ -n "$shm" ] && break
    sleep 0.2
  done
  wait "$srun_pid" || { cat "$WORK/mn.log"; fail "srun -N 2 -n 4 failed"; }
  note "srun -N 2 -n 4: done"
  show_log "$WORK/mn.log"
  [ -n "$tcp" ] || fail "no established TCP connection of mor-dist from $n2 to $n1 seen during the run"
  note "TCP between the nodes: $n2 -> $(awk '{print $4}' <<< "$tcp") ($(grep -o 'users:.*' <<< "$tcp"))"
  [ -n "$shm" ] || fail "no shared-memory segments of both nodes ($n1, $n2) seen during the run"
  note "shared memory within each node: /dev/shm/vader_segment.$n1.* and vader_segment.$n2.*"
  grep -qE "^\[job [0-9]+ restart 0\] nodes: $n1 \(ranks 0-1\), $n2 \(ranks 2-3\)$" "$WORK/mn.log" ||
    fail "the log does not name the node of each rank ($n1: ranks 0-1, $n2: ranks 2-3)"
  grep -qE "\| threads 1 \(2 CPUs in affinity mask / 2 ranks on this node \(SLURM_STEP_TASKS_PER_NODE\)" "$WORK/mn.log" ||
    fail "want 1 thread per rank from 2 CPUs / 2 ranks on the node: $(grep -E 'batch: global' "$WORK/mn.log")"
  # only rank 0 prints: every line once
  [ "$(grep -cE '^\[job [0-9]+ restart 0\] step +1/' "$WORK/mn.log")" -eq 1 ] || fail "step 1 printed more than once (not only rank 0 prints)"
  [ "$(grep -cE '^\[job [0-9]+ restart 0\] params: ' "$WORK/mn.log")" -eq 1 ] || fail "the banner printed more than once"
  grep -qE '^\[job [0-9]+ restart 0\] dist: mpi, world 4 ' "$WORK/mn.log" || fail "not a 4-rank MPI run"
  # the same run on one node (4 ranks, shared memory only)
  mpi 4 train "${TRAIN[@]}" --train.threads 1 --train.steps $S --train.metrics "$WORK/ref.jsonl" \
    --train.save_params "$WORK/ref.mort" > "$WORK/ref.log" 2>&1 || { cat "$WORK/ref.log"; fail "mpirun -np 4 failed"; }
  note "mpirun -np 4 on one node: done"
  same_losses "$WORK/ref.jsonl" "$WORK/mn.jsonl" $S "2 nodes x 2 ranks vs 1 node x 4 ranks"
  cmp "$WORK/ref.mort" "$WORK/mn.mort" || fail "final parameters differ from the single-node 4-rank run"
  echo "ok: srun -N 2 -n 4 over TCP between namespaces == mpirun -np 4 on one node (losses and final parameters, bitwise)"
  ;;
# ---------------------------------------------------------------------------------------
checkpoint)
  need_idle 2
  ck=$WORK/ck
  srun -N 2 -n 4 "$MOR_BIN" train "${TRAIN[@]}" --train.threads 1 --train.steps 10 --ckpt.dir "$ck" --ckpt.save_every 5 \
    > "$WORK/a.log" 2>&1 || { cat "$WORK/a.log"; fail "srun -N 2 -n 4 with checkpoints failed"; }
  show_log "$WORK/a.log"
  nodes=$(sed -nE 's/^\[job [0-9]+ restart 0\] nodes: //p' "$WORK/a.log")
  grep -qE '^node[0-9]+ \(ranks 0-1\), node[0-9]+ \(ranks 2-3\)$' <<< "$nodes" || fail "ranks not on 2 nodes: '$nodes'"
  [ "$(cat "$ck/latest")" = step_00000010 ] || fail "latest is '$(cat "$ck/latest")', want step_00000010"
  for s in step_00000005 step_00000010; do
    [ "$(ls "$ck/$s"/shard_*.h5 | wc -l)" -eq 4 ] || fail "$s: want 4 shard files (ranks 0-3 on two nodes), found $(ls "$ck/$s")"
    "$MOR_BIN" inspect "$ck/$s" > "$WORK/inspect.log" 2>&1 || { cat "$WORK/inspect.log"; fail "$s does not verify"; }
    grep -q verified "$WORK/inspect.log" || { cat "$WORK/inspect.log"; fail "$s: inspect did not verify it"; }
  done
  left=$(find "$ck" -mindepth 1 -maxdepth 1 ! -name step_00000005 ! -name step_00000010 ! -name latest -printf '%f ')
  [ -z "$left" ] || fail "unexpected entries in the checkpoint directory (half-written saves?): $left"
  note "2 nodes x 2 ranks: step 5 and 10 saved, 4 shards each (ranks 2-3 on the second node: $nodes), all verify"
  # elastic: 1 node x 3 tasks (more tasks than the node's 2 CPUs: --overcommit), same global sample;
  # and the same resume under mpirun -np 3, from a copy of the checkpoint
  cp -a "$ck" "$WORK/ck3"
  srun -N 1 -n 3 --overcommit "$MOR_BIN" train "${TRAIN[@]}" --train.threads 1 --train.steps 14 --ckpt.dir "$ck" \
    --ckpt.save_every 0 --resume auto --train.metrics "$WORK/b.jsonl" > "$WORK/b.log" 2>&1 ||
    { cat "$WORK/b.log"; fail "srun -N 1 -n 3 resume failed"; }
  show_log "$WORK/b.log"
  grep -qE "^\[job [0-9]+ restart 0\] nodes: node[0-9]+ \(ranks 0-2\)$" "$WORK/b.log" || fail "the 3 ranks are not on one node"
  grep -qF "resumed from $ck/step_00000010: step 10, next sample 120 (saved on 4 ranks, now 3)" "$WORK/b.log" ||
    fail "the 3-task run did not continue from global sample 120 of the 4-rank checkpoint"
  grep -qE '^\[job [0-9]+ restart 0\] step +14/' "$WORK/b.log" || fail "the 3-task run did not reach step 14"
  mpi 3 train "${TRAIN[@]}" --train.threads 1 --train.steps 14 --ckpt.dir "$WORK/ck3" --ckpt.save_every 0 --resume auto \
    --train.metrics "$WORK/b3.jsonl" > "$WORK/b3.log" 2>&1 || { cat "$WORK/b3.log"; fail "mpirun -np 3 resume failed"; }
  same_losses "$WORK/b3.jsonl" "$WORK/b.jsonl" 4 "elastic resume 4 -> 3 ranks: srun -N 1 -n 3 vs mpirun -np 3"
  echo "ok: a checkpoint saved by ranks on 2 nodes verifies; 1 node x 3 tasks resumed it at sample 120"
  ;;
# ---------------------------------------------------------------------------------------
node_loss)
  need_idle 3
  S=60
  ck=$WORK/ck; out=$WORK/job.out
  # 2 nodes of 3: after the loss SLURM requeues the job (NODE_FAIL, --requeue) onto the 2 left
  j=$(MOR_BIN=$MOR_BIN MOR_CONFIG=$MOR_SRC/configs/tiny_mor.ini MOR_CKPT_DIR=$ck MOR_SAVE_EVERY=5 \
      MOR_ARGS="--train.global_batch 12 --train.log_every 1 --train.threads 1 --train.peak_gflops 100 --data.train '$MOR_DATA/edu_fineweb_train_*.bin' --data.val '' --train.steps $S --train.metrics $WORK/job.jsonl --train.save_params $WORK/job.mort" \
      sbatch --parsable -N 2 --ntasks-per-node=2 --time=30 -o "$out" "$MOR_SRC/slurm/train.sbatch") || fail "sbatch failed"
  j=${j%%;*}; JOBS+=("$j")
  note "submitted job $j (slurm/train.sbatch -N 2 --ntasks-per-node=2, --requeue)"
  t=$SECONDS
  until [ "$(field "$j" JobState)" = RUNNING ] && grep -qE "^\[job $j restart 0\] saved checkpoint .*step_00000010 " "$out" 2> /dev/null; do
    [ $((SECONDS - t)) -lt 120 ] || { show_log "$out"; fail "job $j saved no checkpoint at step 10 within 120 s"; }
    sleep 0.1
  done
  nodes=$(field "$j" NodeList)
  lost=$(scontrol show hostnames "$nodes" | sed -n 2p)   # not the batch host: its script reports
  note "job $j on $nodes saved step 10: losing $lost"
  "$LC" kill-node "$lost"
  KILLED+=("$lost"); t_kill=$SECONDS
  # the uninterrupted reference, meanwhile: 4 ranks on one node
  mpi 4 train "${TRAIN[@]}" --train.threads 1 --train.steps $S --train.save_params "$WORK/ref.mort" > "$WORK/ref.log" 2>&1 &
  BG+=($!)
  while :; do  # the job must leave the nodes within a bounded time (no hang), requeued
    st=$(field "$j" JobState)
    [ "$(field "$j" Restarts)" -ge 1 ] && [ "$st" = PENDING ] && break
    case "$st" in COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL|BOOT_FAIL) show_log "$out"; fail "job $j ended $st instead of being requeued" ;; esac
    [ $((SECONDS - t_kill)) -lt 90 ] || { show_log "$out"; fail "job $j still $st 90 s after $lost was lost (hang?)"; }
    sleep 0.5
  done
  dt=$((SECONDS - t_kill))
  note "job $j requeued ${dt}s after $lost was lost; $lost is $(sinfo -h -N -n "$lost" -o '%T (%E)')"
  # a requeued job waits cred_expire+1 s (BeginTime); 2 s is enough here
  scontrol update JobId="$j" StartTime=now+2 2> /dev/null || true
  st=$(wait_gone "$j" 240)
  show_log "$out"
  [ "$st" = COMPLETED ] || fail "job $j ended $st"
  nodes1=$(field "$j" NodeList)
  # the job ended naming the lost node: srun (node failure) and the next run's batch script
  grep -qE "^srun: error: Node failure on $lost$" "$out" || fail "no 'srun: error: Node failure on $lost'"
  grep -qF "[job $j restart 1] train.sbatch: the previous run (on $nodes) lost node(s) $lost (down*: Not responding): now 4 task(s) on $nodes1" "$out" ||
    fail "restart 1 does not name the lost node $lost"
  ! scontrol show hostnames "$nodes1" | grep -qx "$lost" || fail "restart 1 ran on the lost node $lost ($nodes1)"
  # resumed from the last complete checkpoint the first run saved, on 4 ranks again
  last=$(sed -nE "s/^\[job $j restart 0\] saved checkpoint .*step_0*([0-9]+) in .*/\1/p" "$out" | tail -1)
  grep -qF "[job $j restart 1] resumed from $ck/step_$(printf %08d "$last"): step $last, next sample $((last * 12)) (saved on 4 ranks, now 4)" "$out" ||
    fail "restart 1 did not resume from step $last, the last checkpoint the first run completed"
  grep -qE "^\[job $j restart 1\] nodes: node[0-9]+ \(ranks 0-1\), node[0-9]+ \(ranks 2-3\)$" "$out" || fail "restart 1 is not on 2 nodes"
  grep -qE "^\[job $j restart 1\] step +$S/" "$out" || fail "never reached step $S"
  wait "${BG[0]}" || { cat "$WORK/ref.log"; fail "reference run failed"; }
  cmp "$WORK/ref.mort" "$WORK/job.mort" || fail "final parameters differ from the uninterrupted 4-rank run"
  echo "ok: lost $lost at step >= 10: job $j requeued in ${dt}s naming it, resumed at step $last on $nodes1; final parameters == uninterrupted run (cmp)"
  ;;
# ---------------------------------------------------------------------------------------
link)
  need_idle 2
  # the tiny model only, few steps: the 135M figures in the README come from a full run
  BENCH_WORK=$WORK/bench BENCH_DATA=$MOR_DATA MORDIST=$MOR_BIN CONFIGS=tiny STEPS=4 WARMUP=1 LINK=10gbit \
    bash "$MOR_SRC/bench/fsdp_scaling" --nodes 2 > "$WORK/bench.log" 2>&1 || { cat "$WORK/bench.log"; fail "bench/fsdp_scaling --nodes 2 failed"; }
  cat "$WORK/bench.log"
  grep -qE '^link: 10gbit token bucket' "$WORK/bench.log" || fail "the link was not shaped to 10gbit"
  grep -qE '^tiny +2 x 1 +10gbit +[0-9.]+ +[0-9.]+ ' "$WORK/bench.log" || fail "no step-time row for tiny over the link"
  grep -qE '^  allgather/shared_block +[0-9]+ ' "$WORK/bench.log" || fail "no bytes-per-collective row"
  grep -qE 'all-gather hidden under compute: +-?[0-9.]+%' "$WORK/bench.log" || fail "no hidden all-gather share"
  [ "$("$LC" status --nodes 3 > /dev/null; cat "${MOR_SLURM_NODES_DIR:-/tmp/mor-slurm-nodes}/link")" = unshaped ] ||
    fail "the bench left the link shaped"
  echo "ok: bench/fsdp_scaling --nodes 2 reported step time, bytes per collective and the hidden all-gather share"
  ;;
*) fail "unknown case '$case_name'" ;;
esac
note "$case_name: passed"
