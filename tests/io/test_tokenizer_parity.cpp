// Parity of mor::io::Tokenizer with two independent GPT-2 tokenizers from npm
// (js-tiktoken, a port of OpenAI's tiktoken; gpt-3-encoder, a port of GPT-2's
// encoder.py) on tests/io/data/tokenizer_sample.txt: real multilingual text
// with emoji, numbers, whitespace runs, contractions, special-token text, long
// runs and some invalid UTF-8. The fixture `tokenizer_refs`
// (scripts/fetch_tokenizer_refs.sh) writes GPT-2's vocabulary + merges as a
// Hugging Face tokenizer.json and the reference ids of every maximal valid
// UTF-8 segment of the sample (the references cannot represent invalid bytes).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "io/data/tokenizer.h"
#include "tokenizer_test_util.h"

namespace mor::io {
namespace {

using testing::read_text_file;

const std::string kRefs = MOR_TOKENIZER_REFS;
const std::string kSample = std::string(MOR_REPO_ROOT) + "/tests/io/data/tokenizer_sample.txt";

const Tokenizer& gpt2() {
  static const Tokenizer t = Tokenizer::from_file(kRefs + "/gpt2_tokenizer.json");
  return t;
}

TEST(TokenizerParity, Gpt2VocabularyLoads) {
  const Tokenizer& t = gpt2();
  EXPECT_EQ(t.vocab_size(), 50257u);
  EXPECT_EQ(t.eot_id(), 50256u);
  EXPECT_EQ(t.num_merges(), 50000u);
  EXPECT_EQ(t.encode("Hello world"), (std::vector<uint32_t>{15496, 995}));  // GPT-2's well-known ids
}

TEST(TokenizerParity, SampleIdsEqualJsTiktokenAndGpt3Encoder) {
  const Tokenizer& t = gpt2();
  const std::string text = read_text_file(kSample);
  const auto ref = nlohmann::json::parse(read_text_file(kRefs + "/sample_ref.json"));
  ASSERT_EQ(ref["bytes"].get<size_t>(), text.size()) << "sample_ref.json is stale: rerun the tokenizer_refs fixture";

  // Our own segmentation into maximal valid runs and single invalid bytes must
  // agree with the reference script's.
  size_t pos = 0, valid_segments = 0, invalid_bytes = 0, ids = 0;
  for (const auto& seg : ref["segments"]) {
    const size_t off = seg["offset"].get<size_t>(), len = seg["length"].get<size_t>();
    ASSERT_EQ(off, pos);
    const std::string part = text.substr(off, len);
    if (seg["valid"].get<bool>()) {
      ASSERT_EQ(utf8_first_invalid(part), part.size()) << "segment at byte " << off;
      const auto want = seg["tiktoken"].get<std::vector<uint32_t>>();
      const auto want2 = seg["gpt3encoder"].get<std::vector<uint32_t>>();
      const auto got = t.encode(part);
      EXPECT_EQ(got, want) << "js-tiktoken differs on the segment at byte " << off << ": " << part.substr(0, 80);
      EXPECT_EQ(got, want2) << "gpt-3-encoder differs on the segment at byte " << off;
      for (const uint32_t id : got) EXPECT_NE(id, t.eot_id()) << "special-token text must stay ordinary text";
      EXPECT_EQ(t.decode(got), part);
      ++valid_segments;
      ids += got.size();
    } else {
      ASSERT_EQ(len, 1u);
      ASSERT_EQ(utf8_first_invalid(part), 0u) << "byte " << off << " should be invalid";
      ++invalid_bytes;
    }
    pos = off + len;
  }
  EXPECT_EQ(pos, text.size());
  EXPECT_GE(valid_segments, 5u);
  EXPECT_GE(invalid_bytes, 10u);
  EXPECT_GT(ids, 3000u);
  // The sample covers what it claims to.
  for (const char* s :
       {"<|endoftext|>", "isn't", "they've", "\t\t", "     ", "\r\n", "\U0001F600", "2023", "\xe4\xba\xba"})
    EXPECT_NE(text.find(s), std::string::npos) << s;
}

TEST(TokenizerParity, WholeSampleWithInvalidBytesRoundTrips) {
  const Tokenizer& t = gpt2();
  const std::string text = read_text_file(kSample);
  const auto ids = t.encode(text);  // must not throw on the invalid bytes
  for (const uint32_t id : ids) ASSERT_LT(id, t.vocab_size());
  EXPECT_EQ(t.decode(ids), text);
  // The valid prefix (before the first invalid byte) encodes the same alone
  // and inside the whole text (the prefix ends at a line break).
  const size_t bad = utf8_first_invalid(text);
  ASSERT_LT(bad, text.size());
  const size_t cut = text.rfind('\n', bad);
  ASSERT_NE(cut, std::string::npos);
  const auto head = t.encode(text.substr(0, cut));
  ASSERT_LE(head.size(), ids.size());
  EXPECT_EQ(std::vector<uint32_t>(ids.begin(), ids.begin() + static_cast<ptrdiff_t>(head.size())), head);
}

TEST(TokenizerParity, MergesAsListsGiveTheSameIds) {
  auto j = nlohmann::json::parse(read_text_file(kRefs + "/gpt2_tokenizer.json"));
  nlohmann::json lists = nlohmann::json::array();
  for (const auto& m : j["model"]["merges"]) {
    const std::string s = m.get<std::string>();
    const size_t sp = s.find(' ');
    lists.push_back({s.substr(0, sp), s.substr(sp + 1)});
  }
  j["model"]["merges"] = lists;
  const Tokenizer t = Tokenizer::from_json(j.dump(), "gpt2 (list merges)");
  const std::string text = read_text_file(kSample);
  EXPECT_EQ(t.encode(text), gpt2().encode(text));
}

}  // namespace
}  // namespace mor::io
