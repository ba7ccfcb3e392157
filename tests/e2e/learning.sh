#!/usr/bin/env bash
# A tiny MoR model learns real English: after 300 steps on the fortunes corpus
# (byte-level BPE, vocab 1024) its validation loss is at least 1 nat below the
# unigram cross-entropy of the validation text (what a model that ignores
# context can reach at best).
source "$(dirname "$0")/common.sh"
config=${1:-tiny_mor.ini}
bound=$(/usr/bin/python3 -c "import json;print(json.load(open('$MOR_DATA/corpus.json'))['val_unigram_cross_entropy'] - 1.0)")
"$MOR_BIN" train --config "$MOR_SRC/configs/$config" \
  --data.train "$MOR_DATA/edu_fineweb_train_*.bin" --data.val "$MOR_DATA/edu_fineweb_val_*.bin" \
  --train.peak_gflops 100 --train.log_every 50 --train.eval_every 300 | tee "$WORK/log"
val=$(grep '^eval' "$WORK/log" | tail -1 | sed -E 's/.*val_loss ([0-9.]+).*/\1/')
/usr/bin/python3 -c "import sys; v,b=float('$val'),float('$bound'); print(f'val_loss {v:.4f} vs bound {b:.4f}'); sys.exit(0 if v < b else 1)" \
  || fail "validation loss $val is not below $bound"
