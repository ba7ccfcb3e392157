// mor::io::Tokenizer on synthetic tokenizer.json files (no fixture needed):
// GPT-2 pre-tokenization rules, merge priority, long words, invalid UTF-8,
// special-token text, Digits sequences (SmolLM-style), > 65536 ids, errors.
// Parity with independent implementations: test_tokenizer_parity.cpp.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "io/data/tokenizer.h"
#include "io_test_util.h"
#include "tokenizer_test_util.h"

namespace mor::io {
namespace {

using testing::byte_string;
using testing::expect_error;
using testing::large_tokenizer;
using testing::small_tokenizer;
using testing::SyntheticTokenizer;

std::vector<std::string> pieces(const Tokenizer& t, const std::string& text) {
  std::vector<std::string> out;
  for (auto v : t.pretokenize(text)) out.emplace_back(v);
  return out;
}

using V = std::vector<std::string>;

TEST(Tokenizer, Gpt2PretokenizationRules) {
  const Tokenizer t = Tokenizer::from_json(small_tokenizer().json());
  EXPECT_EQ(pieces(t, "Hello world"), (V{"Hello", " world"}));
  EXPECT_EQ(pieces(t, "I'm don't they've we'll she'd it's 're"),
            (V{"I", "'m", " don", "'t", " they", "'ve", " we", "'ll", " she", "'d", " it", "'s", " '", "re"}));
  EXPECT_EQ(pieces(t, "DON'T 'sup"), (V{"DON", "'", "T", " '", "sup"}));  // case-sensitive; only at a match start
  EXPECT_EQ(pieces(t, "x'sy"), (V{"x", "'s", "y"}));
  EXPECT_EQ(pieces(t, "a  b"), (V{"a", " ", " b"}));
  EXPECT_EQ(pieces(t, "a   \n\tb"), (V{"a", "   \n", "\t", "b"}));
  EXPECT_EQ(pieces(t, "end   "), (V{"end", "   "}));
  EXPECT_EQ(pieces(t, "\n\n"), (V{"\n\n"}));
  EXPECT_EQ(pieces(t, "x2023 3.14"), (V{"x", "2023", " 3", ".", "14"}));
  EXPECT_EQ(pieces(t, "\u00bd\u00b2 \u2167x"), (V{"\u00bd\u00b2", " \u2167", "x"}));  // No, Nl are \p{N}
  EXPECT_EQ(pieces(t, "na\u00efve caf\u00e9"), (V{"na\u00efve", " caf\u00e9"}));
  EXPECT_EQ(pieces(t, "Cafe\u0301!"), (V{"Cafe", "\u0301!"}));  // a combining mark (Mn) is not \p{L}
  EXPECT_EQ(pieces(t, "hi!!! ..."), (V{"hi", "!!!", " ..."}));
  EXPECT_EQ(pieces(t, "\U0001F600\U0001F602 x"), (V{"\U0001F600\U0001F602", " x"}));
  EXPECT_EQ(pieces(t, "100\u00a0km"), (V{"100", "\u00a0", "km"}));  // NBSP is \s, not the " ?" space
  EXPECT_EQ(pieces(t, "\u6771\u4eac\u3000\u5927\u962a"), (V{"\u6771\u4eac", "\u3000", "\u5927\u962a"}));
  EXPECT_EQ(pieces(t, " "), (V{" "}));
  EXPECT_EQ(pieces(t, ""), V{});
}

TEST(Tokenizer, InvalidUtf8BytesAreSingleOtherCodePoints) {
  const Tokenizer t = Tokenizer::from_json(small_tokenizer().json());
  EXPECT_EQ(pieces(t,
                   "ab\xff"
                   "cd"),
            (V{"ab", "\xff", "cd"}));
  EXPECT_EQ(pieces(t, "a \xff\xfe!"), (V{"a", " \xff\xfe!"}));
  EXPECT_EQ(pieces(t, "x\xe2\x82"), (V{"x", "\xe2\x82"}));          // truncated sequence at the end
  EXPECT_EQ(pieces(t, "\xed\xa0\x80z"), (V{"\xed\xa0\x80", "z"}));  // encoded surrogate: 3 bad bytes
  EXPECT_EQ(pieces(t,
                   "\xc0\xaf"
                   "a"),
            (V{"\xc0\xaf", "a"}));  // overlong
  EXPECT_EQ(pieces(t, "caf\xc3"), (V{"caf", "\xc3"}));
  const std::string s = "caf\xe9 \xff\xff words \x80";
  EXPECT_EQ(t.decode(t.encode(s)), s);
  EXPECT_EQ(utf8_first_invalid("ok \xc3\xa9"), 5u);
  EXPECT_EQ(utf8_first_invalid("ok \xc3"), 3u);
  EXPECT_EQ(utf8_first_invalid("\xf4\x90\x80\x80"), 0u);  // above U+10FFFF
  EXPECT_EQ(utf8_first_invalid("\xf0\x9f\x98\x80"), 4u);
}

TEST(Tokenizer, MergePriorityLowestRankLeftmost) {
  const SyntheticTokenizer st = small_tokenizer();
  const Tokenizer t = Tokenizer::from_json(st.json());
  auto id = [&](const std::string& raw) { return *t.token_to_id(byte_string(raw)); };
  // "th" has rank 19*26+7 = 501, "he" 7*26+4 = 186: "he" first; no "t"+"he" merge.
  EXPECT_EQ(t.encode("the"), (std::vector<uint32_t>{id("t"), id("he")}));
  // " c" (676+2) vs "ca" (52) vs "at" (19): "at" first, then " c".
  EXPECT_EQ(t.encode(" cat"), (std::vector<uint32_t>{id(" c"), id("at")}));
  // Overlapping occurrences: leftmost first.
  EXPECT_EQ(t.encode("aaa"), (std::vector<uint32_t>{id("aa"), id("a")}));
  EXPECT_EQ(t.encode("aaaa"), (std::vector<uint32_t>{id("aa"), id("aa")}));
  EXPECT_EQ(t.vocab_size(), 256u + st.merges.size() + 1);
  EXPECT_EQ(t.eot_id(), t.vocab_size() - 1);
  EXPECT_EQ(t.num_merges(), st.merges.size());
}

// Straightforward BPE (lowest rank, leftmost) on raw bytes, as the reference
// for words of every length (the tokenizer switches algorithms at 128 bytes).
std::vector<std::string> naive_bpe(const std::string& w,
                                   const std::map<std::pair<std::string, std::string>, size_t>& rank) {
  std::vector<std::string> s;
  for (char c : w) s.emplace_back(1, c);
  while (s.size() > 1) {
    size_t best = SIZE_MAX, at = 0;
    for (size_t i = 0; i + 1 < s.size(); ++i) {
      auto it = rank.find({s[i], s[i + 1]});
      if (it != rank.end() && it->second < best) {
        best = it->second;
        at = i;
      }
    }
    if (best == SIZE_MAX) break;
    s[at] += s[at + 1];
    s.erase(s.begin() + static_cast<ptrdiff_t>(at) + 1);
  }
  return s;
}

TEST(Tokenizer, LongAndShortWordsMatchNaiveBpe) {
  // Merges over a 3-letter alphabet up to length 8, in a shuffled order, so
  // that merge priority matters everywhere.
  SyntheticTokenizer st;
  std::vector<std::string> toks = {"a", "b", "c"};
  std::set<std::string> have(toks.begin(), toks.end());
  std::mt19937 rng(7);
  for (int k = 0; k < 400; ++k) {
    const std::string& x = toks[rng() % toks.size()];
    const std::string& y = toks[rng() % toks.size()];
    if (x.size() + y.size() > 8 || have.count(x + y)) continue;
    st.merges.emplace_back(x, y);
    have.insert(x + y);
    toks.push_back(x + y);
  }
  std::map<std::pair<std::string, std::string>, size_t> rank;
  for (size_t r = 0; r < st.merges.size(); ++r) rank.emplace(st.merges[r], r);
  const Tokenizer t = Tokenizer::from_json(st.json());
  for (int trial = 0; trial < 300; ++trial) {
    const size_t len = 1 + rng() % (trial < 150 ? 60 : 700);
    std::string w;
    for (size_t i = 0; i < len; ++i) w += "abc"[rng() % 3];
    std::vector<uint32_t> want;
    for (const auto& s : naive_bpe(w, rank)) want.push_back(*t.token_to_id(byte_string(s)));
    ASSERT_EQ(t.encode(w), want) << "word of " << len << " letters: " << w;
  }
}

TEST(Tokenizer, RandomBytesRoundTripAndCoverage) {
  const Tokenizer t = Tokenizer::from_json(small_tokenizer().json());
  std::mt19937 rng(11);
  const std::vector<std::string> atoms = {"a",
                                          "b",
                                          "the",
                                          " ",
                                          "  ",
                                          "\t",
                                          "\n",
                                          "'s",
                                          "'",
                                          "1",
                                          "23",
                                          ".",
                                          "!",
                                          "\xc3\xa9",
                                          "\xe4\xb8\xad",
                                          "\xf0\x9f\x98\x80",
                                          "\xc2\xa0",
                                          "\xe3\x80\x80",
                                          "\xcc\x81",
                                          "\xff",
                                          "\x80",
                                          "\xe2\x82",
                                          "\xc3",
                                          "\xed\xa0\x80",
                                          "\x00"};
  for (int trial = 0; trial < 2000; ++trial) {
    std::string s;
    const int n = static_cast<int>(rng() % 40);
    for (int k = 0; k < n; ++k) {
      if (rng() % 4 == 0)
        s += static_cast<char>(rng() % 256);
      else
        s += atoms[rng() % atoms.size()];
    }
    std::string joined;
    for (auto p : t.pretokenize(s)) {
      ASSERT_FALSE(p.empty());
      joined += p;
    }
    ASSERT_EQ(joined, s);
    const auto ids = t.encode(s);
    for (const uint32_t id : ids) ASSERT_LT(id, t.vocab_size());
    ASSERT_EQ(t.decode(ids), s);
  }
}

TEST(Tokenizer, SpecialTokenTextIsOrdinaryText) {
  const Tokenizer t = Tokenizer::from_json(small_tokenizer().json());
  const std::string s = "end<|endoftext|>start <|endoftext|>";
  const auto ids = t.encode(s);
  for (const uint32_t id : ids) EXPECT_NE(id, t.eot_id());
  EXPECT_EQ(t.decode(ids), s);
  EXPECT_EQ(t.decode({t.eot_id()}), "<|endoftext|>");
  EXPECT_EQ(t.token_to_id("<|endoftext|>"), t.eot_id());
}

TEST(Tokenizer, MergeListFormEqualsStringForm) {
  SyntheticTokenizer a = small_tokenizer(), b = small_tokenizer();
  b.list_form = true;
  const Tokenizer ta = Tokenizer::from_json(a.json()), tb = Tokenizer::from_json(b.json());
  const std::string s = "The quick brown fox jumps over the lazy dog's back, 3 times.";
  EXPECT_EQ(ta.encode(s), tb.encode(s));
  EXPECT_EQ(ta.num_merges(), tb.num_merges());
}

TEST(Tokenizer, DigitsSequenceLikeSmolLM) {
  SyntheticTokenizer st = small_tokenizer();
  st.eot_first = true;  // SmolLM: <|endoftext|> is id 0
  st.pre_tokenizer = {
      {"type", "Sequence"},
      {"pretokenizers",
       {{{"type", "Digits"}, {"individual_digits", true}},
        {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}}}}};
  const Tokenizer t = Tokenizer::from_json(st.json());
  EXPECT_EQ(t.eot_id(), 0u);
  EXPECT_EQ(pieces(t, "abc 123"), (V{"abc", " ", "1", "2", "3"}));
  EXPECT_EQ(pieces(t, "v3.11 x"), (V{"v", "3", ".", "1", "1", " x"}));
  st.pre_tokenizer["pretokenizers"][0]["individual_digits"] = false;
  const Tokenizer u = Tokenizer::from_json(st.json());
  EXPECT_EQ(pieces(u, "abc 123x"), (V{"abc", " ", "123", "x"}));
  const std::string s = "In 2024, 49152 tokens.";
  EXPECT_EQ(t.decode(t.encode(s)), s);
}

TEST(Tokenizer, MoreThan65536Ids) {
  const std::string text = "these words have four letter parts that land above the uint16 range when encoded";
  const Tokenizer t = Tokenizer::from_json(large_tokenizer(text).json());
  EXPECT_GT(t.vocab_size(), 65536u);
  const auto ids = t.encode(text);
  uint32_t mx = 0;
  for (const uint32_t id : ids) mx = std::max(mx, id);
  EXPECT_GT(mx, 65535u);
  EXPECT_EQ(t.decode(ids), text);
  EXPECT_EQ(t.eot_id(), t.vocab_size() - 1);
}

TEST(Tokenizer, ConcurrentEncodeIsConsistent) {
  const Tokenizer t = Tokenizer::from_json(small_tokenizer().json());
  std::string text;
  for (int k = 0; k < 2000; ++k) text += "word" + std::to_string(k % 97) + " and more text\n";
  const auto want = t.encode(text);
  std::vector<std::vector<uint32_t>> got(4);
  std::vector<std::thread> th;
  for (int k = 0; k < 4; ++k) th.emplace_back([&, k] { got[k] = t.encode(text); });
  for (auto& x : th) x.join();
  for (const auto& g : got) EXPECT_EQ(g, want);
}

TEST(Tokenizer, RejectsUnsupportedOrBrokenFiles) {
  expect_error<std::runtime_error>([] { Tokenizer::from_json("{not json", "bad.json"); },
                                   {"bad.json", "not valid JSON"});
  expect_error<std::runtime_error>([] { Tokenizer::from_file("/nonexistent/tokenizer.json"); },
                                   {"/nonexistent/tokenizer.json", "cannot open"});
  auto j = nlohmann::json::parse(small_tokenizer().json());
  auto with = [&](auto&& edit) {
    auto k = j;
    edit(k);
    return k.dump();
  };
  expect_error<std::runtime_error>(
      [&] { Tokenizer::from_json(with([](auto& k) { k["model"]["type"] = "WordPiece"; }), "t.json"); },
      {"t.json", "model.type", "WordPiece"});
  expect_error<std::runtime_error>(
      [&] {
        Tokenizer::from_json(with([](auto& k) { k["normalizer"] = {{"type", "NFC"}}; }), "t.json");
      },
      {"normalizer", "NFC"});
  expect_error<std::runtime_error>(
      [&] {
        Tokenizer::from_json(with([](auto& k) { k["pre_tokenizer"] = {{"type", "Whitespace"}}; }), "t.json");
      },
      {"pre_tokenizer", "Whitespace"});
  expect_error<std::runtime_error>(
      [&] { Tokenizer::from_json(with([](auto& k) { k["model"]["merges"].push_back("zz qq"); }), "t.json"); },
      {"model.merges[", "not in model.vocab"});
  expect_error<std::runtime_error>(
      [&] { Tokenizer::from_json(with([](auto& k) { k["model"]["vocab"].erase("a"); }), "t.json"); },
      {"byte-level symbol of byte 97"});
  const Tokenizer t = Tokenizer::from_json(small_tokenizer().json());
  expect_error<std::out_of_range>([&] { t.decode({t.vocab_size()}); }, {"is not a token id"});
}

// Found by tests/fuzz (fuzz_tokenizer); each input is also in tests/fuzz/crashes/tokenizer/.
TEST(Tokenizer, RejectsDuplicateSparseOrMistypedFields) {
  auto j = nlohmann::json::parse(small_tokenizer().json());
  auto with = [&](auto&& edit) {
    auto k = j;
    edit(k);
    return k.dump();
  };
  // Two tokens with one id: encode would emit an id that decodes to the other token's bytes.
  const uint32_t id_b = j["model"]["vocab"]["b"].get<uint32_t>();
  expect_error<std::runtime_error>(
      [&] { Tokenizer::from_json(with([&](auto& k) { k["model"]["vocab"]["a"] = id_b; }), "t.json"); },
      {"t.json", "model.vocab[\"", std::to_string(id_b), "already another token's"});
  // A far-out id would size the id tables by it (4e9 ids: ~130 GB), not by the vocabulary.
  expect_error<std::runtime_error>(
      [&] { Tokenizer::from_json(with([](auto& k) { k["model"]["vocab"]["a"] = 4000000000u; }), "t.json"); },
      {"t.json", "model.vocab[\"a\"] = 4000000000 is not a valid id", "unused ids at most"});
  expect_error<std::runtime_error>(
      [&] { Tokenizer::from_json(with([](auto& k) { k["added_tokens"][0]["id"] = 3000000000u; }), "t.json"); },
      {"t.json", "added_tokens id = 3000000000 is not a valid id"});
  // Gaps in the id space are still fine (decode rejects the unused ids).
  const uint32_t gap = static_cast<uint32_t>(j["model"]["vocab"].size()) + 1000;
  const Tokenizer g = Tokenizer::from_json(with([&](auto& k) { k["added_tokens"][0]["id"] = gap; }), "t.json");
  EXPECT_EQ(g.vocab_size(), gap + 1);
  EXPECT_EQ(g.decode({gap}), "<|endoftext|>");
  // A field of the wrong JSON type is a runtime_error naming the file, not nlohmann's type_error.
  expect_error<std::runtime_error>(
      [&] { Tokenizer::from_json(with([](auto& k) { k["normalizer"] = "NFC"; }), "t.json"); },
      {"t.json", "unexpected structure"});
  expect_error<std::runtime_error>(
      [&] { Tokenizer::from_json(with([](auto& k) { k["model"]["type"] = 7; }), "t.json"); }, {"t.json"});
}

TEST(Tokenizer, DirectoryIsNotATokenizerFile) {
  testing::TempDir dir;
  expect_error<std::runtime_error>([&] { Tokenizer::from_file(dir.path()); }, {dir.path(), "is a directory"});
}

}  // namespace
}  // namespace mor::io
