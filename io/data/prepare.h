// `mor-dist prepare`: JSONL documents -> llm.c token shards (io/data/token_shard.h; special-token
// text inside documents is encoded as plain text: io/data/tokenizer.h).
//
// Input: one JSON object per line with a string field "text" (other fields are
// ignored); plain, gzip (zlib, multi-member) or zstd (multi-frame) files,
// recognised by their magic bytes. Files are read in the order of the
// --input patterns, each pattern's matches sorted by name (duplicates once).
//
// Output in out_dir:
//   edu_fineweb_val_000000.bin    the first documents, whole, until at least
//                                 val_tokens tokens (none when val_tokens = 0):
//                                 no document is split between val and train;
//   edu_fineweb_train_%06d.bin    from index 1, exactly shard_tokens tokens
//                                 each (the last one holds the rest); a
//                                 document may run across a train boundary;
//   manifest.json                 shards (split, tokens, documents starting in
//                                 the shard, SHA-256 of the whole file as
//                                 `sha256sum` prints it), totals, bad lines.
// Every document is preceded by the tokenizer's end-of-text id; its text is
// encoded with ordinary encoding (special-token text is plain text). Tokens
// are uint16 when the vocabulary has <= 65536 ids, else uint32.
//
// Bad lines are skipped and counted (or, with strict, the first one is an
// error "FILE:LINE: ..."), in three kinds:
//   malformed JSON   not one valid JSON value (RFC 8259);
//   missing text     valid JSON but not an object with a string "text";
//   invalid UTF-8    raw bytes that are not UTF-8, or an unpaired \u surrogate
//                    escape, anywhere in the line.
// Blank lines are skipped silently.
//
// Threads tokenize batches of lines in parallel; a single writer consumes the
// results in input order, so the output is byte-identical for any thread count.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

namespace mor::io {

struct PrepareOptions {
  std::string tokenizer;            // tokenizer.json
  std::vector<std::string> inputs;  // glob patterns
  std::string out_dir;
  uint64_t shard_tokens = 0;             // tokens per train shard, in [1, 2^31 - 1]
  uint64_t val_tokens = 0;               // 0 = no validation shard
  int threads = 0;                       // tokenizer threads; 0 = the cores this process may use
  bool strict = false;                   // first bad line is an error
  bool overwrite = false;                // replace existing shards / manifest in out_dir
  bool progress = true;                  // progress line on the log stream
  size_t batch_bytes = size_t{1} << 20;  // input bytes per work item
};

enum class BadLine { kMalformedJson = 0, kMissingText = 1, kInvalidUtf8 = 2 };
inline constexpr int kNumBadLineKinds = 3;
const char* bad_line_name(BadLine kind);  // "malformed JSON", ...

struct ShardInfo {
  std::string file;   // name inside out_dir
  std::string split;  // "val" or "train"
  uint64_t tokens = 0;
  uint64_t documents = 0;  // documents that start in this shard
  std::string sha256;      // of the whole file
};

struct PrepareResult {
  std::vector<std::string> files;  // inputs, in reading order
  uint64_t input_bytes = 0;        // file sizes (compressed as stored)
  uint64_t text_bytes = 0;         // bytes of "text" encoded
  uint64_t documents = 0;
  uint64_t tokens = 0;  // including one end-of-text per document
  uint64_t bad[kNumBadLineKinds] = {};
  std::vector<std::string> bad_examples;  // "FILE:LINE: kind: detail", the first 20
  std::vector<ShardInfo> shards;
  uint32_t vocab_size = 0;
  uint32_t eot_id = 0;
  int token_bytes = 0;
  double seconds = 0;
  uint64_t bad_total() const { return bad[0] + bad[1] + bad[2]; }
};

// Runs the whole pipeline; progress and the final report go to `log` (may be
// null). Throws std::runtime_error naming the file (and line) on I/O errors,
// corrupt compressed input, a pattern that matches nothing, and — with
// strict — the first bad line.
PrepareResult prepare_shards(const PrepareOptions& opt, std::FILE* log = stderr);

// One JSONL line -> its "text" (decoded). Returns true and fills *text on
// success; else fills *kind and *detail (e.g. "expected ',' or '}' at column
// 17"). A line of only whitespace is not handled here (callers skip it).
bool parse_jsonl_text(std::string_view line, std::string* text, BadLine* kind, std::string* detail);
// The same result from the hand-written parser alone (what parse_jsonl_text asks when simdjson
// does not accept a line); for bench/prepare_throughput, which times the two.
bool parse_jsonl_text_by_hand(std::string_view line, std::string* text, BadLine* kind, std::string* detail);

}  // namespace mor::io
