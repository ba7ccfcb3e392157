#!/usr/bin/env bash
# `mor-dist eval --router-stats` after 40 training steps of each router:
#   expert  depth shares are exactly what the capacities imply (1 - c_1, c_1 - c_2, c_2 of a window
#           with k_r = floor(c_r T)), a sampling accuracy per recursion in [0, 100] whose pooled value
#           is the candidate-weighted mean of the per-recursion ones, a dead-token ratio over the T
#           window positions of at most T - k_3 of them;
#   token   depth shares sum to 100 % and the MaxVio printed is max share x N_r - 1;
#   none    every token at depth N_r; no router lines beyond the depth line.
source "$(dirname "$0")/common.sh"
for cfg in tiny_mor tiny_mor_token tiny_vanilla; do
  "$MOR_BIN" train --config "$MOR_SRC/configs/$cfg.ini" --data.train "$MOR_DATA/edu_fineweb_train_*.bin" \
    --data.val "" --train.steps 40 --train.peak_gflops 100 --train.save_params "$WORK/$cfg.mort" > /dev/null
  "$MOR_BIN" eval --config "$MOR_SRC/configs/$cfg.ini" --train.init_params "$WORK/$cfg.mort" \
    --data.val "$MOR_DATA/edu_fineweb_val_*.bin" --router-stats > "$WORK/$cfg.log"
  cat "$WORK/$cfg.log" | grep -E '^(val_loss|router)'
done
/usr/bin/python3 - "$WORK" <<'PY'
import math, re, sys
work = sys.argv[1]
def depths(log):
    m = re.search(r"tokens by recursions received((?: \d+:[0-9.]+%)+)", log)
    assert m, log
    return [float(x.split(":")[1].rstrip("%")) for x in m.group(1).split()]
e = open(f"{work}/tiny_mor.log").read()
d = depths(e)
T, caps = 64, [1.0, 2 / 3, 1 / 3]
k = [max(1, math.floor(c * T + 1e-6)) for c in caps]
want = [0.0, 100 * (k[0] - k[1]) / T, 100 * (k[1] - k[2]) / T, 100 * k[2] / T]
assert all(abs(a - b) < 0.006 for a, b in zip(d, want)), (d, want)
m = re.search(r"sampling accuracy ([0-9.]+)% .* over (\d+) candidates;((?: r\d+ [0-9.]+%)+)\)", e)
assert m, e
pooled, ncand = float(m.group(1)), int(m.group(2))
per = [float(x.rstrip("%")) for x in m.group(3).split()[1::2]]
assert all(0 <= p <= 100 for p in per + [pooled]), per
cands = [T, k[0], k[1]]
mean = sum(p * c for p, c in zip(per, cands)) / sum(cands)
assert abs(mean - pooled) < 0.01, (mean, pooled)
assert ncand % sum(cands) == 0, ncand
m = re.search(r"dead-token ratio ([0-9.]+)% \((\d+) of (\d+) window positions never selected by recursion 3's top-k\)", e)
assert m, e
ratio, dead, npos = float(m.group(1)), int(m.group(2)), int(m.group(3))
# Every window selects k_3 distinct positions at the last recursion: at most T - k_3 stay dead.
assert npos == T and 0 <= dead <= T - k[2] and abs(ratio - 100 * dead / T) < 0.006, (ratio, dead, npos)
print(f"expert: depth shares {d} as the capacities imply; sampling accuracy {pooled}% = weighted mean of {per}; "
      f"dead-token ratio {ratio}%")
t = open(f"{work}/tiny_mor_token.log").read()
d = depths(t)
assert abs(sum(d) - 100) < 0.02, d
mv = float(re.search(r"MaxVio ([0-9.]+)", t).group(1))
assert abs(mv - (max(d[1:]) / 100 * 3 - 1)) < 1e-3, (mv, d)
print(f"token: depth shares {d}, MaxVio {mv}")
v = open(f"{work}/tiny_vanilla.log").read()
assert depths(v) == [0.0, 100.0] and "sampling" not in v and "MaxVio" not in v, v
print("none: every token at depth N_r")
PY
