// Fuzzes the tokenizer.json loader (io/data/tokenizer.h, Tokenizer::from_json) on arbitrary text.
// A tokenizer that loads then encodes a fixed multilingual sample and the input bytes
// themselves. Invariants: loading throws only std::runtime_error; every id encoded is a token
// (< vocab_size, decodable); decode(encode(x)) gives x back (with one leading space when the
// pre-tokenizer adds a prefix space); the pre-tokens of x concatenate to x.
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_util.h"
#include "io/data/tokenizer.h"

using namespace mor::io;

namespace {

void check_round_trip(const Tokenizer& tok, std::string_view x) {
  const std::vector<uint32_t> ids = tok.encode(x);
  for (const uint32_t id : ids) MOR_FUZZ_CHECK(id < tok.vocab_size(), "id %u >= vocab_size %u", id, tok.vocab_size());
  const std::string back = tok.decode(ids);  // throws std::out_of_range for a non-token: a crash here
  MOR_FUZZ_CHECK(back == x || back == " " + std::string(x), "decode(encode(x)) is not x (%zu vs %zu bytes)",
                 back.size(), x.size());
  std::string joined;
  for (const std::string_view p : tok.pretokenize(x)) {
    MOR_FUZZ_CHECK(!p.empty(), "empty pre-token");
    joined += p;
  }
  MOR_FUZZ_CHECK(joined == x, "pre-tokens do not concatenate to the text");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  std::optional<Tokenizer> tok;
  try {
    tok.emplace(Tokenizer::from_json(text, "fuzz.json"));
  } catch (const std::runtime_error&) {
    return 0;
  }
  check_round_trip(*tok, "Hello world's 123 numbers,   spaces\n\tand ünïcödé 日本語 🙂 \xff\xfe bytes");
  check_round_trip(*tok, text.substr(0, 4096));
  try {
    const uint32_t eot = tok->eot_id();
    MOR_FUZZ_CHECK(eot < tok->vocab_size(), "eot id %u >= vocab_size %u", eot, tok->vocab_size());
    (void)tok->decode({eot});
  } catch (const std::runtime_error&) {  // no end-of-text token: allowed until `prepare` needs one
  }
  return 0;
}
