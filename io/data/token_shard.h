// llm.c-compatible token shards.
//
// Layout: a header of 256 little-endian int32 (1024 bytes) — [0] magic,
// [1] version, [2] token count — followed by the tokens:
//   magic 20240520, version 1: uint16 tokens (vocabularies up to 65536 ids)
//   magic 20240801, version 7: uint32 tokens (larger vocabularies)
// The file size must equal 1024 + count * token size. Shards made by llm.c's
// FineWeb-Edu script load as they are; scripts/make_corpus.py writes the same
// bytes as write_token_shard below.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace mor::io {

inline constexpr int32_t kShardMagicU16 = 20240520;
inline constexpr int32_t kShardVersionU16 = 1;
inline constexpr int32_t kShardMagicU32 = 20240801;
inline constexpr int32_t kShardVersionU32 = 7;
inline constexpr int kShardHeaderInts = 256;
inline constexpr size_t kShardHeaderBytes = kShardHeaderInts * sizeof(int32_t);  // 1024

struct ShardHeader {
  int32_t magic = 0;
  int32_t version = 0;
  uint64_t count = 0;   // number of tokens
  int token_bytes = 0;  // 2 or 4
};

// Reads and validates only the header and the file size (no mmap, no token scan).
// Throws std::runtime_error naming the file and what is wrong.
ShardHeader read_shard_header(const std::string& path);

// A read-only, memory-mapped token shard. Move-only; thread-safe for
// concurrent reads (all accessors are const and touch only the mapping).
class TokenShard {
 public:
  // Opens `path`, validates magic/version/size and, when vocab_size > 0,
  // checks every token id < vocab_size (one sequential scan at open; the error
  // names the file, the token index, its byte offset and the id).
  explicit TokenShard(const std::string& path, uint32_t vocab_size = 0);
  ~TokenShard();
  TokenShard(TokenShard&& other) noexcept;
  TokenShard& operator=(TokenShard&& other) noexcept;
  TokenShard(const TokenShard&) = delete;
  TokenShard& operator=(const TokenShard&) = delete;

  const std::string& path() const { return path_; }
  uint64_t size() const { return count_; }          // number of tokens
  int token_bytes() const { return token_bytes_; }  // 2 or 4
  // Token i; throws std::out_of_range (naming the file) when i >= size().
  uint32_t token(uint64_t i) const;
  // Copies tokens [first, first + n) to out as int32; throws std::out_of_range
  // (naming the file) when the range exceeds size().
  void copy_tokens(uint64_t first, uint64_t n, int32_t* out) const;

 private:
  void unmap() noexcept;

  std::string path_;
  const unsigned char* map_ = nullptr;  // whole file, read-only
  size_t map_bytes_ = 0;
  uint64_t count_ = 0;
  int token_bytes_ = 0;
};

// Writes `tokens` as a shard: the uint16 variant when vocab_size <= 65536,
// else the uint32 variant. Every id must be < vocab_size and the count must fit
// the int32 header field. Writes `path + ".tmp"`, fsyncs, then renames it to
// `path` (no partially written shard is ever visible under `path`).
void write_token_shard(const std::string& path, const std::vector<uint32_t>& tokens, uint32_t vocab_size);

}  // namespace mor::io
