#!/usr/bin/env bash
# `mor-dist prepare` on the command line: bad options exit 2 naming the option,
# runtime errors exit 1 naming the file (and line with --strict), the bad-line
# report, manifest checksums (sha256sum), 1 vs 2 threads byte-identical, and
# the shards train. Needs MOR_BIN, MOR_DATA (make_corpus.py's corpus), MOR_SRC.
source "$MOR_SRC/tests/e2e/common.sh"
TOK="$MOR_DATA/tokenizer.json"
expect_rc() {  # expect_rc RC "text in output" args...
  local want_rc=$1 want=$2; shift 2
  set +e
  out=$("$MOR_BIN" "$@" 2>&1); rc=$?
  set -e
  [ "$rc" -eq "$want_rc" ] || fail "exit $rc (want $want_rc) for: $* -> $out"
  grep -qF -- "$want" <<<"$out" || fail "output lacks '$want' for: $* -> $out"
  echo "ok ($rc): $* -> $(tail -n 1 <<<"$out")"
}

/usr/bin/python3 "$MOR_SRC/scripts/corpus_jsonl.py" --split val --out "$WORK/docs.jsonl" >/dev/null
{
  head -n 100 "$WORK/docs.jsonl"
  echo '{"text": "unterminated'
  echo '{"title": "no text"}'
  printf '{"text": "bad \xff byte"}\n'
  tail -n +101 "$WORK/docs.jsonl"
} > "$WORK/mixed.jsonl"
gzip -c "$WORK/docs.jsonl" > "$WORK/docs.jsonl.gz"
base=(prepare --tokenizer "$TOK" --input "$WORK/docs.jsonl")
sizes=(--shard-tokens 20000 --val-tokens 5000)

expect_rc 0 "--shard-tokens" prepare --help
expect_rc 2 "--tokenizer: is required" prepare --input "$WORK/docs.jsonl" --out "$WORK/o" --shard-tokens 10 --val-tokens 0
expect_rc 2 "--input: is required" prepare --tokenizer "$TOK" --out "$WORK/o" --shard-tokens 10 --val-tokens 0
expect_rc 2 "--val-tokens: is required" prepare --tokenizer "$TOK" --input x --out "$WORK/o" --shard-tokens 10
expect_rc 2 "--shard-tokens: 0 is not in [1, 2147483647]" "${base[@]}" --out "$WORK/o" --val-tokens 0 --shard-tokens 0
expect_rc 2 "--shard-tokens: 3000000000 is not in" "${base[@]}" --out "$WORK/o" --val-tokens 0 --shard-tokens 3000000000
expect_rc 2 "shard-tokens" "${base[@]}" --out "$WORK/o" --val-tokens 0 --shard-tokens abc
expect_rc 2 "--val-tokens: -5 is not in [0, 2147483647]" "${base[@]}" --out "$WORK/o" --shard-tokens 10 --val-tokens -5
expect_rc 2 "--threads: -1 is not in [0, 1024]" "${base[@]}" "${sizes[@]}" --out "$WORK/o" --threads -1
expect_rc 2 "--batch-bytes: 0 is not in" "${base[@]}" "${sizes[@]}" --out "$WORK/o" --batch-bytes 0
expect_rc 2 "unrecognised option '--shard-token'" "${base[@]}" "${sizes[@]}" --out "$WORK/o" --shard-token 5
expect_rc 1 "$WORK/none.json: cannot open" prepare --tokenizer "$WORK/none.json" --input "$WORK/docs.jsonl" --out "$WORK/o" --shard-tokens 10 --val-tokens 0
expect_rc 1 "--input '$WORK/nothing*.jsonl': no file matches" prepare --tokenizer "$TOK" --input "$WORK/nothing*.jsonl" --out "$WORK/o" --shard-tokens 10 --val-tokens 0
expect_rc 1 "$WORK/mixed.jsonl:101: malformed JSON: unterminated string (--strict)" \
  prepare --tokenizer "$TOK" --input "$WORK/mixed.jsonl" --out "$WORK/strict" --shard-tokens 20000 --val-tokens 0 --strict --quiet
expect_rc 0 "skipped 3 bad lines: 1 malformed JSON, 1 missing text, 1 invalid UTF-8" \
  prepare --tokenizer "$TOK" --input "$WORK/mixed.jsonl" --out "$WORK/mixed" --shard-tokens 20000 --val-tokens 0 --quiet
grep -qF "$WORK/mixed.jsonl:103: invalid UTF-8: byte 0xFF" <<<"$out" || fail "report lacks the invalid UTF-8 line: $out"

# 1 and 2 threads (small work items so that both threads work): identical bytes.
expect_rc 0 "wrote 1 val + " "${base[@]}" "${sizes[@]}" --out "$WORK/t1" --threads 1 --batch-bytes 300
expect_rc 0 "no bad lines" "${base[@]}" "${sizes[@]}" --out "$WORK/t2" --threads 2 --batch-bytes 300
diff -r "$WORK/t1" "$WORK/t2" >/dev/null || fail "1 and 2 threads give different output"
expect_rc 0 "no bad lines" prepare --tokenizer "$TOK" --input "$WORK/docs.jsonl.gz" --out "$WORK/gz" \
  --shard-tokens 20000 --val-tokens 5000 --quiet
for f in "$WORK"/t1/*.bin; do cmp -s "$f" "$WORK/gz/$(basename "$f")" || fail "gzip input gives a different $(basename "$f")"; done
expect_rc 1 "already holds" "${base[@]}" "${sizes[@]}" --out "$WORK/t1"
expect_rc 0 "wrote" "${base[@]}" "${sizes[@]}" --out "$WORK/t1" --overwrite --quiet

# The manifest's checksums are what sha256sum prints.
/usr/bin/python3 - "$WORK/t1" <<'EOF'
import json, sys, hashlib, os
d = sys.argv[1]
m = json.load(open(os.path.join(d, "manifest.json")))
assert m["shards"][0]["file"] == "edu_fineweb_val_000000.bin", m["shards"][0]
assert len(m["shards"]) >= 3, m["shards"]
for s in m["shards"]:
    h = hashlib.sha256(open(os.path.join(d, s["file"]), "rb").read()).hexdigest()
    assert h == s["sha256"], (s, h)
print("manifest ok:", len(m["shards"]), "shards,", m["documents"], "documents,", m["tokens"], "tokens")
EOF
(cd "$WORK/t1" && /usr/bin/python3 -c '
import json; m = json.load(open("manifest.json"))
print("\n".join(s["sha256"] + "  " + s["file"] for s in m["shards"]))' | sha256sum --check --quiet) \
  || fail "sha256sum --check failed"

# The shards train (vocab 1024 = configs/tiny_mor.ini).
OMP_NUM_THREADS=1 "$MOR_BIN" train --config "$MOR_SRC/configs/tiny_mor.ini" --train.steps 2 --train.log_every 1 \
  --train.peak_gflops 100 --data.train "$WORK/t1/edu_fineweb_train_*.bin" --data.val "$WORK/t1/edu_fineweb_val_*.bin" \
  --train.eval_samples 4 > "$WORK/train.log" 2>&1 || { cat "$WORK/train.log"; fail "training on prepared shards failed"; }
grep -q "step      2" "$WORK/train.log" || { cat "$WORK/train.log"; fail "no step 2 line"; }
echo "prepare_cli: all checks passed"
