#!/usr/bin/env bash
# Sharded training under real `mpirun --oversubscribe -np N`:
#  1. per-step losses over 20 steps and the final parameters equal the
#     single-process run within 1e-5 relative, for N = 2, 3, 4 (router given as $1);
#  2. (router expert only) byte accounting: the shared block is all-gathered exactly
#     twice per step (forward + backward) whatever N_r is, N_r times that with
#     --dist.regather_per_recursion, once with --dist.keep_shared_gathered;
#  3. resident parameter + gradient + AdamW bytes per rank ~ 1/N of one process.
source "$(dirname "$0")/common.sh"
router=${1:-expert}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_mpi_yield_when_idle=1 OMP_NUM_THREADS=1
mpi() { local np=$1; shift; mpirun --oversubscribe --bind-to none -np "$np" "$MOR_BIN" "$@"; }
common=(train --config "$MOR_SRC/configs/tiny_mor.ini" --mor.router "$router" --train.global_batch 12
        --train.log_every 1 --train.peak_gflops 100 --train.threads 1
        --data.train "$MOR_DATA/edu_fineweb_train_*.bin" --data.val "")
[ "$router" = none ] && common+=(--mor.n_recursions 1)
"$MOR_BIN" "${common[@]}" --train.steps 20 --train.metrics "$WORK/w1.jsonl" --train.save_params "$WORK/w1.mort" > "$WORK/w1.log"
for np in 2 3 4; do
  mpi "$np" "${common[@]}" --train.steps 20 --train.metrics "$WORK/w$np.jsonl" --train.save_params "$WORK/w$np.mort" > "$WORK/w$np.log"
done
/usr/bin/python3 - "$WORK" "$MOR_SRC" <<'PY'
import json, sys, numpy as np
work, src = sys.argv[1], sys.argv[2]
sys.path.insert(0, src + "/tests/reference")
from mort import read_mort
def losses(np_):
    return [json.loads(l)["loss"] for l in open(f"{work}/w{np_}.jsonl") if '"loss"' in l]
base = losses(1); p1 = read_mort(f"{work}/w1.mort")
assert len(base) == 20, base
for n in (2, 3, 4):
    l = losses(n)
    assert len(l) == 20, (n, len(l))
    worst = max(abs(a - b) / abs(b) for a, b in zip(l, base))
    assert worst <= 1e-5, f"W={n}: loss differs by {worst:.2e} relative"
    pn = read_mort(f"{work}/w{n}.mort")
    assert list(pn) == list(p1)
    # per tensor, relative in the L2 norm (Adam turns last-bit gradient differences
    # into +-lr steps on elements whose gradient is ~0, so an elementwise max is noise)
    rel = {k: float(np.linalg.norm(pn[k] - p1[k]) / max(np.linalg.norm(p1[k]), 1e-30)) for k in p1}
    pworst = max(rel.values())
    print("  worst tensor:", max(rel, key=rel.get), f"{pworst:.2e}")
    assert pworst <= 1e-5, f"W={n}: final parameters differ by {pworst:.2e} relative"
    print(f"W={n}: 20 losses within {worst:.1e}, final parameters within {pworst:.1e} of W=1")
PY
resident() { sed -nE 's/^resident: params\+grads\+adam ([0-9]+) bytes.*/\1/p' "$1"; }
r1=$(resident "$WORK/w1.log"); r4=$(resident "$WORK/w4.log")
/usr/bin/python3 -c "import sys; r1,r4=$r1,$r4; print(f'resident per rank: W=1 {r1} B, W=4 {r4} B, ratio {r4/r1:.4f}'); sys.exit(0 if r1/4 <= r4 <= r1/4*1.02 else 1)" \
  || fail "resident bytes per rank at W=4 are not ~1/4 of W=1"

if [ "$router" = expert ]; then
  # Bytes: shared unit = B=2 layers + N_r routers; padded row blocks per tensor.
  for nr in 2 3; do
    layers=$(( 2 + 2 * nr ))
    for mode in default regather keep; do
      extra=(); [ $mode = regather ] && extra=(--dist.regather_per_recursion true); [ $mode = keep ] && extra=(--dist.keep_shared_gathered true)
      mpi 2 "${common[@]}" --train.steps 3 --mor.n_recursions $nr --model.n_layers $layers "${extra[@]}" > "$WORK/b.log"
      got=$(grep -oE 'allgather/shared_block=[0-9]+' "$WORK/b.log" | cut -d= -f2)
      /usr/bin/python3 - "$got" "$nr" "$mode" <<'PY'
import sys, math
got, nr, mode = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
W, D, F, H, KV, hd, steps = 2, 128, 352, 4, 2, 32, 3
rows_cols = [(D, 1), (H*hd, D), (KV*hd, D), (KV*hd, D), (D, H*hd), (D, 1), (F, D), (F, D), (D, F)] * 2 + [(1, D)] * nr
unit = sum(math.ceil(r / W) * W * c for r, c in rows_cols) * 4      # bytes, as sharded
per_gather = unit * (W - 1) // W
gathers = {"default": 2, "regather": 2 * nr, "keep": 1}[mode]
want = steps * gathers * per_gather
print(f"N_r={nr} {mode}: shared-block all-gather bytes {got} (expected {steps} steps x {gathers} x {per_gather})")
sys.exit(0 if got == want else 1)
PY
    done
  done
fi
grep -q "error" "$WORK/w4.log" && fail "errors in the W=4 log"
[ "$(grep -c '^step' "$WORK/w4.log")" -eq 20 ] || fail "expected exactly 20 step lines from rank 0 only"
echo "dist($router): all checks passed"
