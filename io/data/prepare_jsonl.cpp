// `mor-dist prepare`'s JSONL line parser: validates one line as JSON (RFC 8259) and extracts the
// top-level "text" member.
//
// Two parsers, one answer. simdjson (Debian's libsimdjson-dev) reads every line first: it is the
// faster one. bench/prepare_throughput, "JSONL line parser alone" (fortunes JSONL, 1 core of the
// 2-vCPU "AMD EPYC" development machine, AVX-512, simdjson's icelake kernel): 1579 MB/s against
// 803 MB/s for the hand-written parser alone (1.97x); the whole `prepare` command, 1 thread, best
// of 3 interleaved rounds on the then-busy shared machine: 60.8 against 55.3 MB/s.
// simdjson only says that a line is bad, not where or why, and the bad-line report and --strict
// name the kind and column; so a line simdjson does not accept goes to the hand-written parser
// below (JsonLine), which names its first problem and has the last word: it also accepts the few
// valid lines simdjson refuses (numbers beyond a double, lines over kSimdjsonMaxLine). simdjson
// never accepts a line JsonLine rejects (the same RFC 8259 grammar and UTF-8 rules, lone surrogate
// escapes refused, a lower nesting limit): checked on 2 million mutated lines, and by the
// differential fuzzer (tests/fuzz/fuzz_jsonl.cpp) against nlohmann::json.
#include <simdjson.h>

#include <cstdio>
#include <cstring>
#include <string>

#include "io/data/prepare.h"
#include "io/data/tokenizer.h"  // utf8_sequence_length

namespace mor::io {

const char* bad_line_name(BadLine kind) {
  switch (kind) {
    case BadLine::kMalformedJson:
      return "malformed JSON";
    case BadLine::kMissingText:
      return "missing text";
    case BadLine::kInvalidUtf8:
      return "invalid UTF-8";
  }
  return "?";
}

namespace {

constexpr int kMaxDepth = 1000;  // nesting deeper than this is a bad line

// simdjson's buffers grow to about 15 bytes per byte of the longest line it has read (tape, strings,
// structural indexes, its copy); longer lines go to JsonLine, so one huge line costs no worker that much.
constexpr size_t kSimdjsonMaxLine = size_t{1} << 20;

// The line's last top-level "text" member when simdjson accepts the line and that member is a
// string (as in Python's json, the last of duplicate keys wins); false for anything else.
bool simdjson_text(std::string_view line, std::string* text) {
  if (line.size() > kSimdjsonMaxLine) return false;
  thread_local simdjson::dom::parser parser = [] {
    simdjson::dom::parser p;
    // simdjson counts the top-level object as one level: this allows one level less than JsonLine.
    if (p.allocate(4096, kMaxDepth) != simdjson::SUCCESS) throw std::bad_alloc();
    return p;
  }();
  simdjson::dom::object obj;
  if (parser.parse(line.data(), line.size(), true).get_object().get(obj) != simdjson::SUCCESS) return false;
  std::string_view found;
  bool is_string = false;
  for (const simdjson::dom::key_value_pair field : obj)
    if (field.key == "text") is_string = field.value.get_string().get(found) == simdjson::SUCCESS;
  if (!is_string) return false;
  text->assign(found.data(), found.size());
  return true;
}

// The hand-written parser: the same grammar, and on a bad line its kind and first problem.
class JsonLine {
 public:
  JsonLine(std::string_view line, std::string* text)
      : p_(reinterpret_cast<const unsigned char*>(line.data())), n_(line.size()), text_(text) {}

  bool run(BadLine* kind, std::string* detail) {
    bool ok = parse_top();
    if (!ok) {
      *kind = kind_;
      *detail = detail_;
    }
    return ok;
  }

 private:
  bool fail(BadLine k, const std::string& what) {
    kind_ = k;
    detail_ = what;
    return false;
  }
  bool malformed(const std::string& what) {
    return fail(BadLine::kMalformedJson, what + " at column " + std::to_string(i_ + 1));
  }
  bool unexpected() {
    if (i_ >= n_) return fail(BadLine::kMalformedJson, "unexpected end of line");
    const unsigned char c = p_[i_];
    char buf[16];
    if (c >= 0x20 && c < 0x7F)
      std::snprintf(buf, sizeof buf, "'%c'", c);
    else
      std::snprintf(buf, sizeof buf, "byte 0x%02X", c);
    return malformed(std::string("unexpected ") + buf);
  }
  void ws() {
    while (i_ < n_ && (p_[i_] == ' ' || p_[i_] == '\t' || p_[i_] == '\n' || p_[i_] == '\r')) ++i_;
  }

  bool parse_top() {
    ws();
    if (i_ >= n_) return fail(BadLine::kMalformedJson, "empty line");
    bool found = false;
    if (p_[i_] == '{') {
      if (!object(0, &found)) return false;
    } else {
      const unsigned char c = p_[i_];
      if (!value(0)) return false;
      ws();
      if (i_ < n_) return malformed("unexpected characters after the JSON value");
      const char* what = c == '['                 ? "an array"
                         : c == '"'               ? "a string"
                         : (c == 't' || c == 'f') ? "a boolean"
                         : c == 'n'               ? "null"
                                                  : "a number";
      return fail(BadLine::kMissingText, std::string("the line is ") + what + ", not an object with a string \"text\"");
    }
    ws();
    if (i_ < n_) return malformed("unexpected characters after the JSON object");
    if (!found) return fail(BadLine::kMissingText, "no string field \"text\"");
    return true;
  }

  bool value(int depth) {
    if (i_ >= n_) return unexpected();
    switch (p_[i_]) {
      case '{':
        return object(depth + 1, nullptr);
      case '[':
        return array(depth + 1);
      case '"':
        return string(nullptr);
      case 't':
        return literal("true");
      case 'f':
        return literal("false");
      case 'n':
        return literal("null");
      default:
        if (p_[i_] == '-' || (p_[i_] >= '0' && p_[i_] <= '9')) return number();
        return unexpected();
    }
  }

  bool literal(const char* word) {
    const size_t l = std::strlen(word);
    if (n_ - i_ < l || std::memcmp(p_ + i_, word, l) != 0) return unexpected();
    i_ += l;
    return true;
  }

  bool number() {
    auto digit = [&] { return i_ < n_ && p_[i_] >= '0' && p_[i_] <= '9'; };
    if (p_[i_] == '-') ++i_;
    if (!digit()) return malformed("bad number");
    if (p_[i_] == '0')
      ++i_;
    else
      while (digit()) ++i_;
    if (i_ < n_ && p_[i_] == '.') {
      ++i_;
      if (!digit()) return malformed("bad number");
      while (digit()) ++i_;
    }
    if (i_ < n_ && (p_[i_] == 'e' || p_[i_] == 'E')) {
      ++i_;
      if (i_ < n_ && (p_[i_] == '+' || p_[i_] == '-')) ++i_;
      if (!digit()) return malformed("bad number");
      while (digit()) ++i_;
    }
    return true;
  }

  bool array(int depth) {
    if (depth > kMaxDepth) return malformed("nesting deeper than " + std::to_string(kMaxDepth));
    ++i_;  // '['
    ws();
    if (i_ < n_ && p_[i_] == ']') {
      ++i_;
      return true;
    }
    while (true) {
      ws();
      if (!value(depth)) return false;
      ws();
      if (i_ < n_ && p_[i_] == ',') {
        ++i_;
        continue;
      }
      if (i_ < n_ && p_[i_] == ']') {
        ++i_;
        return true;
      }
      return i_ >= n_ ? unexpected() : malformed("expected ',' or ']'");
    }
  }

  // found != nullptr: the top-level object; its "text" member (the last one
  // wins, as in Python's json) is decoded into text_.
  bool object(int depth, bool* found) {
    if (depth > kMaxDepth) return malformed("nesting deeper than " + std::to_string(kMaxDepth));
    ++i_;  // '{'
    ws();
    if (i_ < n_ && p_[i_] == '}') {
      ++i_;
      return true;
    }
    std::string key;
    while (true) {
      ws();
      if (i_ >= n_ || p_[i_] != '"') return i_ >= n_ ? unexpected() : malformed("expected a string key");
      key.clear();
      if (!string(found ? &key : nullptr)) return false;
      ws();
      if (i_ >= n_ || p_[i_] != ':') return i_ >= n_ ? unexpected() : malformed("expected ':'");
      ++i_;
      ws();
      if (found && key == "text") {
        if (i_ < n_ && p_[i_] == '"') {
          text_->clear();
          if (!string(text_)) return false;
          *found = true;
        } else {
          if (!value(depth)) return false;
          *found = false;
        }
      } else if (!value(depth)) {
        return false;
      }
      ws();
      if (i_ < n_ && p_[i_] == ',') {
        ++i_;
        continue;
      }
      if (i_ < n_ && p_[i_] == '}') {
        ++i_;
        return true;
      }
      return i_ >= n_ ? unexpected() : malformed("expected ',' or '}'");
    }
  }

  static int hex(unsigned char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }
  bool hex4(uint32_t* v) {
    if (n_ - i_ < 4) return fail(BadLine::kMalformedJson, "unexpected end of line in a \\u escape");
    uint32_t x = 0;
    for (int k = 0; k < 4; ++k) {
      const int h = hex(p_[i_ + k]);
      if (h < 0) return malformed("bad \\u escape");
      x = x * 16 + static_cast<uint32_t>(h);
    }
    i_ += 4;
    *v = x;
    return true;
  }
  static void put_utf8(std::string* out, uint32_t cp) {
    if (cp < 0x80) {
      *out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      *out += static_cast<char>(0xC0 | (cp >> 6));
      *out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      *out += static_cast<char>(0xE0 | (cp >> 12));
      *out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      *out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      *out += static_cast<char>(0xF0 | (cp >> 18));
      *out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      *out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      *out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }

  // A string at p_[i_] == '"'; decoded into *out when out != nullptr.
  bool string(std::string* out) {
    ++i_;
    while (true) {
      const size_t run = i_;
      while (i_ < n_ && p_[i_] >= 0x20 && p_[i_] != '"' && p_[i_] != '\\' && p_[i_] < 0x80) ++i_;
      if (out && i_ > run) out->append(reinterpret_cast<const char*>(p_ + run), i_ - run);
      if (i_ >= n_) return fail(BadLine::kMalformedJson, "unterminated string");
      const unsigned char c = p_[i_];
      if (c == '"') {
        ++i_;
        return true;
      }
      if (c >= 0x80) {
        const size_t l = utf8_sequence_length(p_ + i_, n_ - i_);
        if (l == 0) {
          char buf[96];
          std::snprintf(buf, sizeof buf, "byte 0x%02X at column %zu is not UTF-8", c, i_ + 1);
          return fail(BadLine::kInvalidUtf8, buf);
        }
        if (out) out->append(reinterpret_cast<const char*>(p_ + i_), l);
        i_ += l;
        continue;
      }
      if (c < 0x20) {
        char buf[96];
        std::snprintf(buf, sizeof buf, "control character 0x%02X in a string at column %zu", c, i_ + 1);
        return fail(BadLine::kMalformedJson, buf);
      }
      if (!escape(out)) return false;
    }
  }

  // A backslash escape at p_[i_] == '\\'; decoded into *out when out != nullptr.
  bool escape(std::string* out) {
    const size_t esc = i_;
    ++i_;
    if (i_ >= n_) return fail(BadLine::kMalformedJson, "unterminated string");
    const unsigned char e = p_[i_++];
    char ch = 0;
    switch (e) {
      case '"':
        ch = '"';
        break;
      case '\\':
        ch = '\\';
        break;
      case '/':
        ch = '/';
        break;
      case 'b':
        ch = '\b';
        break;
      case 'f':
        ch = '\f';
        break;
      case 'n':
        ch = '\n';
        break;
      case 'r':
        ch = '\r';
        break;
      case 't':
        ch = '\t';
        break;
      case 'u':
        return unicode_escape(esc, out);
      default:
        i_ = esc;
        return malformed("bad escape");
    }
    if (out) *out += ch;
    return true;
  }

  // The \uXXXX escape that started at column esc + 1 (i_ is past its 'u'): a UTF-16 surrogate pair
  // gives one code point; a lone surrogate is invalid UTF-8, as in Python's json.
  bool unicode_escape(size_t esc, std::string* out) {
    uint32_t cp = 0;
    if (!hex4(&cp)) return false;
    if (cp >= 0xD800 && cp <= 0xDBFF) {
      uint32_t lo = 0;
      if (n_ - i_ >= 6 && p_[i_] == '\\' && p_[i_ + 1] == 'u') {
        i_ += 2;
        if (!hex4(&lo)) return false;
      }
      if (lo < 0xDC00 || lo > 0xDFFF) {
        char buf[96];
        std::snprintf(buf, sizeof buf, "unpaired surrogate escape \\u%04X at column %zu", cp, esc + 1);
        return fail(BadLine::kInvalidUtf8, buf);
      }
      cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
    } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
      char buf[96];
      std::snprintf(buf, sizeof buf, "unpaired surrogate escape \\u%04X at column %zu", cp, esc + 1);
      return fail(BadLine::kInvalidUtf8, buf);
    }
    if (out) put_utf8(out, cp);
    return true;
  }

  const unsigned char* p_;
  size_t n_;
  size_t i_ = 0;
  std::string* text_;
  BadLine kind_ = BadLine::kMalformedJson;
  std::string detail_;
};

}  // namespace

bool parse_jsonl_text(std::string_view line, std::string* text, BadLine* kind, std::string* detail) {
  if (simdjson_text(line, text)) return true;
  return parse_jsonl_text_by_hand(line, text, kind, detail);
}

bool parse_jsonl_text_by_hand(std::string_view line, std::string* text, BadLine* kind, std::string* detail) {
  text->clear();
  JsonLine p(line, text);
  return p.run(kind, detail);
}

}  // namespace mor::io
