// Synthetic Hugging Face tokenizer.json files for the tokenizer / prepare tests.
#pragma once

#include <array>
#include <cstdint>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <unordered_map>
#include <algorithm>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace mor::io::testing {

// GPT-2's bytes_to_unicode(): byte -> its printable stand-in, as UTF-8.
inline std::array<std::string, 256> byte_symbols() {
  std::array<std::string, 256> s;
  std::array<bool, 256> direct{};
  for (int b = '!'; b <= '~'; ++b) direct[b] = true;
  for (int b = 0xA1; b <= 0xAC; ++b) direct[b] = true;
  for (int b = 0xAE; b <= 0xFF; ++b) direct[b] = true;
  unsigned n = 0;
  for (int b = 0; b < 256; ++b) {
    const unsigned cp = direct[b] ? static_cast<unsigned>(b) : 256 + n++;
    std::string u;
    if (cp < 0x80) {
      u += static_cast<char>(cp);
    } else {
      u += static_cast<char>(0xC0 | (cp >> 6));
      u += static_cast<char>(0x80 | (cp & 0x3F));
    }
    s[b] = u;
  }
  return s;
}

inline std::string byte_string(const std::string& raw) {
  static const auto sym = byte_symbols();
  std::string out;
  for (const unsigned char c : raw) out += sym[c];
  return out;
}

struct SyntheticTokenizer {
  // Merges as raw byte strings (left, right), in rank order; each creates the
  // token left + right (which must not exist yet).
  std::vector<std::pair<std::string, std::string>> merges;
  // The first `high_id_merges` merges (lowest ranks) get the largest ids
  // (ids and ranks are independent in tokenizer.json).
  size_t high_id_merges = 0;
  bool list_form = false;  // merges as [a, b] instead of "a b"
  bool eot_first = false;  // <|endoftext|> is id 0 (else the last id)
  nlohmann::json pre_tokenizer = {
      {"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}};

  std::string json() const {
    std::unordered_map<std::string, uint32_t> ids;  // byte-level string -> id
    uint32_t next = 0;
    if (eot_first) ids["<|endoftext|>"] = next++;
    for (int b = 0; b < 256; ++b) ids[byte_symbols()[b]] = next++;
    // Ids: the high-id merges are numbered last; creation order must still let
    // every merge find its parts, so check parts over the rank order first.
    {
      std::unordered_map<std::string, uint32_t> probe = ids;
      for (const auto& [a, b] : merges) {
        const std::string sa = byte_string(a), sb = byte_string(b), sab = byte_string(a + b);
        if (!probe.count(sa) || !probe.count(sb)) throw std::logic_error("merge of unknown token " + a + "|" + b);
        if (probe.count(sab)) throw std::logic_error("duplicate merge result " + a + b);
        probe[sab] = 0;
      }
    }
    for (size_t k = high_id_merges; k < merges.size(); ++k) {
      const std::string sab = byte_string(merges[k].first + merges[k].second);
      ids[sab] = next++;
    }
    for (size_t k = 0; k < std::min(high_id_merges, merges.size()); ++k) {
      const std::string sab = byte_string(merges[k].first + merges[k].second);
      ids[sab] = next++;
    }
    uint32_t eot = 0;
    if (!eot_first) {
      eot = next++;
      ids["<|endoftext|>"] = eot;
    }
    nlohmann::json vocab = nlohmann::json::object();
    for (const auto& [k, v] : ids) vocab[k] = v;
    nlohmann::json ml = nlohmann::json::array();
    for (const auto& [a, b] : merges) {
      if (list_form)
        ml.push_back({byte_string(a), byte_string(b)});
      else
        ml.push_back(byte_string(a) + " " + byte_string(b));
    }
    nlohmann::ordered_json j;
    j["version"] = "1.0";
    j["added_tokens"] = {{{"id", eot}, {"content", "<|endoftext|>"}, {"special", true}}};
    j["normalizer"] = nullptr;
    j["pre_tokenizer"] = pre_tokenizer;
    j["decoder"] = {{"type", "ByteLevel"}};
    j["model"] = {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr}, {"vocab", vocab}, {"merges", ml}};
    return j.dump();
  }

  void write(const std::string& path) const {
    std::ofstream f(path, std::ios::binary);
    f << json();
    if (!f) throw std::runtime_error("cannot write " + path);
  }
};

// A small English-ish vocabulary: every pair of lowercase letters, then a
// space before every letter and before every pair ("th", " t", " th").
inline SyntheticTokenizer small_tokenizer() {
  SyntheticTokenizer t;
  for (char a = 'a'; a <= 'z'; ++a)
    for (char b = 'a'; b <= 'z'; ++b) t.merges.emplace_back(std::string(1, a), std::string(1, b));
  for (char a = 'a'; a <= 'z'; ++a) t.merges.emplace_back(" ", std::string(1, a));
  for (char a = 'a'; a <= 'z'; ++a)
    for (char b = 'a'; b <= 'z'; ++b) t.merges.emplace_back(std::string{' ', a}, std::string(1, b));
  return t;
}

// More than 65536 ids (uint32 shards): the lowercase words of `text` as
// left-to-right merge chains with the lowest ranks but ids above 65535, then
// filler merges (letter pairs, triples, "abc"+q/x/z/j) to push the ids up.
inline SyntheticTokenizer large_tokenizer(const std::string& text) {
  SyntheticTokenizer t;
  std::set<std::string> have;
  auto add = [&](const std::string& a, const std::string& b) {
    if (have.insert(a + b).second) t.merges.emplace_back(a, b);
  };
  for (size_t i = 0; i < text.size();) {
    size_t j = i;
    while (j < text.size() && text[j] >= 'a' && text[j] <= 'z') ++j;
    for (size_t k = i + 2; k <= j; ++k) add(text.substr(i, k - i - 1), text.substr(k - 1, 1));
    i = j == i ? i + 1 : j;
  }
  t.high_id_merges = t.merges.size();
  const std::string L = "abcdefghijklmnopqrstuvwxyz";
  for (char a : L)
    for (char b : L) add(std::string(1, a), std::string(1, b));
  for (char a : L)
    for (char b : L)
      for (char c : L) add(std::string{a, b}, std::string(1, c));
  for (char a : L)
    for (char b : L)
      for (char c : L)
        for (char d : std::string("qxzj"))
          if (256 + t.merges.size() - t.high_id_merges < 65536) add(std::string{a, b, c}, std::string(1, d));
  return t;
}

inline std::string read_text_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot read " + path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

}  // namespace mor::io::testing
