# bench/fsdp_scaling --nodes N: FSDP across simulated nodes over a shaped link (sourced by
# bench/fsdp_scaling; the header there says what it measures and the knobs).
nodes_bench() {
  local n=$1
  case "$n" in ''|*[!0-9]*) echo "fsdp_scaling: --nodes wants a number >= 2" >&2; exit 2 ;; esac
  [ "$n" -ge 2 ] || { echo "fsdp_scaling: --nodes wants a number >= 2" >&2; exit 2; }
  local LC=slurm/local-cluster.sh PY=/usr/bin/python3
  local LINK=${LINK:-10gbit} CONFIGS=${CONFIGS:-tiny 135m} WARMUP=${WARMUP:-1} STEPS=${STEPS:-4}
  local STEPS_135M=${STEPS_135M:-3} SEQ_135M=${SEQ_135M:-256}
  local MORDIST=${MORDIST:-build/mor-dist}
  local WORK=${BENCH_WORK:-$(mktemp -d /tmp/mor-fsdp-nodes.XXXXXX)}
  mkdir -p "$WORK"
  local DATA=${BENCH_DATA:-$WORK/corpus}
  [ -x "$MORDIST" ] || { echo "fsdp_scaling: $MORDIST not built (cmake --build build --target mor-dist)" >&2; exit 1; }
  cp "$MORDIST" "$WORK/mor-dist"   # a rebuild during the benchmark cannot change the binary mid-run
  if ! compgen -G "$DATA/edu_fineweb_train_*.bin" > /dev/null; then "$PY" scripts/make_corpus.py --out "$DATA" > /dev/null; fi

  # ---- the cluster: a running one with >= n nodes, else our own (stopped at the end)
  local dir=${MOR_SLURM_NODES_DIR:-/tmp/mor-slurm-nodes} started=0 have=0
  export SLURM_CONF=$dir/slurm.conf
  if "$LC" status --nodes "$n" > /dev/null 2>&1; then have=$(cat "$dir/nodes"); fi
  if [ "$have" -lt "$n" ]; then
    [ "$have" -eq 0 ] || { echo "fsdp_scaling: a $have-node cluster runs under $dir; --nodes $n needs $n" >&2; exit 1; }
    "$LC" up --nodes "$n" || { echo "fsdp_scaling: could not start a $n-node cluster (exit $?)" >&2; exit 1; }
    started=1
  fi
  local prev_link; prev_link=$(cat "$dir/link" 2> /dev/null || echo unshaped)
  # shellcheck disable=SC2064
  trap "case '$prev_link' in unshaped*) '$LC' link off ;; *) '$LC' link '$prev_link' ;; esac > /dev/null 2>&1 || true
        [ $started = 0 ] || '$LC' down --nodes $n > /dev/null 2>&1 || true" EXIT
  local shaped=1
  "$LC" link "$LINK" > /dev/null || shaped=0
  local link_desc
  if [ $shaped = 1 ]; then link_desc="$LINK token bucket (tc tbf) on both ends of every node's veth"
  else link_desc="unshaped: $(cat "$dir/link") (the kernel refused tc tbf)"; LINK=unshaped; fi
  if [ "$(id -u)" = 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
  export OMPI_MCA_mpi_yield_when_idle=${OMPI_MCA_mpi_yield_when_idle:-1}
  local nodes; nodes=$(sinfo -h -N -t idle -o %N | sort -u | head -n "$n" | paste -sd, -)
  [ "$(tr ',' '\n' <<< "$nodes" | grep -c .)" -eq "$n" ] || { sinfo -N; echo "fsdp_scaling: fewer than $n idle nodes" >&2; exit 1; }

  echo "== fsdp_scaling --nodes $n $(date -u '+%Y-%m-%d %H:%M:%S UTC') | $(hostname) | work dir $WORK"
  echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //') | $(env -u OMP_NUM_THREADS nproc) cores | load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "nodes: $nodes (network namespaces on one machine, SLURM cluster under $dir)"
  echo "link: $link_desc"
  echo "MPI: $(mpirun --version 2> /dev/null | head -n1): TCP between nodes, shared memory within one"

  local cfg config extra steps
  for cfg in $CONFIGS; do
    case "$cfg" in
      tiny) config=configs/tiny_mor.ini extra=(--train.global_batch $((4 * n))) steps=$STEPS ;;
      135m) config=configs/smollm135m_mor3.ini steps=$STEPS_135M
            extra=(--model.seq_len "$SEQ_135M" --train.global_batch "$n" --train.micro_batch 1) ;;
      *) echo "fsdp_scaling: unknown config '$cfg' (tiny, 135m)" >&2; exit 2 ;;
    esac
    echo
    echo "-- $cfg: $config ${extra[*]} | $n ranks x 1 thread | $WARMUP warm-up + $steps timed steps per run"
    local where ov
    for where in link shm; do
      for ov in true false; do
        local name="${cfg}_${where}_overlap_$ov" launch
        if [ $where = link ]; then launch=(srun -N "$n" -n "$n" --ntasks-per-node=1 -w "$nodes")
        else launch=(srun -N 1 -n "$n" --overcommit -w "${nodes%%,*}"); fi
        local t0=$SECONDS
        "${launch[@]}" "$WORK/mor-dist" train --config "$config" "${extra[@]}" --train.threads 1 --train.log_every 1 \
          --train.peak_gflops 100 --data.train "$DATA/edu_fineweb_train_*.bin" --data.val '' \
          --train.steps $((WARMUP + steps)) --dist.overlap $ov --train.metrics "$WORK/$name.jsonl" > "$WORK/$name.log" 2>&1 ||
          { cat "$WORK/$name.log"; echo "fsdp_scaling: run $name failed" >&2; exit 1; }
        printf '   %-28s %4ds | %s\n' "$name" $((SECONDS - t0)) "$(sed -nE 's/^\[job [0-9]+ restart 0\] (nodes: .*)/\1/p' "$WORK/$name.log")"
      done
    done
  done
  echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo
  "$PY" - "$WORK" "$WARMUP" "$LINK" "$n" $CONFIGS <<'EOF'
import json, statistics, sys
work, warmup, link, n, cfgs = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5:]
med = statistics.median

def run(name):
    recs = [json.loads(l) for l in open(f"{work}/{name}.jsonl") if '"loss"' in l]
    a, b = recs[warmup - 1], recs[-1]       # cumulative counters after the warm-up and after the last step
    k = b["step"] - a["step"]
    d = lambda key, t: (b[key].get(t, 0) - a[key].get(t, 0)) / k
    tags = sorted(set(b["comm"]))
    return dict(step=med(r["step_time_s"] for r in recs[warmup:]),
                bytes={t: d("comm", t) for t in tags},
                wait={t: d("comm_wait", t) for t in set(b["comm_wait"])},
                waitall=sum(r["comm_wait_s"] for r in recs[warmup:]) / k)

fam = lambda m, f: sum(v for t, v in m.items() if t.startswith(f + "/"))
print(f"== summary: {n} ranks x 1 thread; 'link' = {n} nodes over {link}, 'shm' = {n} ranks on one node")
print("   step s: median over the timed steps; AG/RS wait: seconds per step rank 0 was blocked in all-gathers /")
print("   reduce-scatters; hidden = 1 - AG wait with overlap / AG wait without (the share of the all-gather time")
print("   that prefetching hides under compute); MB/step: bytes rank 0 sends per step (ring volume)")
hdr = (f"{'config':<7}{'ranks':>8}{'link':>10}{'step s':>9}{'(no ovl)':>10}{'AG wait':>9}{'(no ovl)':>10}"
       f"{'RS wait':>9}{'MB/step':>9}{'hidden':>8}")
print(hdr)
print("-" * len(hdr))
res = {}
for c in cfgs:
    for where in ("link", "shm"):
        on, off = run(f"{c}_{where}_overlap_true"), run(f"{c}_{where}_overlap_false")
        ag_on, ag_off = fam(on["wait"], "allgather"), fam(off["wait"], "allgather")
        hidden = 1 - ag_on / ag_off if ag_off > 0 else float("nan")
        res[(c, where)] = (on, off, hidden)
        ranks = f"{n} x 1" if where == "link" else f"1 x {n}"
        print(f"{c:<7}{ranks:>8}{(link if where == 'link' else 'shm'):>10}{on['step']:>9.3f}{off['step']:>10.3f}"
              f"{ag_on:>9.3f}{ag_off:>10.3f}{fam(on['wait'], 'reducescatter'):>9.3f}"
              f"{sum(on['bytes'].values()) / 1e6:>9.2f}{100 * hidden:>7.1f}%")
for c in cfgs:
    on, off, hidden = res[(c, "link")]
    print()
    print(f"-- {c}: bytes per collective over the link (rank 0 sends per call; an all-gather and a reduce-scatter")
    print(f"   of one unit move the same bytes, so calls/step = all-gather bytes / reduce-scatter bytes per step)")
    print(f"  {'collective':<36}{'bytes/call':>12}{'calls/step':>11}{'MB/step':>9}{'wait s/step':>12}{'(no ovl)':>10}")
    for t, b in sorted(on["bytes"].items()):
        kind, unit = t.split("/", 1)
        if kind == "allgather":
            per = on["bytes"].get("reducescatter/" + unit, 0) or b
        else:
            per = b
        calls = b / per if per else 0
        print(f"  {t:<36}{per:>12.0f}{calls:>11.2f}{b / 1e6:>9.2f}{on['wait'].get(t, 0):>12.4f}{off['wait'].get(t, 0):>10.4f}")
    ag_off = fam(off["wait"], "allgather")
    rate = fam(off["bytes"], "allgather") / ag_off / 1e9 if ag_off > 0 else float("nan")
    print(f"{c}: all-gather hidden under compute: {100 * hidden:.1f}% over {link} "
          f"(AG wait {fam(on['wait'], 'allgather'):.3f} s/step with overlap, {ag_off:.3f} without; "
          f"step {on['step']:.3f} s vs {off['step']:.3f} s; all-gather bytes / blocked time without overlap {rate:.2f} GB/s)")
EOF
}
