// Loading a Hugging Face tokenizer.json: one function per section (model options, normalizer,
// pre-tokenizer, vocabulary, added tokens, merges), each check naming the field it rejects.
#include "io/data/tokenizer_json.h"

#include <nlohmann/json.hpp>
#include <stdexcept>

#include "io/data/tokenizer.h"  // utf8_sequence_length

namespace mor::io::tok {

namespace {

using json = nlohmann::json;

// GPT-2's bytes_to_unicode(): byte -> code point of its printable stand-in.
std::array<uint32_t, 256> byte_to_unicode() {
  std::array<uint32_t, 256> m{};
  std::array<bool, 256> direct{};
  for (int b = '!'; b <= '~'; ++b) direct[b] = true;
  for (int b = 0xA1; b <= 0xAC; ++b) direct[b] = true;
  for (int b = 0xAE; b <= 0xFF; ++b) direct[b] = true;
  uint32_t n = 0;
  for (int b = 0; b < 256; ++b) m[b] = direct[b] ? static_cast<uint32_t>(b) : 256 + n++;
  return m;
}

std::string utf8_encode(uint32_t cp) {
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else if (cp < 0x800) {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    s += static_cast<char>(0xE0 | (cp >> 12));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    s += static_cast<char>(0xF0 | (cp >> 18));
    s += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return s;
}

// o[key] without copying, or null when absent.
const json& field(const json& o, const char* key) {
  static const json null_value;
  if (!o.is_object()) return null_value;
  auto it = o.find(key);
  return it == o.end() ? null_value : *it;
}

// How far ids may run past the number of vocab + added_tokens entries (gaps in the id space).
constexpr uint64_t kIdSlack = 65536;

constexpr const char* kGpt2Pattern =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

// Reads one tokenizer.json section at a time into spec_, in the order the checks always ran
// (the first problem found is the one reported).
class SpecParser {
 public:
  explicit SpecParser(const std::string& name) : name_(name) {}

  TokenizerSpec run(std::string_view text) {
    json j;
    try {
      j = json::parse(text.begin(), text.end());
    } catch (const json::exception& e) {
      fail(std::string("not valid JSON: ") + e.what());
    }
    if (!j.is_object()) fail("not a JSON object");
    const json* model = j.contains("model") ? &j["model"] : nullptr;
    if (!model || !model->is_object()) fail("no \"model\" object");
    model_options(*model);
    if (j.contains("normalizer") && !j["normalizer"].is_null())
      fail("normalizer \"" + j["normalizer"].value("type", std::string("?")) + "\" is not supported (only null)");
    pre_tokenizer(j);
    vocab(j, *model);
    added_tokens(j);
    spec_.vocab_size = static_cast<uint32_t>(spec_.id_bytes.size());
    for (const char* name : {"<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>"}) {
      auto it = spec_.str_to_id.find(name);
      if (it != spec_.str_to_id.end()) {
        spec_.eot = it->second;
        break;
      }
    }
    merges(*model);
    return std::move(spec_);
  }

 private:
  [[noreturn]] void fail(const std::string& what) const { throw std::runtime_error(name_ + ": " + what); }

  // model.type, dropout, subword affixes, ignore_merges.
  void model_options(const json& model) {
    auto is_null_or = [](const json& o, const char* key, auto&& ok) {
      return !o.contains(key) || o[key].is_null() || ok(o[key]);
    };
    const std::string mtype = model.value("type", std::string("BPE"));
    if (mtype != "BPE") fail("model.type \"" + mtype + "\" is not supported (only BPE)");
    if (!is_null_or(model, "dropout", [](const json& v) { return v.is_number() && v.get<double>() == 0.0; }))
      fail("model.dropout is not supported");
    for (const char* k : {"continuing_subword_prefix", "end_of_word_suffix"})
      if (!is_null_or(model, k, [](const json& v) { return v.is_string() && v.get<std::string>().empty(); }))
        fail(std::string("model.") + k + " is not supported");
    spec_.ignore_merges =
        model.contains("ignore_merges") && model["ignore_merges"].is_boolean() && model["ignore_merges"].get<bool>();
  }

  void pre_tokenizer(const json& j) {
    if (!j.contains("pre_tokenizer") || j["pre_tokenizer"].is_null())
      fail("no pre_tokenizer (a byte-level BPE tokenizer.json has ByteLevel)");
    const json& p = j["pre_tokenizer"];
    if (p.value("type", std::string()) != "Sequence") return pre_tokenizer_step(p, true);
    const json& list = field(p, "pretokenizers");
    if (!list.is_array()) fail("pre_tokenizer.Sequence without a pretokenizers list");
    bool first = true;
    for (const json& q : list) {
      pre_tokenizer_step(q, first);
      first = false;
    }
  }

  void pre_tokenizer_step(const json& p, bool first) {
    const std::string type = p.value("type", std::string());
    if (type == "ByteLevel") {
      if (p.value("add_prefix_space", false)) {
        if (!first) fail("pre_tokenizer: ByteLevel.add_prefix_space is supported only as the first step");
        spec_.add_prefix_space = true;
      }
      if (p.value("use_regex", true)) spec_.steps.push_back(PreStep::kGpt2);
    } else if (type == "Digits") {
      spec_.steps.push_back(p.value("individual_digits", false) ? PreStep::kDigitsIndividual : PreStep::kDigitsRuns);
    } else if (type == "Split") {
      const json& pat = field(p, "pattern");
      const std::string re = pat.is_object() ? pat.value("Regex", std::string()) : std::string();
      if (re != kGpt2Pattern || p.value("behavior", std::string()) != "Isolated" || p.value("invert", false))
        fail("pre_tokenizer: Split is supported only with GPT-2's regex, behavior Isolated");
      spec_.steps.push_back(PreStep::kGpt2);
    } else {
      fail("pre_tokenizer \"" + type + "\" is not supported (ByteLevel, Digits, Split, Sequence)");
    }
  }

  // The bytes a byte-level vocab string stands for; nullopt when it is not made of byte symbols.
  std::optional<std::string> raw_bytes(const std::string& s) const {
    std::string out;
    const auto* p = reinterpret_cast<const unsigned char*>(s.data());
    size_t i = 0;
    while (i < s.size()) {
      const size_t l = utf8_sequence_length(p + i, s.size() - i);
      if (l == 0) return std::nullopt;
      uint32_t cp = p[i];
      if (l == 2)
        cp = ((p[i] & 0x1Fu) << 6) | (p[i + 1] & 0x3Fu);
      else if (l == 3)
        cp = ((p[i] & 0x0Fu) << 12) | ((p[i + 1] & 0x3Fu) << 6) | (p[i + 2] & 0x3Fu);
      else if (l == 4)
        cp = ((p[i] & 0x07u) << 18) | ((p[i + 1] & 0x3Fu) << 12) | ((p[i + 2] & 0x3Fu) << 6) | (p[i + 3] & 0x3Fu);
      if (cp >= u2b_.size() || u2b_[cp] < 0) return std::nullopt;
      out += static_cast<char>(u2b_[cp]);
      i += l;
    }
    return out;
  }

  void check_id(const std::string& where, int64_t id) const {
    if (id < 0 || static_cast<uint64_t>(id) > max_id_)
      fail(where + " = " + std::to_string(id) + " is not a valid id: ids must be in [0, " + std::to_string(max_id_) +
           "] (the " + std::to_string(entries_) + " vocab and added_tokens entries + " + std::to_string(kIdSlack) +
           " unused ids at most)");
  }

  void set_id(uint32_t id, std::string bytes) {
    if (id >= spec_.id_bytes.size()) {
      spec_.id_bytes.resize(static_cast<size_t>(id) + 1);
      spec_.id_known.resize(static_cast<size_t>(id) + 1, 0);
    }
    spec_.id_bytes[id] = std::move(bytes);
    spec_.id_known[id] = 1;
  }

  // model.vocab, then the id of every byte symbol.
  void vocab(const json& j, const json& model) {
    const auto b2u = byte_to_unicode();
    u2b_.fill(-1);
    for (int b = 0; b < 256; ++b) u2b_[b2u[b]] = b;
    // Ids index arrays sized by the largest one: a sparse id (a typo, a corrupt file) must not
    // allocate gigabytes. Real vocabularies are dense; this leaves room for any gaps they have.
    entries_ = field(model, "vocab").size() +
               (j.contains("added_tokens") && j["added_tokens"].is_array() ? j["added_tokens"].size() : 0);
    max_id_ = static_cast<uint64_t>(entries_) + kIdSlack;
    const json& vocab = field(model, "vocab");
    if (!vocab.is_object() || vocab.empty()) fail("model.vocab is missing or empty");
    vocab_id_.reserve(vocab.size() * 2);
    spec_.str_to_id.reserve(vocab.size() * 2);
    spec_.bytes_to_id.reserve(vocab.size() * 2);
    for (auto it = vocab.begin(); it != vocab.end(); ++it) {
      if (!it.value().is_number_integer()) fail("model.vocab[\"" + it.key() + "\"] is not an integer id");
      check_id("model.vocab[\"" + it.key() + "\"]", it.value().get<int64_t>());
      const auto id = static_cast<uint32_t>(it.value().get<int64_t>());
      // Two tokens with one id: encode would emit an id that decodes to the other's bytes.
      if (id < spec_.id_known.size() && spec_.id_known[id])
        fail("model.vocab[\"" + it.key() + "\"] = " + std::to_string(id) + ": that id is already another token's");
      auto raw = raw_bytes(it.key());
      std::string bytes = raw ? *raw : it.key();
      if (raw) spec_.bytes_to_id.emplace(bytes, id);
      set_id(id, std::move(bytes));
      spec_.str_to_id.emplace(it.key(), id);
      vocab_id_.emplace(it.key(), id);
    }
    for (int b = 0; b < 256; ++b) {
      auto it = spec_.str_to_id.find(utf8_encode(b2u[b]));
      if (it == spec_.str_to_id.end())
        fail("model.vocab lacks the byte-level symbol of byte " + std::to_string(b) + " (\"" + utf8_encode(b2u[b]) +
             "\")");
      spec_.byte_id[b] = it->second;
    }
  }

  void added_tokens(const json& j) {
    if (!j.contains("added_tokens") || !j["added_tokens"].is_array()) return;
    for (const json& a : j["added_tokens"]) {
      if (!a.is_object() || !a.contains("id") || !a["id"].is_number_integer() || !a.contains("content") ||
          !a["content"].is_string())
        fail("added_tokens: an entry lacks an integer \"id\" or a string \"content\"");
      const int64_t id = a["id"].get<int64_t>();
      check_id("added_tokens id", id);
      const std::string content = a["content"].get<std::string>();
      const auto uid = static_cast<uint32_t>(id);
      if (uid >= spec_.id_known.size() || !spec_.id_known[uid]) set_id(uid, content);
      spec_.str_to_id.emplace(content, uid);
    }
  }

  void merges(const json& model) {
    const json& mlist = field(model, "merges");
    if (!mlist.is_array()) fail("model.merges is missing or not a list");
    spec_.merges.reserve(mlist.size());
    size_t rank = 0;
    for (const json& m : mlist) {
      std::string a, b;
      if (m.is_string()) {
        const std::string s = m.get<std::string>();
        const size_t sp = s.find(' ');
        if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
          fail("model.merges[" + std::to_string(rank) + "] \"" + s + "\" is not two tokens separated by one space");
        a = s.substr(0, sp);
        b = s.substr(sp + 1);
      } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
        a = m[0].get<std::string>();
        b = m[1].get<std::string>();
      } else {
        fail("model.merges[" + std::to_string(rank) + "] is neither \"a b\" nor [\"a\", \"b\"]");
      }
      auto ia = vocab_id_.find(a), ib = vocab_id_.find(b), iab = vocab_id_.find(a + b);
      if (ia == vocab_id_.end() || ib == vocab_id_.end() || iab == vocab_id_.end())
        fail("model.merges[" + std::to_string(rank) + "] (\"" + a + "\", \"" + b + "\"): " +
             (ia == vocab_id_.end()   ? a
              : ib == vocab_id_.end() ? b
                                      : a + b) +
             " is not in model.vocab");
      spec_.merges.push_back({ia->second, ib->second, iab->second});
      ++rank;
    }
  }

  const std::string& name_;
  TokenizerSpec spec_;
  std::array<int, 512> u2b_;  // code point of a byte symbol -> byte (all are < 512)
  size_t entries_ = 0;        // vocab + added_tokens entries
  uint64_t max_id_ = 0;
  std::unordered_map<std::string, uint32_t> vocab_id_;  // model.vocab only (what merges refer to)
};

}  // namespace

TokenizerSpec parse_tokenizer_json(std::string_view text, const std::string& name) {
  return SpecParser(name).run(text);
}

}  // namespace mor::io::tok
