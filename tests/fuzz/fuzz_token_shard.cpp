// Fuzzes the llm.c token-shard reader (io/data/token_shard.h): read_shard_header and TokenShard
// (mmap, header/size validation, the token-id scan) on arbitrary bytes written to a file.
// Header int 3 (unused by the format) picks the vocab_size limit, so the id scan is fuzzed too.
// Invariants: only std::runtime_error escapes; with no vocab limit, the shard opens exactly when
// its header reads; an opened shard's size matches its header, every token is < vocab_size,
// and out-of-range accesses throw std::out_of_range.
#include <cstring>
#include <stdexcept>
#include <vector>

#include "fuzz_util.h"
#include "io/data/token_shard.h"

using namespace mor::io;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = mor::fuzz::scratch_dir() + "/shard.bin";
  mor::fuzz::write_file(path, data, size);
  uint32_t vocab = 0;
  if (size >= 16) std::memcpy(&vocab, data + 12, 4);

  ShardHeader h;
  bool header_ok = false;
  try {
    h = read_shard_header(path);
    header_ok = true;
  } catch (const std::runtime_error&) {}
  for (const uint32_t v : {0u, vocab}) {
    try {
      TokenShard s(path, v);
      MOR_FUZZ_CHECK(header_ok, "TokenShard opened a file whose header read_shard_header rejects");
      MOR_FUZZ_CHECK(s.size() == h.count && s.token_bytes() == h.token_bytes, "size %llu/%d vs header %llu/%d",
                     (unsigned long long)s.size(), s.token_bytes(), (unsigned long long)h.count, h.token_bytes);
      MOR_FUZZ_CHECK(size == kShardHeaderBytes + s.size() * static_cast<uint64_t>(s.token_bytes()),
                     "file of %zu bytes opened as %llu tokens", size, (unsigned long long)s.size());
      std::vector<int32_t> toks(s.size());
      s.copy_tokens(0, s.size(), toks.data());
      for (uint64_t i = 0; i < s.size(); ++i) {
        const uint32_t t = s.token(i);
        MOR_FUZZ_CHECK(static_cast<uint32_t>(toks[i]) == t, "copy_tokens and token() disagree at %llu",
                       (unsigned long long)i);
        MOR_FUZZ_CHECK(v == 0 || t < v, "token %u at %llu passed the check against vocab_size %u", t,
                       (unsigned long long)i, v);
      }
      bool threw = false;
      try {
        s.token(s.size());
      } catch (const std::out_of_range&) {
        threw = true;
      }
      MOR_FUZZ_CHECK(threw, "token(size()) did not throw");
      threw = false;
      try {
        s.copy_tokens(s.size(), 1, toks.data());
      } catch (const std::out_of_range&) {
        threw = true;
      }
      MOR_FUZZ_CHECK(threw, "copy_tokens past the end did not throw");
    } catch (const std::runtime_error& e) {
      MOR_FUZZ_CHECK(v != 0 || !header_ok, "valid header but TokenShard threw: %s", e.what());
    }
  }
  return 0;
}
