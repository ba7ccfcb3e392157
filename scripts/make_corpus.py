#!/usr/bin/python3
"""Build a small real-English token corpus from the Debian `fortunes` package.

    /usr/bin/python3 scripts/make_corpus.py --out data/fortunes [--vocab 1024]

Steps (stdlib + numpy only, deterministic: the same input gives the same bytes):
  1. Documents: every text file in --src (default /usr/share/games/fortunes),
     sorted by name, skipping *.dat, *.u8, folders (e.g. off/) and links.
     Entries are separated by lines that contain only '%'; each non-blank
     entry is one document. Document k goes to validation when k % 20 == 0
     (--val-every), the rest to training.
  2. Tokenizer: byte-level BPE trained on the word-frequency table of the
     training documents. Words come from a GPT-2-like pre-tokenization regex
     (identical to GPT-2's pattern on ASCII text). Id 0 is <|endoftext|>,
     ids 1..256 are the bytes 0..255, merges take ids 257.. until the vocabulary
     reaches --vocab. Merges are chosen by highest pair frequency, ties broken
     by the smallest (left id, right id).
  3. Shards in the llm.c layout (same bytes as mor::io::write_token_shard):
     DIR/edu_fineweb_val_000000.bin and DIR/edu_fineweb_train_000001.bin, each
     document preceded by the EOT id 0.
  4. DIR/corpus.json with sizes and unigram entropies (nats/token):
       train_unigram_entropy: entropy of the empirical unigram distribution of
         the train tokens;
       val_unigram_cross_entropy: cross-entropy of the val tokens under the
         train unigram distribution with add-one smoothing,
         q(t) = (count_train(t) + 1) / (N_train + vocab_size).
     A language model that learned anything beyond unigram statistics must
     reach a validation loss well below val_unigram_cross_entropy.
  5. DIR/tokenizer.json: the tokenizer as a Hugging Face `tokenizer.json`
     (ByteLevel pre-tokenizer/decoder, BPE model; <|endoftext|> is id 0).
"""

import argparse
import heapq
import json
import math
import os
import re
import sys
import time

import numpy as np

EOT_ID = 0
BYTE_OFFSET = 1  # byte b has id b + 1
SHARD_HEADER_INTS = 256
MAGIC_U16, VERSION_U16 = 20240520, 1
MAGIC_U32, VERSION_U32 = 20240801, 7

# GPT-2's pattern with \p{L} -> [^\W\d_] and \p{N} -> \d (Python's `re` has no
# \p classes); on ASCII text it splits exactly like GPT-2.
PRETOKENIZE = re.compile(
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?[^\W\d_]+| ?\d+| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+""")


def read_documents(src):
    """Return the list of documents (str, bytes kept via surrogateescape)."""
    docs = []
    names = sorted(os.listdir(src), key=lambda n: n.encode("utf-8", "surrogateescape"))
    files = []
    for name in names:
        path = os.path.join(src, name)
        if name.endswith(".dat") or name.endswith(".u8"):
            continue
        if os.path.islink(path) or not os.path.isfile(path):
            continue  # off/ and any other folder, symlinks
        files.append(name)
        with open(path, "rb") as f:
            text = f.read().decode("utf-8", "surrogateescape")
        entry = []
        for line in text.splitlines(keepends=True):
            if line.rstrip("\r\n") == "%":
                doc = "".join(entry)
                if doc.strip():
                    docs.append(doc)
                entry = []
            else:
                entry.append(line)
        doc = "".join(entry)
        if doc.strip():
            docs.append(doc)
    return files, docs


def pretokenize(doc):
    words = PRETOKENIZE.findall(doc)
    if sum(len(w) for w in words) != len(doc):  # the regex must cover every char
        raise RuntimeError("pre-tokenization lost characters in document: %r" % doc[:80])
    return words


def to_bytes(word):
    return word.encode("utf-8", "surrogateescape")


def train_bpe(word_freq, vocab_size):
    """word_freq: dict bytes -> count. Returns the merges [(left_id, right_id)];
    merge k creates id 257 + k."""
    first_merge_id = 256 + BYTE_OFFSET
    if vocab_size < first_merge_id:
        raise ValueError("--vocab must be at least %d" % first_merge_id)
    items = sorted(word_freq.items())  # deterministic word order
    words = [[b + BYTE_OFFSET for b in w] for w, _ in items]
    freqs = [c for _, c in items]

    pair_count = {}
    pair_words = {}  # pair -> set of word indices that (may) contain it
    for wi, ids in enumerate(words):
        f = freqs[wi]
        for p in zip(ids, ids[1:]):
            pair_count[p] = pair_count.get(p, 0) + f
            pair_words.setdefault(p, set()).add(wi)
    heap = [(-c, p) for p, c in pair_count.items()]
    heapq.heapify(heap)

    merges = []
    next_id = first_merge_id
    while next_id < vocab_size and heap:
        negc, pair = heapq.heappop(heap)
        if pair_count.get(pair, 0) != -negc or negc == 0:
            continue  # stale heap entry
        a, b = pair
        new_id = next_id
        next_id += 1
        merges.append(pair)
        changed = set()
        for wi in sorted(pair_words.pop(pair, ())):
            ids = words[wi]
            out = []
            i = 0
            n = len(ids)
            hit = False
            while i < n:
                if i + 1 < n and ids[i] == a and ids[i + 1] == b:
                    out.append(new_id)
                    i += 2
                    hit = True
                else:
                    out.append(ids[i])
                    i += 1
            if not hit:
                continue
            f = freqs[wi]
            for p in zip(ids, ids[1:]):
                pair_count[p] -= f
                changed.add(p)
            for p in zip(out, out[1:]):
                pair_count[p] = pair_count.get(p, 0) + f
                changed.add(p)
                pair_words.setdefault(p, set()).add(wi)
            words[wi] = out
        pair_count.pop(pair, None)
        changed.discard(pair)
        for p in sorted(changed):
            c = pair_count[p]
            if c > 0:
                heapq.heappush(heap, (-c, p))
            else:
                del pair_count[p]
    return merges


class Encoder:
    def __init__(self, merges):
        first = 256 + BYTE_OFFSET
        self.ranks = {p: k for k, p in enumerate(merges)}
        self.ids = {p: first + k for k, p in enumerate(merges)}
        self.cache = {}

    def encode_word(self, wb):
        got = self.cache.get(wb)
        if got is not None:
            return got
        ids = [b + BYTE_OFFSET for b in wb]
        ranks = self.ranks
        while len(ids) > 1:
            best = None
            best_rank = None
            for p in zip(ids, ids[1:]):
                r = ranks.get(p)
                if r is not None and (best_rank is None or r < best_rank):
                    best, best_rank = p, r
            if best is None:
                break
            a, b = best
            new_id = self.ids[best]
            out = []
            i = 0
            n = len(ids)
            while i < n:
                if i + 1 < n and ids[i] == a and ids[i + 1] == b:
                    out.append(new_id)
                    i += 2
                else:
                    out.append(ids[i])
                    i += 1
            ids = out
        self.cache[wb] = ids
        return ids

    def encode_documents(self, docs_words):
        out = []
        for words in docs_words:
            out.append(EOT_ID)
            for w in words:
                out.extend(self.encode_word(to_bytes(w)))
        return out


def write_token_shard(path, tokens, vocab_size):
    """Same bytes as mor::io::write_token_shard (io/data/token_shard.cpp)."""
    if vocab_size <= 65536:
        magic, version, dtype = MAGIC_U16, VERSION_U16, "<u2"
    else:
        magic, version, dtype = MAGIC_U32, VERSION_U32, "<u4"
    arr = np.asarray(tokens, dtype=np.int64)
    if arr.size > 2**31 - 1:
        raise ValueError("%s: %d tokens do not fit the int32 header count" % (path, arr.size))
    if arr.size and (arr.min() < 0 or arr.max() >= vocab_size):
        raise ValueError("%s: token id out of range [0, %d)" % (path, vocab_size))
    header = np.zeros(SHARD_HEADER_INTS, dtype="<i4")
    header[0], header[1], header[2] = magic, version, arr.size
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(header.tobytes())
        f.write(arr.astype(dtype).tobytes())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def bytes_to_unicode():
    """GPT-2's byte -> printable unicode char table (used by HF ByteLevel)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) + \
        list(range(ord("\xae"), ord("\xff") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def tokenizer_json(merges):
    b2u = bytes_to_unicode()
    strings = ["<|endoftext|>"] + [b2u[b] for b in range(256)]
    merge_strs = []
    for a, b in merges:
        merge_strs.append(strings[a] + " " + strings[b])
        strings.append(strings[a] + strings[b])
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [{"id": EOT_ID, "content": "<|endoftext|>", "single_word": False,
                          "lstrip": False, "rstrip": False, "normalized": False,
                          "special": True}],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False,
                          "trim_offsets": True, "use_regex": True},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": False,
                    "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False,
                  "vocab": {s: i for i, s in enumerate(strings)},
                  "merges": merge_strs},
    }


def write_text_atomic(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--vocab", type=int, default=1024, help="vocabulary size incl. EOT (default 1024)")
    ap.add_argument("--src", default="/usr/share/games/fortunes", help="fortunes folder")
    ap.add_argument("--val-every", type=int, default=20, help="document k is validation when k %% N == 0")
    args = ap.parse_args()
    t0 = time.time()

    if not os.path.isdir(args.src):
        sys.exit("make_corpus: %s not found (install the Debian package `fortunes`)" % args.src)
    files, docs = read_documents(args.src)
    if not docs:
        sys.exit("make_corpus: no documents in %s" % args.src)
    docs_words = [pretokenize(d) for d in docs]
    val_idx = [k for k in range(len(docs)) if k % args.val_every == 0]
    train_idx = [k for k in range(len(docs)) if k % args.val_every != 0]

    word_freq = {}
    for k in train_idx:
        for w in docs_words[k]:
            wb = to_bytes(w)
            word_freq[wb] = word_freq.get(wb, 0) + 1
    merges = train_bpe(word_freq, args.vocab)
    vocab_size = 256 + BYTE_OFFSET + len(merges)
    if vocab_size != args.vocab:
        print("make_corpus: only %d merges possible; vocab_size = %d" % (len(merges), vocab_size))

    enc = Encoder(merges)
    train_tokens = enc.encode_documents(docs_words[k] for k in train_idx)
    val_tokens = enc.encode_documents(docs_words[k] for k in val_idx)

    os.makedirs(args.out, exist_ok=True)
    write_token_shard(os.path.join(args.out, "edu_fineweb_val_000000.bin"), val_tokens, vocab_size)
    write_token_shard(os.path.join(args.out, "edu_fineweb_train_000001.bin"), train_tokens, vocab_size)

    counts = np.bincount(np.asarray(train_tokens, dtype=np.int64), minlength=vocab_size).astype(np.float64)
    n_train = counts.sum()
    p = counts[counts > 0] / n_train
    train_entropy = float(-(p * np.log(p)).sum())
    q = (counts + 1.0) / (n_train + vocab_size)
    val_counts = np.bincount(np.asarray(val_tokens, dtype=np.int64), minlength=vocab_size).astype(np.float64)
    val_xent = float(-(val_counts * np.log(q)).sum() / val_counts.sum())
    train_bytes = sum(len(to_bytes(docs[k])) for k in train_idx)

    info = {
        "source": args.src,
        "source_files": len(files),
        "vocab_size": vocab_size,
        "num_merges": len(merges),
        "eot_id": EOT_ID,
        "val_every": args.val_every,
        "train_documents": len(train_idx),
        "val_documents": len(val_idx),
        "train_tokens": len(train_tokens),
        "val_tokens": len(val_tokens),
        "train_bytes": train_bytes,
        "train_bytes_per_token": round(train_bytes / len(train_tokens), 6),
        "train_unigram_entropy": round(train_entropy, 6),
        "val_unigram_cross_entropy": round(val_xent, 6),
        "shards": {"val": "edu_fineweb_val_000000.bin", "train": ["edu_fineweb_train_000001.bin"]},
        "tokenizer": "tokenizer.json",
    }
    write_text_atomic(os.path.join(args.out, "tokenizer.json"),
                      json.dumps(tokenizer_json(merges), ensure_ascii=False, indent=1) + "\n")
    write_text_atomic(os.path.join(args.out, "corpus.json"), json.dumps(info, indent=2) + "\n")

    print("make_corpus: %d files, %d documents (%d train, %d val)"
          % (len(files), len(docs), len(train_idx), len(val_idx)))
    print("make_corpus: vocab_size %d, train tokens %d, val tokens %d, %.3f bytes/token"
          % (vocab_size, len(train_tokens), len(val_tokens), train_bytes / len(train_tokens)))
    print("make_corpus: train unigram entropy %.4f nats/token, val unigram cross-entropy %.4f nats/token"
          % (train_entropy, val_xent))
    print("make_corpus: wrote %s in %.1f s" % (args.out, time.time() - t0))


if __name__ == "__main__":
    main()
