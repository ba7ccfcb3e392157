#include "io/data/tokenizer.h"

#include <unicode/uchar.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <queue>
#include <sstream>
#include <stdexcept>
#include <unordered_map>

#include "io/data/tokenizer_json.h"

namespace mor::io {

using json = nlohmann::json;

// ---- UTF-8 ----------------------------------------------------------------------------

size_t utf8_sequence_length(const unsigned char* p, size_t n) {
  const unsigned c = p[0];
  if (c < 0x80) return 1;
  auto cont = [&](size_t k, unsigned lo = 0x80, unsigned hi = 0xBF) { return k < n && p[k] >= lo && p[k] <= hi; };
  if (c >= 0xC2 && c <= 0xDF) return cont(1) ? 2 : 0;
  if (c == 0xE0) return cont(1, 0xA0) && cont(2) ? 3 : 0;
  if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) return cont(1) && cont(2) ? 3 : 0;
  if (c == 0xED) return cont(1, 0x80, 0x9F) && cont(2) ? 3 : 0;
  if (c == 0xF0) return cont(1, 0x90) && cont(2) && cont(3) ? 4 : 0;
  if (c >= 0xF1 && c <= 0xF3) return cont(1) && cont(2) && cont(3) ? 4 : 0;
  if (c == 0xF4) return cont(1, 0x80, 0x8F) && cont(2) && cont(3) ? 4 : 0;
  return 0;
}

size_t utf8_first_invalid(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    if (p[i] < 0x80) {
      ++i;
      continue;
    }
    const size_t l = utf8_sequence_length(p + i, n - i);
    if (l == 0) return i;
    i += l;
  }
  return n;
}

namespace {

// ---- code-point classes (ICU) --------------------------------------------------------

enum CpClass : uint8_t { kOther = 0, kLetter = 1, kNumber = 2, kSpace = 3 };

// Two-stage table over all code points, built once from ICU: stage 1 maps a
// 256-code-point block to a deduplicated stage-2 block of classes.
struct ClassTable {
  std::vector<uint16_t> index;  // 0x1100 blocks
  std::vector<uint8_t> blocks;  // 256 classes per distinct block
  uint8_t ascii[128];

  uint8_t get(uint32_t cp) const { return blocks[(static_cast<size_t>(index[cp >> 8]) << 8) | (cp & 0xFF)]; }
};

uint8_t icu_class(UChar32 cp) {
  if (u_isUWhiteSpace(cp)) return kSpace;
  switch (u_charType(cp)) {
    case U_UPPERCASE_LETTER:
    case U_LOWERCASE_LETTER:
    case U_TITLECASE_LETTER:
    case U_MODIFIER_LETTER:
    case U_OTHER_LETTER:
      return kLetter;
    case U_DECIMAL_DIGIT_NUMBER:
    case U_LETTER_NUMBER:
    case U_OTHER_NUMBER:
      return kNumber;
    default:
      return kOther;
  }
}

const ClassTable& class_table() {
  static const ClassTable table = [] {
    ClassTable t;
    t.index.resize(0x1100);
    std::map<std::array<uint8_t, 256>, uint16_t> seen;
    for (uint32_t b = 0; b < 0x1100; ++b) {
      std::array<uint8_t, 256> blk{};
      for (uint32_t k = 0; k < 256; ++k) blk[k] = icu_class(static_cast<UChar32>((b << 8) | k));
      auto [it, fresh] = seen.try_emplace(blk, static_cast<uint16_t>(seen.size()));
      if (fresh) t.blocks.insert(t.blocks.end(), blk.begin(), blk.end());
      t.index[b] = it->second;
    }
    for (uint32_t c = 0; c < 128; ++c) t.ascii[c] = t.get(c);
    return t;
  }();
  return table;
}

// Class and byte length of the code point at s[i] (i < end); an ill-formed
// byte is one code point of class kOther.
struct Cp {
  uint8_t cls;
  uint8_t len;
};

inline Cp cp_at(const ClassTable& t, const unsigned char* s, size_t i, size_t end) {
  const unsigned c = s[i];
  if (c < 0x80) return {t.ascii[c], 1};
  const size_t l = utf8_sequence_length(s + i, end - i);
  if (l == 0) return {kOther, 1};
  uint32_t cp;
  if (l == 2)
    cp = ((c & 0x1Fu) << 6) | (s[i + 1] & 0x3Fu);
  else if (l == 3)
    cp = ((c & 0x0Fu) << 12) | ((s[i + 1] & 0x3Fu) << 6) | (s[i + 2] & 0x3Fu);
  else
    cp = ((c & 0x07u) << 18) | ((s[i + 1] & 0x3Fu) << 12) | ((s[i + 2] & 0x3Fu) << 6) | (s[i + 3] & 0x3Fu);
  return {t.get(cp), static_cast<uint8_t>(l)};
}

// GPT-2's pattern over s[begin, end), leftmost-first alternation:
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
template <class Emit>
void split_gpt2(const ClassTable& t, const unsigned char* s, size_t begin, size_t end, Emit&& emit) {
  size_t i = begin;
  while (i < end) {
    const unsigned char b = s[i];
    if (b == '\'' && i + 1 < end) {
      const unsigned char c1 = s[i + 1];
      size_t l = 0;
      if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') {
        l = 2;
      } else if (i + 2 < end) {
        const unsigned char c2 = s[i + 2];
        if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l')) l = 3;
      }
      if (l) {
        emit(i, i + l);
        i += l;
        continue;
      }
    }
    const Cp c = cp_at(t, s, i, end);
    uint8_t run;
    size_t j;
    if (b == ' ' && i + 1 < end) {
      const Cp d = cp_at(t, s, i + 1, end);
      if (d.cls != kSpace) {
        run = d.cls;
        j = i + 1 + d.len;
        goto extend;
      }
    }
    if (c.cls != kSpace) {
      run = c.cls;
      j = i + c.len;
      goto extend;
    }
    {  // \s+(?!\S) | \s+
      size_t last = i;
      j = i + c.len;
      while (j < end) {
        const Cp d = cp_at(t, s, j, end);
        if (d.cls != kSpace) break;
        last = j;
        j += d.len;
      }
      if (j < end && last > i) j = last;  // leave the last space to the next word
      emit(i, j);
      i = j;
      continue;
    }
  extend:
    while (j < end) {
      const Cp d = cp_at(t, s, j, end);
      if (d.cls != run) break;
      j += d.len;
    }
    emit(i, j);
    i = j;
  }
}

// Hugging Face Digits pre-tokenizer: numbers (\p{N}, Rust char::is_numeric)
// isolated, one code point each (individual) or as runs.
template <class Emit>
void split_digits(const ClassTable& t, const unsigned char* s, size_t begin, size_t end, bool individual, Emit&& emit) {
  size_t i = begin;
  while (i < end) {
    const Cp c = cp_at(t, s, i, end);
    size_t j = i + c.len;
    if (c.cls == kNumber) {
      if (!individual) {
        while (j < end) {
          const Cp d = cp_at(t, s, j, end);
          if (d.cls != kNumber) break;
          j += d.len;
        }
      }
    } else {
      while (j < end) {
        const Cp d = cp_at(t, s, j, end);
        if (d.cls == kNumber) break;
        j += d.len;
      }
    }
    emit(i, j);
    i = j;
  }
}

// ---- hashing, merge table, word cache ---------------------------------------------------

inline uint64_t mix(uint64_t h) {
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ull;
  h ^= h >> 33;
  return h;
}

inline uint64_t hash_bytes(const unsigned char* p, size_t n) {
  uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0x100000001B3ull);
  while (n >= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    h = (h ^ w) * 0x9FB21C651E98DF25ull;
    h ^= h >> 29;
    p += 8;
    n -= 8;
  }
  uint64_t w = 0;
  for (size_t k = 0; k < n; ++k) w |= static_cast<uint64_t>(p[k]) << (8 * k);
  h = (h ^ w) * 0x9FB21C651E98DF25ull;
  return mix(h) | 1;  // never 0 (0 marks an empty cache slot)
}

// (left id, right id) -> (rank, merged id); open addressing, linear probing.
class MergeTable {
 public:
  static constexpr uint32_t kNone = UINT32_MAX;
  struct Hit {
    uint32_t rank = kNone;
    uint32_t id = 0;
  };
  void build(const std::vector<std::array<uint32_t, 3>>& merges) {  // {a, b, new id}, in rank order
    size_t cap = 16;
    while (cap < merges.size() * 2) cap <<= 1;
    slots_.assign(cap, Slot{});
    mask_ = cap - 1;
    for (size_t r = 0; r < merges.size(); ++r) {
      const uint64_t key = (static_cast<uint64_t>(merges[r][0]) << 32) | merges[r][1];
      size_t k = mix(key) & mask_;
      while (slots_[k].key != kEmpty && slots_[k].key != key) k = (k + 1) & mask_;
      if (slots_[k].key == key) continue;  // a repeated pair keeps its first (lowest) rank
      slots_[k] = Slot{key, static_cast<uint32_t>(r), merges[r][2]};
    }
  }
  inline Hit find(uint32_t a, uint32_t b) const {
    const uint64_t key = (static_cast<uint64_t>(a) << 32) | b;
    size_t k = mix(key) & mask_;
    while (true) {
      const Slot& s = slots_[k];
      if (s.key == key) return {s.rank, s.id};
      if (s.key == kEmpty) return {};
      k = (k + 1) & mask_;
    }
  }

 private:
  static constexpr uint64_t kEmpty = ~0ull;
  struct Slot {
    uint64_t key = kEmpty;
    uint32_t rank = 0;
    uint32_t id = 0;
  };
  std::vector<Slot> slots_;
  size_t mask_ = 0;
};

// Word bytes -> token ids; cleared when full. One per thread and tokenizer
// (L1, no locking) plus a shared, lock-striped one per tokenizer (L2) so that
// threads do not each redo the BPE of every word the others have seen.
class WordCache {
 public:
  static constexpr size_t kMaxWordBytes = 128;
  explicit WordCache(size_t max_entries = size_t{1} << 18) : max_entries_(max_entries) {}

  bool find(const unsigned char* w, size_t n, uint64_t h, const uint32_t*& ids, size_t& count) const {
    if (slots_.empty()) return false;
    size_t k = h & mask_;
    while (true) {
      const Slot& s = slots_[k];
      if (s.hash == 0) return false;
      if (s.hash == h && s.key_len == n && std::memcmp(keys_.data() + s.key_off, w, n) == 0) {
        ids = vals_.data() + s.val_off;
        count = s.val_len;
        return true;
      }
      k = (k + 1) & mask_;
    }
  }
  void insert(const unsigned char* w, size_t n, uint64_t h, const uint32_t* ids, size_t count) {
    if (used_ + 1 > max_entries_) clear();
    if (slots_.empty() || (used_ + 1) * 2 > slots_.size()) grow();
    size_t k = h & mask_;
    while (slots_[k].hash != 0) k = (k + 1) & mask_;
    slots_[k] = Slot{h, static_cast<uint32_t>(keys_.size()), static_cast<uint32_t>(n),
                     static_cast<uint32_t>(vals_.size()), static_cast<uint32_t>(count)};
    keys_.insert(keys_.end(), w, w + n);
    vals_.insert(vals_.end(), ids, ids + count);
    ++used_;
  }
  void clear() {
    slots_.clear();
    keys_.clear();
    vals_.clear();
    used_ = 0;
    mask_ = 0;
  }

 private:
  struct Slot {
    uint64_t hash = 0;
    uint32_t key_off = 0, key_len = 0, val_off = 0, val_len = 0;
  };
  void grow() {
    const size_t cap = slots_.empty() ? 4096 : slots_.size() * 2;
    std::vector<Slot> old;
    old.swap(slots_);
    slots_.assign(cap, Slot{});
    mask_ = cap - 1;
    for (const Slot& s : old) {
      if (s.hash == 0) continue;
      size_t k = s.hash & mask_;
      while (slots_[k].hash != 0) k = (k + 1) & mask_;
      slots_[k] = s;
    }
  }
  size_t max_entries_;
  std::vector<Slot> slots_;
  size_t mask_ = 0;
  size_t used_ = 0;
  std::vector<unsigned char> keys_;
  std::vector<uint32_t> vals_;
};

std::atomic<uint64_t> g_serial{1};

}  // namespace

// ---- the tokenizer ---------------------------------------------------------------------

struct Tokenizer::Impl {
  using Step = tok::PreStep;

  std::string name;
  uint64_t serial = 0;
  const ClassTable* classes = nullptr;
  std::vector<Step> steps;
  bool add_prefix_space = false;
  bool ignore_merges = false;
  uint32_t vocab_size = 0;
  std::optional<uint32_t> eot;
  std::array<uint32_t, 256> byte_id{};
  std::vector<std::string> id_bytes;  // raw bytes of every id
  std::vector<uint8_t> id_known;
  std::unordered_map<std::string, uint32_t> str_to_id;    // tokenizer.json strings
  std::unordered_map<std::string, uint32_t> bytes_to_id;  // raw bytes of model.vocab tokens
  MergeTable merges;
  size_t num_merges = 0;
  struct SharedStripe {
    std::mutex mu;
    WordCache cache{size_t{1} << 14};
  };
  static constexpr int kStripeBits = 6;
  mutable std::array<SharedStripe, size_t{1} << kStripeBits> shared;  // L2, by the top hash bits

  [[noreturn]] void fail(const std::string& what) const { throw std::runtime_error(name + ": " + what); }

  // Pre-tokenization pipeline: steps[k] splits the pieces of steps[k - 1].
  template <class Emit>
  void split(size_t k, const unsigned char* s, size_t begin, size_t end, Emit& emit) const {
    if (begin >= end) return;
    if (k == steps.size()) {
      emit(begin, end);
      return;
    }
    auto next = [&](size_t b, size_t e) { split(k + 1, s, b, e, emit); };
    switch (steps[k]) {
      case Step::kGpt2:
        split_gpt2(*classes, s, begin, end, next);
        break;
      case Step::kDigitsIndividual:
        split_digits(*classes, s, begin, end, true, next);
        break;
      case Step::kDigitsRuns:
        split_digits(*classes, s, begin, end, false, next);
        break;
    }
  }

  // BPE of one pre-token: lowest merge rank first, leftmost on ties.
  void bpe(const unsigned char* w, size_t n, std::vector<uint32_t>& out) const {
    if (n == 1) {
      out.push_back(byte_id[w[0]]);
      return;
    }
    if (ignore_merges) {
      auto it = bytes_to_id.find(std::string(reinterpret_cast<const char*>(w), n));
      if (it != bytes_to_id.end()) {
        out.push_back(it->second);
        return;
      }
    }
    if (n <= 128)
      bpe_small(w, n, out);
    else
      bpe_large(w, n, out);
  }

  void bpe_small(const unsigned char* w, size_t n, std::vector<uint32_t>& out) const {
    uint32_t ids[128], rank[128], nid[128];
    size_t m = n;
    for (size_t i = 0; i < n; ++i) ids[i] = byte_id[w[i]];
    for (size_t i = 0; i + 1 < m; ++i) {
      const MergeTable::Hit h = merges.find(ids[i], ids[i + 1]);
      rank[i] = h.rank;
      nid[i] = h.id;
    }
    while (m > 1) {
      size_t best = 0;
      uint32_t best_rank = MergeTable::kNone;
      for (size_t i = 0; i + 1 < m; ++i)
        if (rank[i] < best_rank) {
          best_rank = rank[i];
          best = i;
        }
      if (best_rank == MergeTable::kNone) break;
      ids[best] = nid[best];
      const size_t tail = m - best - 2;  // symbols after the removed one
      std::memmove(ids + best + 1, ids + best + 2, tail * sizeof(uint32_t));
      std::memmove(rank + best + 1, rank + best + 2, (tail > 0 ? tail - 1 : 0) * sizeof(uint32_t));
      std::memmove(nid + best + 1, nid + best + 2, (tail > 0 ? tail - 1 : 0) * sizeof(uint32_t));
      --m;
      if (best > 0) {
        const MergeTable::Hit h = merges.find(ids[best - 1], ids[best]);
        rank[best - 1] = h.rank;
        nid[best - 1] = h.id;
      }
      if (best + 1 < m) {
        const MergeTable::Hit h = merges.find(ids[best], ids[best + 1]);
        rank[best] = h.rank;
        nid[best] = h.id;
      }
    }
    out.insert(out.end(), ids, ids + m);
  }

  // Long words: a heap of candidate pairs ordered by (rank, position) over a
  // linked list of symbols (O(n log n)); same result as bpe_small.
  void bpe_large(const unsigned char* w, size_t n, std::vector<uint32_t>& out) const {
    struct Sym {
      uint32_t id;
      int64_t prev, next;
      bool alive;
    };
    struct Cand {
      uint32_t rank;
      uint64_t pos;
      uint32_t left, right;  // ids the pair had when pushed
      bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
    };
    std::vector<Sym> sym(n);
    for (size_t i = 0; i < n; ++i)
      sym[i] = Sym{byte_id[w[i]], static_cast<int64_t>(i) - 1, i + 1 < n ? static_cast<int64_t>(i + 1) : -1, true};
    std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> heap;
    auto push = [&](int64_t i) {
      if (i < 0 || sym[i].next < 0) return;
      const MergeTable::Hit h = merges.find(sym[i].id, sym[sym[i].next].id);
      if (h.rank != MergeTable::kNone)
        heap.push(Cand{h.rank, static_cast<uint64_t>(i), sym[i].id, sym[sym[i].next].id});
    };
    for (size_t i = 0; i + 1 < n; ++i) push(static_cast<int64_t>(i));
    while (!heap.empty()) {
      const Cand c = heap.top();
      heap.pop();
      Sym& a = sym[c.pos];
      if (!a.alive || a.next < 0 || a.id != c.left || sym[a.next].id != c.right) continue;  // stale
      const MergeTable::Hit h = merges.find(a.id, sym[a.next].id);
      Sym& b = sym[a.next];
      a.id = h.id;
      b.alive = false;
      a.next = b.next;
      if (b.next >= 0) sym[b.next].prev = static_cast<int64_t>(c.pos);
      push(a.prev);
      push(static_cast<int64_t>(c.pos));
    }
    for (int64_t i = 0; i >= 0; i = sym[i].next) out.push_back(sym[i].id);
  }

  WordCache& cache() const {
    struct Tl {
      uint64_t owner = 0;
      WordCache cache;
    };
    thread_local Tl tl;
    if (tl.owner != serial) {
      tl.cache.clear();
      tl.owner = serial;
    }
    return tl.cache;
  }

  void encode_bytes(const unsigned char* s, size_t n, std::vector<uint32_t>& out) const {
    WordCache& wc = cache();
    std::vector<uint32_t> tmp;
    auto emit = [&](size_t b, size_t e) {
      const unsigned char* w = s + b;
      const size_t len = e - b;
      if (len == 1) {
        out.push_back(byte_id[w[0]]);
        return;
      }
      if (len > WordCache::kMaxWordBytes) {
        bpe(w, len, out);
        return;
      }
      const uint64_t h = hash_bytes(w, len);
      const uint32_t* ids;
      size_t count;
      if (wc.find(w, len, h, ids, count)) {
        out.insert(out.end(), ids, ids + count);
        return;
      }
      tmp.clear();
      SharedStripe& st = shared[h >> (64 - kStripeBits)];
      bool hit;
      {
        std::lock_guard<std::mutex> lk(st.mu);
        hit = st.cache.find(w, len, h, ids, count);
        if (hit) tmp.assign(ids, ids + count);
      }
      if (!hit) {
        bpe(w, len, tmp);
        std::lock_guard<std::mutex> lk(st.mu);
        st.cache.insert(w, len, h, tmp.data(), tmp.size());
      }
      wc.insert(w, len, h, tmp.data(), tmp.size());
      out.insert(out.end(), tmp.begin(), tmp.end());
    };
    split(0, s, 0, n, emit);
  }
};

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::from_file(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    throw std::runtime_error(path + ": is a directory, not a tokenizer.json file");
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error(path + ": cannot open tokenizer file");
  std::stringstream ss;
  ss << f.rdbuf();
  if (!f && !f.eof()) throw std::runtime_error(path + ": cannot read tokenizer file");
  return from_json(ss.str(), path);
}

Tokenizer Tokenizer::from_json(std::string_view text, const std::string& name) {
  // Every structural check in parse_json names the field; a JSON type mismatch that slips past
  // them (nlohmann::json throws its own exception types) still becomes an error naming the file.
  try {
    return parse_json(text, name);
  } catch (const json::exception& e) {
    throw std::runtime_error(name + ": unexpected structure: " + e.what());
  }
}

Tokenizer Tokenizer::parse_json(std::string_view text, const std::string& name) {
  auto impl = std::make_unique<Impl>();
  Impl& t = *impl;
  t.name = name;
  t.serial = g_serial.fetch_add(1);
  t.classes = &class_table();
  tok::TokenizerSpec s = tok::parse_tokenizer_json(text, name);
  t.steps = std::move(s.steps);
  t.add_prefix_space = s.add_prefix_space;
  t.ignore_merges = s.ignore_merges;
  t.vocab_size = s.vocab_size;
  t.eot = s.eot;
  t.byte_id = s.byte_id;
  t.id_bytes = std::move(s.id_bytes);
  t.id_known = std::move(s.id_known);
  t.str_to_id = std::move(s.str_to_id);
  t.bytes_to_id = std::move(s.bytes_to_id);
  t.merges.build(s.merges);
  t.num_merges = s.merges.size();
  return Tokenizer(std::move(impl));
}

void Tokenizer::encode_append(std::string_view text, std::vector<uint32_t>& out) const {
  const Impl& t = *impl_;
  if (text.empty()) return;
  if (t.add_prefix_space && text.front() != ' ') {
    std::string s;
    s.reserve(text.size() + 1);
    s += ' ';
    s += text;
    t.encode_bytes(reinterpret_cast<const unsigned char*>(s.data()), s.size(), out);
    return;
  }
  t.encode_bytes(reinterpret_cast<const unsigned char*>(text.data()), text.size(), out);
}

std::vector<uint32_t> Tokenizer::encode(std::string_view text) const {
  std::vector<uint32_t> out;
  out.reserve(text.size() / 3 + 4);
  encode_append(text, out);
  return out;
}

std::string Tokenizer::decode(const std::vector<uint32_t>& ids) const {
  const Impl& t = *impl_;
  std::string out;
  for (const uint32_t id : ids) {
    if (id >= t.id_bytes.size() || !t.id_known[id])
      throw std::out_of_range(t.name + ": decode: " + std::to_string(id) + " is not a token id");
    out += t.id_bytes[id];
  }
  return out;
}

uint32_t Tokenizer::vocab_size() const { return impl_->vocab_size; }

uint32_t Tokenizer::eot_id() const {
  if (!impl_->eot)
    impl_->fail(
        "no end-of-text token (<|endoftext|>, <|end_of_text|>, </s> or <eos>) among added_tokens or model.vocab");
  return *impl_->eot;
}

std::optional<uint32_t> Tokenizer::token_to_id(std::string_view token) const {
  auto it = impl_->str_to_id.find(std::string(token));
  if (it == impl_->str_to_id.end()) return std::nullopt;
  return it->second;
}

std::vector<std::string_view> Tokenizer::pretokenize(std::string_view text) const {
  std::vector<std::string_view> out;
  auto emit = [&](size_t b, size_t e) { out.push_back(text.substr(b, e - b)); };
  impl_->split(0, reinterpret_cast<const unsigned char*>(text.data()), 0, text.size(), emit);
  return out;
}

size_t Tokenizer::num_merges() const { return impl_->num_merges; }

}  // namespace mor::io
