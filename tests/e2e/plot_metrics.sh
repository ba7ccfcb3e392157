#!/usr/bin/env bash
# scripts/plot_metrics.py on the metrics of a short real training run, overlaid with a second
# file holding null values, missing fields and a line that is not JSON: every PNG is written,
# decodes, and has a plot in it (not a blank canvas). Exit 77 (ctest: Skipped) without matplotlib.
source "$(dirname "$0")/common.sh"
PY=/usr/bin/python3
if ! $PY -c 'import matplotlib' 2> /dev/null; then
  echo "SKIP: matplotlib is not installed for $PY (Debian: apt-get install python3-matplotlib)"
  exit 77
fi
tiny_train --train.steps 30 --train.log_every 5 --train.eval_every 10 --train.eval_samples 32 \
  --train.metrics "$WORK/tiny_mor.jsonl" > "$WORK/run.log" 2>&1 || { cat "$WORK/run.log"; fail "training run failed"; }
grep -q '"depth_tokens"' "$WORK/tiny_mor.jsonl" || fail "the run wrote no depth_tokens"
grep -q '"val_loss"' "$WORK/tiny_mor.jsonl" || fail "the run wrote no val_loss"
# The second "run": the same records with nulls (as for a non-finite value), fields dropped,
# a resumed step logged twice, and junk lines.
$PY - "$WORK/tiny_mor.jsonl" "$WORK/rough.jsonl" <<'PYEOF'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
with open(sys.argv[2], "w") as out:
    for i, r in enumerate(recs):
        if "loss" in r:
            r["loss"] *= 1.05
            r["grad_norm"] *= 1.3
            r["tokens_per_s"] *= 0.7
            if i % 3 == 0: r["grad_norm"] = None
            if i % 4 == 1: del r["tokens_per_s"]
            if i % 5 == 2: r["depth_tokens"] = None
            r["elapsed_s"] = i
        else:
            r["val_loss"] = None if i % 2 else r["val_loss"] * 1.05
        out.write(json.dumps(r) + "\n")
        if i == 3:
            out.write("not json at all\n\n[1, 2]\n")
            out.write(json.dumps(r) + "\n")   # the same step again (a resumed run)
PYEOF
$PY "$MOR_SRC/scripts/plot_metrics.py" "$WORK/tiny_mor.jsonl" "$WORK/rough.jsonl" --out "$WORK/plots" > "$WORK/plot.log" 2>&1 ||
  { cat "$WORK/plot.log"; fail "plot_metrics.py failed"; }
cat "$WORK/plot.log"
grep -q "rough.jsonl:5: not JSON, skipped" "$WORK/plot.log" || fail "the junk line was not reported"
$PY - "$WORK/plots" <<'PYEOF' || fail "a PNG is missing or blank"
import os, sys
import matplotlib.image as mpimg
import numpy as np
for stem in ["loss", "lr", "grad_norm", "tokens_per_s", "depth", "overview"]:
    path = os.path.join(sys.argv[1], stem + ".png")
    assert os.path.getsize(path) > 10_000, (path, os.path.getsize(path))
    img = mpimg.imread(path)[..., :3]
    h, w = img.shape[:2]
    assert h >= 300 and w >= 600, (path, img.shape)
    inked = np.mean(np.any(img < 0.9, axis=2))        # share of pixels that are not (near) white
    # pixels in the colours of run 1 (matplotlib's C0, blue) and run 2 (C1, orange): both drawn
    near = lambda rgb: int(np.sum(np.all(np.abs(img - np.array(rgb) / 255) < 0.08, axis=2)))
    runs = (near((31, 119, 180)), near((255, 127, 14)))
    if stem == "depth":  # one stacked panel per run: mostly filled
        assert inked > 0.3, (path, inked)
    elif stem == "lr":  # the same schedule in both runs: run 2's line covers run 1's
        assert sum(runs) > 150, (path, "pixels of run 1 / run 2", runs)
    else:
        assert min(runs) > 150, (path, "pixels of run 1 / run 2", runs)
    print(f"ok: {stem}.png {w}x{h}, {os.path.getsize(path)} bytes, {100 * inked:.1f}% inked, run pixels {runs}")
PYEOF
# Nothing to plot: status 1; a missing file: status 2.
: > "$WORK/empty.jsonl"
set +e
$PY "$MOR_SRC/scripts/plot_metrics.py" "$WORK/empty.jsonl" --out "$WORK/p2" > /dev/null 2>&1; rc1=$?
$PY "$MOR_SRC/scripts/plot_metrics.py" "$WORK/none.jsonl" --out "$WORK/p3" > /dev/null 2>&1; rc2=$?
set -e
[ "$rc1" -eq 1 ] || fail "an empty metrics file: exit $rc1, want 1"
[ "$rc2" -eq 2 ] || fail "a missing metrics file: exit $rc2, want 2"
echo "plot_metrics: all checks passed"
