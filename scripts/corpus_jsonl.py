#!/usr/bin/python3
"""Write the documents of scripts/make_corpus.py's corpus as JSONL (one
{"text": ...} per line), in the order make_corpus.py encodes them.

    /usr/bin/python3 scripts/corpus_jsonl.py --out val.jsonl [--split val|train|all]
        [--src /usr/share/games/fortunes] [--val-every 20] [--repeat 1]

`mor-dist prepare` on --split val with the corpus' tokenizer.json must give
the same tokens as make_corpus.py's edu_fineweb_val_000000.bin (the test
test_io_prepare_corpus checks it). Also the real-text input of
bench/prepare_throughput (--split all --repeat K).
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_corpus  # noqa: E402  (read_documents: the same documents, same order)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--split", choices=["val", "train", "all"], default="val")
    ap.add_argument("--src", default="/usr/share/games/fortunes")
    ap.add_argument("--val-every", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=1, help="write the documents this many times")
    args = ap.parse_args()
    _, docs = make_corpus.read_documents(args.src)
    if args.split == "val":
        docs = [d for k, d in enumerate(docs) if k % args.val_every == 0]
    elif args.split == "train":
        docs = [d for k, d in enumerate(docs) if k % args.val_every != 0]
    tmp = args.out + ".tmp"
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        for _ in range(args.repeat):
            for d in docs:
                try:
                    d.encode("utf-8")
                except UnicodeEncodeError:
                    sys.exit("corpus_jsonl: a document holds bytes that are not UTF-8; JSON cannot carry them")
                f.write(json.dumps({"text": d}, ensure_ascii=False) + "\n")
    os.replace(tmp, args.out)
    print("corpus_jsonl: %d documents x %d -> %s" % (len(docs), args.repeat, args.out))


if __name__ == "__main__":
    main()
