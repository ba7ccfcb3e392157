#!/usr/bin/env bash
# The default thread count (launcher/threads.h) as the run's batch line states it: a single
# process takes the CPUs of its affinity mask, `taskset` narrows them, OMP_NUM_THREADS and
# --train.threads win, and under `mpirun --oversubscribe -np 4` (the README's command) each rank
# takes its share: 1 thread per rank on a 2-core machine, not 2.
source "$(dirname "$0")/common.sh"
unset OMP_NUM_THREADS   # ctest sets 1 for the other tests; the default is what is tested here
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_mpi_yield_when_idle=1
run1() {  # run1 [launcher...] -- [options...]: one training step; prints the batch line
  local pre=()
  while [ "$1" != -- ]; do pre+=("$1"); shift; done
  shift
  local out
  out=$("${pre[@]}" "$MOR_BIN" train --config "$MOR_SRC/configs/tiny_mor.ini" \
        --data.train "$MOR_DATA/edu_fineweb_train_*.bin" --data.val "" --train.peak_gflops 100 --train.steps 1 "$@" 2>&1) ||
    fail "run failed: ${pre[*]} $*: $out"
  grep -E 'batch: global' <<<"$out" || fail "no batch line: $out"
}
expect() {  # expect LINE REGEX WHAT
  grep -qE -- "$2" <<<"$1" || fail "$3: want /$2/ in: $1"
  echo "ok: $3: ${1#*| threads }"
}
cpus=$(env -u OMP_THREAD_LIMIT nproc)   # the affinity mask of this shell, which the runs inherit (OMP_NUM_THREADS is unset above)
s=s; [ "$cpus" -eq 1 ] && s=
expect "$(run1 --)" "\| threads $cpus \($cpus CPU$s in affinity mask / 1 rank on this node → $cpus\)" "one process"
expect "$(run1 taskset -c 0 --)" "\| threads 1 \(1 CPU in affinity mask / 1 rank on this node → 1\)" "taskset -c 0"
expect "$(run1 env OMP_NUM_THREADS=3 --)" "\| threads 3 \(OMP_NUM_THREADS=3\)" "OMP_NUM_THREADS=3"
expect "$(run1 -- --train.threads 2)" "\| threads 2 \(train.threads = 2\)" "--train.threads 2"
# The README's multi-rank command. With the 4 ranks unbound, 2 CPUs / 4 ranks -> 1 thread each; a
# launcher that binds ranks to cores gives each 1 CPU shared by 2 ranks -> 1 as well.
line=$(run1 mpirun --oversubscribe -np 4 --)
want=$((cpus / 4)); [ "$want" -ge 1 ] || want=1
if [ "$cpus" -le 4 ]; then
  expect "$line" "\| threads 1 \(.*4 ranks on this node \(OMPI_COMM_WORLD_LOCAL_SIZE\).* → 1\)" "mpirun --oversubscribe -np 4 on $cpus CPUs"
else  # a bigger machine: mpirun may bind the ranks; no rank may take more than its share
  t=$(sed -nE 's/.*\| threads ([0-9]+) \(.*/\1/p' <<<"$line")
  [ -n "$t" ] && [ $((t * 4)) -le "$cpus" ] || fail "mpirun -np 4 on $cpus CPUs: $line"
  expect "$line" "4 ranks on this node" "mpirun --oversubscribe -np 4 on $cpus CPUs"
fi
echo "threads: all checks passed"
