#!/usr/bin/env bash
# `mor-dist generate` on tiny models trained briefly on the fortunes corpus:
#   - an expert-choice checkpoint written on 2 ranks (two shard files) and a token-choice .mort
#     file with its --config;
#   - a single prompt streams its text to stdout; --ids adds the ids, which an independent
#     byte-level BPE decoder written here (tokenizer.json + GPT-2's byte map) turns into exactly
#     those bytes; --out gets the same text as a JSON line;
#   - --prompts JSONL (text and id prompts, a blank line): --batch 1 and --batch 4 write the
#     same file, sampled and greedy; every line's fields are consistent (ids decode to the text,
#     prompt ids to the prompt, stop reasons, recursions per token, KV-cache bytes at most
#     a vanilla cache's plus the positions); another seed gives other text;
#   - the expert-choice threshold at its ends: 0 sends every token through all 3 recursions
#     (cache = vanilla + positions, byte for byte), 1 through recursion 0 only;
#   - the text streams (on stdout while later tokens are being generated); SIGINT between tokens
#     ends it with status 130;
#   - bad input exits with status 2 and names the problem.
source "$(dirname "$0")/common.sh"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_mpi_yield_when_idle=1 OMP_NUM_THREADS=1
TOK="$MOR_DATA/tokenizer.json"
mpirun --oversubscribe --bind-to none -np 2 "$MOR_BIN" train --config "$MOR_SRC/configs/tiny_mor.ini" \
  --data.train "$MOR_DATA/edu_fineweb_train_*.bin" --data.val "" --train.steps 60 --train.peak_gflops 100 \
  --train.threads 1 --ckpt.dir "$WORK/ck_expert" > /dev/null
"$MOR_BIN" train --config "$MOR_SRC/configs/tiny_mor_token.ini" --data.train "$MOR_DATA/edu_fineweb_train_*.bin" \
  --data.val "" --train.steps 60 --train.peak_gflops 100 --train.save_params "$WORK/token.mort" > /dev/null
gen() { "$MOR_BIN" generate --tokenizer "$TOK" "$@"; }

# ---- one prompt: streamed text, --ids, --out ----------------------------------------------------
SAMPLE=(--temperature 0.9 --top-k 40 --seed 3 --max-new-tokens 40)
gen --ckpt "$WORK/ck_expert" --prompt "A friend is" "${SAMPLE[@]}" > "$WORK/one.txt" 2> "$WORK/one.err"
gen --ckpt "$WORK/ck_expert" --prompt "A friend is" "${SAMPLE[@]}" --ids > "$WORK/one_ids.txt" 2> /dev/null
gen --ckpt "$WORK/ck_expert" --prompt "A friend is" "${SAMPLE[@]}" --out "$WORK/one.jsonl" > "$WORK/one_out.txt" 2> /dev/null
grep -q "KV cache per sequence [0-9]* bytes (recursion-wise) vs [0-9]* bytes for a vanilla cache" "$WORK/one.err" ||
  fail "no KV-cache line on stderr: $(cat "$WORK/one.err")"
echo "one prompt: $(head -c 120 "$WORK/one.txt" | tr '\n' ' ')"
cat > "$WORK/bpe.py" <<'PY'
import json
def bytes_to_unicode():  # GPT-2's byte <-> printable character map
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b); cs.append(256 + n); n += 1
    return dict(zip(bs, map(chr, cs)))
def decoder(path):
    vocab = json.load(open(path, encoding="utf-8"))["model"]["vocab"]
    inv, back = {i: s for s, i in vocab.items()}, {c: b for b, c in bytes_to_unicode().items()}
    return lambda ids: b"".join(bytes(back[ch] for ch in inv[i]) for i in ids)
PY
/usr/bin/python3 - "$WORK" "$TOK" <<'PY'
import json, sys
sys.path.insert(0, sys.argv[1]); import bpe
work, decode = sys.argv[1], bpe.decoder(sys.argv[2])
text = open(f"{work}/one.txt", "rb").read()
assert text.endswith(b"\n") and len(text) > 1, text
text = text[:-1]
both = open(f"{work}/one_ids.txt", "rb").read()
at = both.rindex(b"\nids: ")
assert both[:at] == text, (both[:at], text)
ids = json.loads(both[at + 6:])
assert 0 < len(ids) <= 40 and decode(ids) == text, (ids, decode(ids), text)
assert open(f"{work}/one_out.txt", "rb").read()[:-1] == text
line = json.loads(open(f"{work}/one.jsonl", encoding="utf-8").read())
assert line["text"].encode() == text or b"\xef\xbf\xbd" in line["text"].encode(), line
assert line["new_tokens"] == len(ids) and line["index"] == 0 and line["prompt"] == "A friend is", line
print(f"one prompt: {len(ids)} ids decode (independently) to the streamed text; --out holds the same")
PY

# ---- a prompt file: batch 1 = batch 4, sampled and greedy -------------------------------------------
LONG=$(printf 'the cat sat on the mat and %.0s' {1..6})  # ~60 tokens: generation runs into the 64 positions
{
  echo '{"prompt": "Love is"}'
  echo '{"prompt": "You will"}'
  echo ''
  echo '{"ids": [85, 105, 102, 33]}'  # "The ": byte b is id b + 1 in the corpus tokenizer
  echo '{"prompt": "Q: Why?\nA:"}'
  echo "{\"prompt\": \"${LONG% }\"}"
  echo '{"prompt": "Never"}'
} > "$WORK/prompts.jsonl"
for b in 1 4; do
  gen --ckpt "$WORK/ck_expert" --prompts "$WORK/prompts.jsonl" --temperature 1 --top-p 0.9 --seed 5 --ids \
    --max-new-tokens 24 --batch $b --out "$WORK/s$b.jsonl" 2> "$WORK/s$b.err"
  gen --ckpt "$WORK/ck_expert" --prompts "$WORK/prompts.jsonl" --temperature 0 --ids --max-new-tokens 24 \
    --batch $b > "$WORK/g$b.jsonl" 2> /dev/null
done
cmp "$WORK/s1.jsonl" "$WORK/s4.jsonl" || fail "sampled: --batch 4 differs from --batch 1"
cmp "$WORK/g1.jsonl" "$WORK/g4.jsonl" || fail "greedy: --batch 4 differs from --batch 1"
grep -q "batch 4" "$WORK/s4.err" || fail "the batch-4 run did not run 4 sequences together: $(cat "$WORK/s4.err")"
gen --ckpt "$WORK/ck_expert" --prompts "$WORK/prompts.jsonl" --temperature 1 --top-p 0.9 --seed 6 \
  --max-new-tokens 24 --batch 4 --out "$WORK/s6.jsonl" 2> /dev/null
echo "prompt file: --batch 1 and --batch 4 give the same JSON lines (sampled, seed 5; greedy)"
/usr/bin/python3 - "$WORK" "$TOK" <<'PY'
import json, sys
sys.path.insert(0, sys.argv[1]); import bpe
work, decode = sys.argv[1], bpe.decoder(sys.argv[2])
T, L, kvd = 64, 8, 2 * 32
for f in ("s1", "g1"):
    lines = [json.loads(l) for l in open(f"{work}/{f}.jsonl", encoding="utf-8")]
    assert [l["index"] for l in lines] == list(range(6)), [l["index"] for l in lines]
    for l in lines:
        P, n = l["prompt_tokens"], l["new_tokens"]
        assert P == len(l["prompt_ids"]) and n == len(l["ids"]) and n <= 24 and (n >= 1 or l["stop"] == "eot"), l
        assert decode(l["prompt_ids"]).decode() == l["prompt"], l
        assert decode(l["ids"]).decode("utf-8", "replace") == l["text"], l
        fed = P + n - (l["stop"] != "eot")
        assert l["stop"] in ("eot", "length", "context"), l
        assert l["stop"] != "length" or n == 24, l
        assert l["stop"] != "context" or fed == T, l
        assert sum(l["tokens_by_recursions"]) == fed and l["tokens_by_recursions"][0] == 0, l
        assert l["vanilla_kv_cache_bytes"] == fed * L * 2 * kvd * 4, l
        assert l["kv_cache_bytes"] <= l["vanilla_kv_cache_bytes"] * (8 * kvd + 4) // (8 * kvd), l
    assert lines[2]["prompt"] == "The ", lines[2]
    assert 64 - 24 < lines[4]["prompt_tokens"] <= 64 and lines[4]["stop"] in ("context", "eot"), lines[4]
    print(f"{f}: 6 lines in prompt order, stops {[l['stop'] for l in lines]}, KV bytes / vanilla",
          [round(l["kv_cache_bytes"] / l["vanilla_kv_cache_bytes"], 3) for l in lines])
a = [json.loads(l)["text"] for l in open(f"{work}/s1.jsonl", encoding="utf-8")]
b = [json.loads(l)["text"] for l in open(f"{work}/s6.jsonl", encoding="utf-8")]
assert a != b, "seed 6 sampled the same text as seed 5"
print("another seed: other text")
PY

# ---- the expert-choice threshold at its ends ---------------------------------------------------
for th in 0 1; do
  gen --ckpt "$WORK/ck_expert" --prompt "Love is" --temperature 0 --max-new-tokens 8 --mor.infer_threshold $th \
    --out "$WORK/th$th.jsonl" > /dev/null 2>&1
done
/usr/bin/python3 - "$WORK" <<'PY'
import json, sys
a, b = (json.loads(open(f"{sys.argv[1]}/th{t}.jsonl").read()) for t in (0, 1))
fed = lambda l: l["prompt_tokens"] + l["new_tokens"] - (l["stop"] != "eot")
assert a["tokens_by_recursions"] == [0, 0, 0, fed(a)], a
assert a["kv_cache_bytes"] == a["vanilla_kv_cache_bytes"] * 516 // 512, a  # + 4 bytes of position per row
assert b["tokens_by_recursions"] == [0, fed(b), 0, 0], b
print(f"threshold 0: every token 3 recursions, cache {a['kv_cache_bytes']} B = vanilla + positions; "
      f"threshold 1: recursion 0 only, cache {b['kv_cache_bytes']} B")
PY

# ---- token-choice from a .mort file -----------------------------------------------------------
gen --ckpt "$WORK/token.mort" --config "$MOR_SRC/configs/tiny_mor_token.ini" --prompts "$WORK/prompts.jsonl" \
  --temperature 0 --max-new-tokens 12 --batch 3 > "$WORK/token.jsonl" 2> /dev/null
/usr/bin/python3 - "$WORK" <<'PY'
import json, sys
lines = [json.loads(l) for l in open(f"{sys.argv[1]}/token.jsonl", encoding="utf-8")]
assert len(lines) == 6 and all(l["tokens_by_recursions"][0] == 0 for l in lines), lines
print("token-choice (.mort + --config): tokens by recursions", [l["tokens_by_recursions"] for l in lines[:2]], "...")
PY

# ---- streaming: the first tokens are on stdout while later ones are still being generated --------------
MOR_TEST_STOP_POLL_MS=200 "$MOR_BIN" generate --tokenizer "$TOK" --ckpt "$WORK/ck_expert" --prompt "A friend is" \
  "${SAMPLE[@]}" > "$WORK/stream.txt" 2> /dev/null &
pid=$!
BG_PIDS+=("$pid")
for _ in $(seq 200); do [ -s "$WORK/stream.txt" ] && break; sleep 0.05; done
[ -s "$WORK/stream.txt" ] && kill -0 "$pid" 2> /dev/null || fail "no text on stdout while generating"
wait "$pid"
cmp "$WORK/stream.txt" "$WORK/one.txt" || fail "the streamed text differs from the same run's"
echo "streaming: text on stdout before the run ended, the same text in the end"

# ---- SIGINT between tokens: exit 130 (each token waits 100 ms at the poll: MOR_TEST_STOP_POLL_MS) ------
MOR_TEST_STOP_POLL_MS=100 "$MOR_BIN" generate --tokenizer "$TOK" --ckpt "$WORK/ck_expert" --prompts "$WORK/prompts.jsonl" \
  --max-new-tokens 60 --seed 1 --out "$WORK/sig.jsonl" > /dev/null 2> "$WORK/sig.err" &
pid=$!
BG_PIDS+=("$pid")
sleep 1
kill -0 "$pid" 2> /dev/null || fail "generate ended before the signal: $(cat "$WORK/sig.err")"
kill -INT "$pid"
rc=0
wait "$pid" || rc=$?
[ $rc -eq 130 ] && grep -q "stopped by a signal" "$WORK/sig.err" || fail "SIGINT: exit $rc, $(cat "$WORK/sig.err")"
echo "SIGINT mid-generation: exit 130, $(wc -l < "$WORK/sig.jsonl") of 6 prompts written"

# ---- bad input: exit status 2 and what is wrong ---------------------------------------------------
expect_exit2() {  # expect_exit2 WHAT PATTERN ARGS...
  local rc=0
  "$MOR_BIN" generate "${@:3}" > "$WORK/err.log" 2>&1 || rc=$?
  [ $rc -eq 2 ] || fail "$1: exit status $rc, want 2 ($(cat "$WORK/err.log"))"
  grep -q -- "$2" "$WORK/err.log" || fail "$1: no '$2' in: $(cat "$WORK/err.log")"
  echo "refused ($1): $(tail -1 "$WORK/err.log")"
}
CK=(--ckpt "$WORK/ck_expert" --tokenizer "$TOK")
bad() { printf '%s\n' "$1" > "$WORK/bad.jsonl"; }
expect_exit2 "no checkpoint" "does not exist" --ckpt "$WORK/nope" --tokenizer "$TOK" --prompt hi
expect_exit2 "no tokenizer" "is not a file" --ckpt "$WORK/ck_expert" --tokenizer "$WORK/nope.json" --prompt hi
expect_exit2 "no --ckpt" "ckpt: is required" --tokenizer "$TOK" --prompt hi
expect_exit2 "two prompt sources" "exactly one" "${CK[@]}" --prompt hi --prompts "$WORK/prompts.jsonl"
expect_exit2 "no prompt" "exactly one" "${CK[@]}"
expect_exit2 "empty prompt" "prompt: is empty" "${CK[@]}" --prompt ""
expect_exit2 ".mort without --config" "config: is required" --ckpt "$WORK/token.mort" --tokenizer "$TOK" --prompt hi
bad '{"ids": [5, 5000]}'
expect_exit2 "id outside the vocabulary" "token id 5000 is not in the tokenizer" "${CK[@]}" --prompts "$WORK/bad.jsonl"
bad '{"prompt": ""}'
expect_exit2 "empty prompt in a file" "line 1: the prompt is empty" "${CK[@]}" --prompts "$WORK/bad.jsonl"
bad '{"prompt": "hi"'
expect_exit2 "not JSON" "line 1: not JSON" "${CK[@]}" --prompts "$WORK/bad.jsonl"
bad '{"text": "hi"}'
expect_exit2 "no prompt field" "want an object" "${CK[@]}" --prompts "$WORK/bad.jsonl"
: > "$WORK/bad.jsonl"
expect_exit2 "empty prompt file" "holds no prompt" "${CK[@]}" --prompts "$WORK/bad.jsonl"
expect_exit2 "prompt longer than the context" "the model has 64 positions" "${CK[@]}" --prompt "$LONG$LONG"
expect_exit2 "negative temperature" "temperature" "${CK[@]}" --prompt hi --temperature -1
expect_exit2 "top-p 0" "top-p" "${CK[@]}" --prompt hi --top-p 0
expect_exit2 "batch 0" "batch: must be" "${CK[@]}" --prompt hi --batch 0
expect_exit2 "threshold 2" "infer_threshold" "${CK[@]}" --prompt hi --mor.infer_threshold 2
expect_exit2 "misspelt option" "did you mean" "${CK[@]}" --prompt hi --temprature 0
expect_exit2 "unwritable --out" "cannot write" "${CK[@]}" --prompt hi --out "$WORK/no/such/dir.jsonl"
