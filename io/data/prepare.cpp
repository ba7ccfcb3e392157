#include "io/data/prepare.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sched.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <exception>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <mutex>
#include <optional>
#include <nlohmann/json.hpp>
#include <set>
#include <stdexcept>
#include <thread>

#include "io/data/loader.h"
#include "io/data/token_shard.h"
#include "io/data/tokenizer.h"

namespace mor::io {

const char* bad_line_name(BadLine kind) {
  switch (kind) {
    case BadLine::kMalformedJson: return "malformed JSON";
    case BadLine::kMissingText: return "missing text";
    case BadLine::kInvalidUtf8: return "invalid UTF-8";
  }
  return "?";
}

namespace {

std::string errno_str() { return std::strerror(errno); }

// ---- one JSONL line: validate (RFC 8259) and extract the top-level "text" ----------------

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
  static constexpr int kMaxDepth = 1000;

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
    if (c >= 0x20 && c < 0x7F) std::snprintf(buf, sizeof buf, "'%c'", c);
    else std::snprintf(buf, sizeof buf, "byte 0x%02X", c);
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
      const char* what = c == '[' ? "an array" : c == '"' ? "a string" : (c == 't' || c == 'f') ? "a boolean"
                         : c == 'n' ? "null" : "a number";
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
      case '{': return object(depth + 1, nullptr);
      case '[': return array(depth + 1);
      case '"': return string(nullptr);
      case 't': return literal("true");
      case 'f': return literal("false");
      case 'n': return literal("null");
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
    if (p_[i_] == '0') ++i_;
    else while (digit()) ++i_;
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
      // backslash escape
      const size_t esc = i_;
      ++i_;
      if (i_ >= n_) return fail(BadLine::kMalformedJson, "unterminated string");
      const unsigned char e = p_[i_++];
      char ch = 0;
      switch (e) {
        case '"': ch = '"'; break;
        case '\\': ch = '\\'; break;
        case '/': ch = '/'; break;
        case 'b': ch = '\b'; break;
        case 'f': ch = '\f'; break;
        case 'n': ch = '\n'; break;
        case 'r': ch = '\r'; break;
        case 't': ch = '\t'; break;
        case 'u': {
          uint32_t cp;
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
          continue;
        }
        default:
          i_ = esc;
          return malformed("bad escape");
      }
      if (out) *out += ch;
    }
  }

  const unsigned char* p_;
  size_t n_;
  size_t i_ = 0;
  std::string* text_;
  BadLine kind_ = BadLine::kMalformedJson;
  std::string detail_;
};

bool blank(std::string_view s) {
  for (const char c : s)
    if (c != ' ' && c != '\t' && c != '\r' && c != '\n') return false;
  return true;
}

// ---- input files: plain, gzip (multi-member), zstd (multi-frame) -------------------------

class InputFile {
 public:
  explicit InputFile(const std::string& path) : path_(path) {
    fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ < 0) throw std::runtime_error(path + ": cannot open: " + errno_str());
    raw_.resize(size_t{1} << 20);
    fill();
    if (raw_len_ >= 2 && raw_[0] == 0x1F && raw_[1] == 0x8B) {
      kind_ = kGzip;
      std::memset(&zs_, 0, sizeof zs_);
      if (inflateInit2(&zs_, 15 + 32) != Z_OK) throw std::runtime_error(path + ": inflateInit2 failed");
    } else if (raw_len_ >= 4 && raw_[0] == 0x28 && raw_[1] == 0xB5 && raw_[2] == 0x2F && raw_[3] == 0xFD) {
      kind_ = kZstd;
      zd_ = ZSTD_createDCtx();
      if (!zd_) throw std::runtime_error(path + ": ZSTD_createDCtx failed");
    }
  }
  ~InputFile() {
    if (kind_ == kGzip) inflateEnd(&zs_);
    if (zd_) ZSTD_freeDCtx(zd_);
    if (fd_ >= 0) ::close(fd_);
  }
  InputFile(const InputFile&) = delete;
  InputFile& operator=(const InputFile&) = delete;

  // Appends up to `cap` decompressed bytes to out; returns 0 only at the end.
  size_t read(std::string& out, size_t cap) {
    const size_t old = out.size();
    out.resize(old + cap);
    unsigned char* dst = reinterpret_cast<unsigned char*>(out.data()) + old;
    size_t got = 0;
    try {
      got = kind_ == kPlain ? read_plain(dst, cap) : kind_ == kGzip ? read_gzip(dst, cap) : read_zstd(dst, cap);
    } catch (...) {
      out.resize(old);
      throw;
    }
    out.resize(old + got);
    return got;
  }
  uint64_t consumed() const { return consumed_; }  // raw (stored) bytes consumed so far

 private:
  enum Kind { kPlain, kGzip, kZstd };

  void fill() {  // refills raw_ when it is used up
    if (raw_pos_ < raw_len_ || eof_) return;
    raw_pos_ = raw_len_ = 0;
    while (true) {
      const ssize_t r = ::read(fd_, raw_.data(), raw_.size());
      if (r < 0) {
        if (errno == EINTR) continue;
        throw std::runtime_error(path_ + ": read failed: " + errno_str());
      }
      if (r == 0) eof_ = true;
      raw_len_ = static_cast<size_t>(r);
      consumed_ += raw_len_;
      return;
    }
  }

  size_t read_plain(unsigned char* dst, size_t cap) {
    if (raw_pos_ >= raw_len_ && !eof_) {  // nothing buffered: read straight into dst
      while (true) {
        const ssize_t r = ::read(fd_, dst, cap);
        if (r < 0) {
          if (errno == EINTR) continue;
          throw std::runtime_error(path_ + ": read failed: " + errno_str());
        }
        if (r == 0) eof_ = true;
        consumed_ += static_cast<uint64_t>(r);
        return static_cast<size_t>(r);
      }
    }
    fill();
    const size_t n = std::min(cap, raw_len_ - raw_pos_);
    std::memcpy(dst, raw_.data() + raw_pos_, n);
    raw_pos_ += n;
    return n;
  }

  size_t read_gzip(unsigned char* dst, size_t cap) {
    size_t got = 0;
    while (got < cap) {
      fill();
      const bool at_eof = raw_pos_ >= raw_len_ && eof_;
      if (at_eof && !in_member_) break;
      const size_t before = got;
      zs_.next_in = raw_.data() + raw_pos_;
      zs_.avail_in = static_cast<uInt>(raw_len_ - raw_pos_);
      zs_.next_out = dst + got;
      zs_.avail_out = static_cast<uInt>(cap - got);
      in_member_ = true;
      const int rc = inflate(&zs_, Z_NO_FLUSH);
      raw_pos_ = raw_len_ - zs_.avail_in;
      got = cap - zs_.avail_out;
      // At the end of the file inflate may still flush output it holds; no progress means truncation.
      if (at_eof && rc != Z_STREAM_END && got == before)
        throw std::runtime_error(path_ + ": truncated gzip data (unexpected end of file)");
      if (rc == Z_STREAM_END) {
        in_member_ = false;
        inflateReset(&zs_);  // another gzip member may follow
        // Trailing zero padding after the last member is ignored.
        fill();
        while (raw_pos_ < raw_len_ && raw_[raw_pos_] == 0) {
          ++raw_pos_;
          fill();
        }
      } else if (rc != Z_OK && rc != Z_BUF_ERROR) {
        throw std::runtime_error(path_ + ": corrupt gzip data: " + (zs_.msg ? zs_.msg : std::to_string(rc)));
      } else if (rc == Z_BUF_ERROR && zs_.avail_out != 0 && raw_pos_ < raw_len_) {
        throw std::runtime_error(path_ + ": corrupt gzip data");
      }
    }
    return got;
  }

  size_t read_zstd(unsigned char* dst, size_t cap) {
    ZSTD_outBuffer ob{dst, cap, 0};
    while (ob.pos < ob.size) {
      fill();
      const bool at_eof = raw_pos_ >= raw_len_ && eof_;
      if (at_eof && !zstd_pending_) break;
      const size_t before = ob.pos;
      ZSTD_inBuffer ib{raw_.data(), raw_len_, raw_pos_};
      const size_t rc = ZSTD_decompressStream(zd_, &ob, &ib);
      if (ZSTD_isError(rc)) throw std::runtime_error(path_ + ": corrupt zstd data: " + ZSTD_getErrorName(rc));
      raw_pos_ = ib.pos;
      zstd_pending_ = rc != 0;
      // At the end of the file the decoder may still flush output it holds; no progress means truncation.
      if (at_eof && zstd_pending_ && ob.pos == before)
        throw std::runtime_error(path_ + ": truncated zstd data (unexpected end of file)");
    }
    return ob.pos;
  }

  std::string path_;
  int fd_ = -1;
  Kind kind_ = kPlain;
  std::vector<unsigned char> raw_;
  size_t raw_pos_ = 0, raw_len_ = 0;
  bool eof_ = false;
  uint64_t consumed_ = 0;
  z_stream zs_{};
  bool in_member_ = false;
  ZSTD_DCtx* zd_ = nullptr;
  bool zstd_pending_ = false;
};

// ---- pipeline pieces ------------------------------------------------------------------

struct Batch {
  uint64_t seq = 0;
  uint32_t file = 0;
  std::string data;
  std::vector<std::pair<size_t, size_t>> lines;  // offset, length (without '\n')
  std::vector<uint64_t> line_no;                 // 1-based
};

struct BadRecord {
  uint64_t line = 0;
  BadLine kind{};
  std::string detail;
};

struct Result {
  uint32_t file = 0;
  std::vector<uint32_t> tokens;    // documents, each starting with the EOT id
  std::vector<uint64_t> doc_ends;  // end offset of each document in tokens
  uint64_t text_bytes = 0;
  std::vector<BadRecord> bad;
};

std::vector<std::string> expand_inputs(const std::vector<std::string>& patterns) {
  std::vector<std::string> files;
  std::set<std::string> seen;
  for (const std::string& pat : patterns) {
    // A directory, dangling symlink or symlink loop among the matches is an error naming it.
    std::vector<std::string> found = glob_files(pat, "--input");
    if (found.empty()) throw std::runtime_error("--input '" + pat + "': no file matches");
    for (auto& f : found)
      if (seen.insert(f).second) files.push_back(std::move(f));
  }
  return files;
}

std::string sha256_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw std::runtime_error(path + ": cannot open for checksum: " + errno_str());
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr);
  std::vector<unsigned char> buf(size_t{1} << 20);
  while (true) {
    const ssize_t r = ::read(fd, buf.data(), buf.size());
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      EVP_MD_CTX_free(ctx);
      ::close(fd);
      throw std::runtime_error(path + ": read failed: " + errno_str());
    }
    if (r == 0) break;
    EVP_DigestUpdate(ctx, buf.data(), static_cast<size_t>(r));
  }
  ::close(fd);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx, md, &len);
  EVP_MD_CTX_free(ctx);
  static const char* hexd = "0123456789abcdef";
  std::string s;
  for (unsigned int k = 0; k < len; ++k) {
    s += hexd[md[k] >> 4];
    s += hexd[md[k] & 15];
  }
  return s;
}

// Cores this process may run on (its affinity mask: taskset, SLURM cpusets).
int available_cores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof set, &set) == 0) return std::max(1, CPU_COUNT(&set));
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

std::string shard_name(bool val, int index) {
  char buf[96];
  std::snprintf(buf, sizeof buf, "edu_fineweb_%s_%06d.bin", val ? "val" : "train", index);
  return buf;
}

std::string human_bytes(double b) {
  char buf[32];
  if (b >= 1e9) std::snprintf(buf, sizeof buf, "%.2f GB", b / 1e9);
  else if (b >= 1e6) std::snprintf(buf, sizeof buf, "%.1f MB", b / 1e6);
  else std::snprintf(buf, sizeof buf, "%.1f kB", b / 1e3);
  return buf;
}

std::string human_time(double s) {
  char buf[32];
  const long t = static_cast<long>(s + 0.5);
  if (t >= 3600) std::snprintf(buf, sizeof buf, "%ldh%02ldm", t / 3600, (t / 60) % 60);
  else std::snprintf(buf, sizeof buf, "%ldm%02lds", t / 60, t % 60);
  return buf;
}

// Existing outputs of an earlier run in out_dir.
std::vector<std::filesystem::path> old_outputs(const std::string& dir) {
  std::vector<std::filesystem::path> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    const std::string n = e.path().filename().string();
    const bool shard = n.rfind("edu_fineweb_", 0) == 0 &&
                       (n.size() > 4 && (n.ends_with(".bin") || n.ends_with(".bin.tmp")));
    if (shard || n == "manifest.json" || n == "manifest.json.tmp") out.push_back(e.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

bool parse_jsonl_text(std::string_view line, std::string* text, BadLine* kind, std::string* detail) {
  text->clear();
  JsonLine p(line, text);
  return p.run(kind, detail);
}

PrepareResult prepare_shards(const PrepareOptions& opt, std::FILE* log) {
  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  if (opt.shard_tokens < 1 || opt.shard_tokens > static_cast<uint64_t>(INT32_MAX))
    throw std::invalid_argument("shard_tokens must be in [1, 2^31 - 1]");
  PrepareResult res;
  // The tokenizer loads (~0.1-0.3 s for 50k merges) while the reader starts.
  auto tok_future = std::async(std::launch::async, [&] { return Tokenizer::from_file(opt.tokenizer); });
  res.files = expand_inputs(opt.inputs);
  std::vector<uint64_t> sizes;
  for (const auto& f : res.files) {
    struct stat st{};
    if (::stat(f.c_str(), &st) != 0) throw std::runtime_error(f + ": cannot stat: " + errno_str());
    sizes.push_back(static_cast<uint64_t>(st.st_size));
    res.input_bytes += static_cast<uint64_t>(st.st_size);
  }

  std::error_code ec;
  std::filesystem::create_directories(opt.out_dir, ec);
  if (!std::filesystem::is_directory(opt.out_dir))
    throw std::runtime_error(opt.out_dir + ": cannot create output folder" + (ec ? ": " + ec.message() : ""));
  const auto old = old_outputs(opt.out_dir);
  if (!old.empty()) {
    if (!opt.overwrite)
      throw std::runtime_error(opt.out_dir + ": already holds " + old.front().filename().string() +
                               (old.size() > 1 ? " and " + std::to_string(old.size() - 1) + " more" : "") +
                               " from an earlier run; use an empty folder or --overwrite");
    for (const auto& p : old) std::filesystem::remove(p);
  }

  const int threads = opt.threads > 0 ? opt.threads : available_cores();
  const uint64_t max_inflight = static_cast<uint64_t>(2 * threads + 2);

  // Shared state, guarded by mu.
  std::mutex mu;
  std::condition_variable cv_work, cv_done, cv_space;
  std::deque<Batch> work;
  std::map<uint64_t, Result> done;
  uint64_t submitted = 0, written = 0;
  bool reader_done = false, stop = false;
  std::exception_ptr error;
  std::atomic<uint64_t> raw_consumed{0};
  // Recycled buffers (guarded by mu): batch texts and token vectors keep their
  // capacity, so steady state allocates (and page-faults) nothing new.
  std::vector<std::string> free_data;
  std::vector<std::vector<uint32_t>> free_tokens;

  auto set_error = [&](std::exception_ptr e) {
    std::lock_guard<std::mutex> lk(mu);
    if (!error) error = e;
    stop = true;
    cv_work.notify_all();
    cv_done.notify_all();
    cv_space.notify_all();
  };

  // Reader: files -> batches of whole lines.
  std::thread reader([&] {
    try {
      uint64_t base = 0;
      for (uint32_t fi = 0; fi < res.files.size(); ++fi) {
        InputFile in(res.files[fi]);
        uint64_t line_no = 0;
        Batch b;
        size_t scan = 0, line_start = 0;
        auto submit = [&](Batch&& full) {
          std::unique_lock<std::mutex> lk(mu);
          cv_space.wait(lk, [&] { return stop || submitted - written < max_inflight; });
          if (stop) return false;
          full.seq = submitted++;
          work.push_back(std::move(full));
          cv_work.notify_one();
          return true;
        };
        while (true) {
          const size_t got = in.read(b.data, std::max<size_t>(opt.batch_bytes, 4096));
          raw_consumed.store(base + in.consumed(), std::memory_order_relaxed);
          const bool eof = got == 0;
          const char* d = b.data.data();
          while (true) {
            const void* nl = scan < b.data.size() ? std::memchr(d + scan, '\n', b.data.size() - scan) : nullptr;
            if (!nl) break;
            const size_t e = static_cast<size_t>(static_cast<const char*>(nl) - d);
            b.lines.emplace_back(line_start, e - line_start);
            b.line_no.push_back(++line_no);
            line_start = scan = e + 1;
          }
          scan = b.data.size();
          if (eof && line_start < b.data.size()) {  // last line without '\n'
            b.lines.emplace_back(line_start, b.data.size() - line_start);
            b.line_no.push_back(++line_no);
            line_start = b.data.size();
          }
          if ((eof || line_start >= opt.batch_bytes) && !b.lines.empty()) {
            Batch next;
            {
              std::lock_guard<std::mutex> lk(mu);
              if (!free_data.empty()) {
                next.data = std::move(free_data.back());
                free_data.pop_back();
              }
            }
            next.data.assign(b.data, line_start, std::string::npos);
            b.data.resize(line_start);
            b.file = fi;
            if (!submit(std::move(b))) return;
            b = std::move(next);
            scan = b.data.size();
            line_start = 0;
          }
          if (eof) break;
        }
        base += sizes[fi];
      }
      std::lock_guard<std::mutex> lk(mu);
      reader_done = true;
      cv_done.notify_all();
      cv_work.notify_all();
    } catch (...) {
      set_error(std::current_exception());
    }
  });

  std::optional<Tokenizer> tok_holder;
  try {
    tok_holder.emplace(tok_future.get());
    res.vocab_size = tok_holder->vocab_size();
    res.eot_id = tok_holder->eot_id();  // throws when the tokenizer has no end-of-text token
  } catch (...) {
    set_error(std::current_exception());
    reader.join();
    throw;
  }
  const Tokenizer& tok = *tok_holder;
  res.token_bytes = res.vocab_size <= 65536u ? 2 : 4;
  const uint32_t eot = res.eot_id;

  // Workers: batches -> tokens.
  std::vector<std::thread> workers;
  for (int w = 0; w < threads; ++w)
    workers.emplace_back([&] {
      try {
        std::string text;
        std::string detail;
        while (true) {
          Batch b;
          {
            std::unique_lock<std::mutex> lk(mu);
            cv_work.wait(lk, [&] { return stop || !work.empty() || reader_done; });
            if (stop || (work.empty() && reader_done)) return;
            b = std::move(work.front());
            work.pop_front();
          }
          Result r;
          r.file = b.file;
          {
            std::lock_guard<std::mutex> lk(mu);
            if (!free_tokens.empty()) {
              r.tokens = std::move(free_tokens.back());
              free_tokens.pop_back();
            }
          }
          r.tokens.clear();
          r.tokens.reserve(b.data.size() / 3 + 16);
          for (size_t k = 0; k < b.lines.size(); ++k) {
            const std::string_view line(b.data.data() + b.lines[k].first, b.lines[k].second);
            if (blank(line)) continue;
            BadLine kind;
            if (!parse_jsonl_text(line, &text, &kind, &detail)) {
              r.bad.push_back(BadRecord{b.line_no[k], kind, detail});
              if (opt.strict) break;  // the writer stops at the first one
              continue;
            }
            r.tokens.push_back(eot);
            tok.encode_append(text, r.tokens);
            r.doc_ends.push_back(r.tokens.size());
            r.text_bytes += text.size();
          }
          std::lock_guard<std::mutex> lk(mu);
          b.data.clear();
          free_data.push_back(std::move(b.data));
          done.emplace(b.seq, std::move(r));
          cv_done.notify_all();
        }
      } catch (...) {
        set_error(std::current_exception());
      }
    });

  // Writer (this thread): results in input order -> shards.
  const bool tty = log && ::isatty(::fileno(log));
  auto last_progress = clock::now();
  std::vector<uint32_t> cur;
  uint64_t cur_docs = 0;
  bool in_val = opt.val_tokens > 0;
  int next_train = 1;
  // The shard being written: returns its SHA-256 and the token buffer for reuse.
  std::future<std::pair<std::string, std::vector<uint32_t>>> pending;
  std::vector<uint32_t> spare;
  std::vector<ShardInfo> shards;
  auto finish_pending = [&] {
    if (!pending.valid()) return;
    auto [hash, buf] = pending.get();
    shards.back().sha256 = std::move(hash);
    spare = std::move(buf);
  };
  auto flush = [&](bool val) {
    finish_pending();
    const std::string name = val ? shard_name(true, 0) : shard_name(false, next_train++);
    shards.push_back(ShardInfo{name, val ? "val" : "train", cur.size(), cur_docs, ""});
    const std::string path = (std::filesystem::path(opt.out_dir) / name).string();
    pending = std::async(std::launch::async, [path, toks = std::move(cur), vocab = res.vocab_size]() mutable {
      write_token_shard(path, toks, vocab);
      return std::make_pair(sha256_file(path), std::move(toks));
    });
    cur = std::move(spare);
    cur.clear();
    cur.reserve(static_cast<size_t>(std::min<uint64_t>(opt.shard_tokens, uint64_t{1} << 24)));
    cur_docs = 0;
  };
  auto progress = [&](bool final_line) {
    if (!log || !opt.progress) return;
    const double s = std::chrono::duration<double>(clock::now() - t0).count();
    const double in_b = static_cast<double>(raw_consumed.load(std::memory_order_relaxed));
    const double total = static_cast<double>(res.input_bytes);
    std::string line = "prepare: " + human_bytes(in_b);
    if (total > 0) {
      char pct[32];
      std::snprintf(pct, sizeof pct, " of %s (%.1f%%)", human_bytes(total).c_str(), 100.0 * in_b / total);
      line += pct;
    }
    char buf[160];
    std::snprintf(buf, sizeof buf, " | %llu docs | %.0f docs/s | %.1f MB/s | %.1fM tokens",
                  static_cast<unsigned long long>(res.documents), s > 0 ? res.documents / s : 0.0,
                  s > 0 ? in_b / 1e6 / s : 0.0, res.tokens / 1e6);
    line += buf;
    if (total > 0 && in_b > 0 && !final_line) line += " | ETA " + human_time(s * (total - in_b) / in_b);
    if (tty) std::fprintf(log, "\r%s\033[K%s", line.c_str(), final_line ? "\n" : "");
    else std::fprintf(log, "%s\n", line.c_str());
    std::fflush(log);
  };

  try {
    while (true) {
      Result r;
      {
        std::unique_lock<std::mutex> lk(mu);
        const auto tick = std::chrono::milliseconds(tty ? 500 : 10000);
        while (!stop && done.find(written) == done.end() && !(reader_done && written == submitted)) {
          if (cv_done.wait_for(lk, tick) == std::cv_status::timeout) {
            lk.unlock();
            if (clock::now() - last_progress >= tick) {
              progress(false);
              last_progress = clock::now();
            }
            lk.lock();
          }
        }
        if (stop) break;
        auto it = done.find(written);
        if (it == done.end()) break;  // all batches consumed
        r = std::move(it->second);
        done.erase(it);
        ++written;
        cv_space.notify_one();
      }
      const std::string& file = res.files[r.file];
      for (const BadRecord& bad : r.bad) {
        const std::string msg = file + ":" + std::to_string(bad.line) + ": " + bad_line_name(bad.kind) + ": " + bad.detail;
        if (opt.strict) throw std::runtime_error(msg + " (--strict)");
        ++res.bad[static_cast<int>(bad.kind)];
        if (res.bad_examples.size() < 20) res.bad_examples.push_back(msg);
      }
      res.text_bytes += r.text_bytes;
      res.documents += r.doc_ends.size();
      res.tokens += r.tokens.size();
      uint64_t begin = 0;
      for (const uint64_t end : r.doc_ends) {
        if (in_val) {
          cur.insert(cur.end(), r.tokens.begin() + static_cast<ptrdiff_t>(begin), r.tokens.begin() + static_cast<ptrdiff_t>(end));
          ++cur_docs;
          if (cur.size() >= opt.val_tokens) {
            flush(true);
            in_val = false;
          }
        } else {
          uint64_t pos = begin;
          while (pos < end) {
            if (pos == begin) ++cur_docs;
            const uint64_t take = std::min<uint64_t>(end - pos, opt.shard_tokens - cur.size());
            cur.insert(cur.end(), r.tokens.begin() + static_cast<ptrdiff_t>(pos),
                       r.tokens.begin() + static_cast<ptrdiff_t>(pos + take));
            pos += take;
            if (cur.size() == opt.shard_tokens) flush(false);
          }
        }
        begin = end;
      }
      {
        std::lock_guard<std::mutex> lk(mu);
        free_tokens.push_back(std::move(r.tokens));
      }
      if (tty ? clock::now() - last_progress >= std::chrono::milliseconds(500)
              : clock::now() - last_progress >= std::chrono::seconds(10)) {
        progress(false);
        last_progress = clock::now();
      }
    }
  } catch (...) {
    set_error(std::current_exception());
  }
  reader.join();
  for (auto& w : workers) w.join();
  if (error) {
    if (pending.valid()) pending.wait();
    std::rethrow_exception(error);
  }
  if (res.documents == 0) {
    throw std::runtime_error("no documents in the input (" + std::to_string(res.bad_total()) + " bad lines" +
                             (res.bad_examples.empty() ? "" : ", first: " + res.bad_examples.front()) + ")");
  }
  if (!cur.empty()) flush(in_val);
  finish_pending();
  res.shards = shards;
  res.seconds = std::chrono::duration<double>(clock::now() - t0).count();
  progress(true);

  // manifest.json (no times, thread counts or output paths: identical for any thread count)
  nlohmann::ordered_json m;
  m["format"] = "llm.c token shards: 1024-byte header (int32 magic, version, token count), then the tokens";
  m["token_bytes"] = res.token_bytes;
  m["magic"] = res.token_bytes == 2 ? kShardMagicU16 : kShardMagicU32;
  m["version"] = res.token_bytes == 2 ? kShardVersionU16 : kShardVersionU32;
  m["tokenizer"] = {{"file", opt.tokenizer}, {"sha256", sha256_file(opt.tokenizer)},
                    {"vocab_size", res.vocab_size}, {"eot_id", res.eot_id}};
  m["shard_tokens"] = opt.shard_tokens;
  m["val_tokens"] = opt.val_tokens;
  nlohmann::ordered_json inputs = nlohmann::ordered_json::array();
  for (size_t k = 0; k < res.files.size(); ++k) inputs.push_back({{"file", res.files[k]}, {"bytes", sizes[k]}});
  m["inputs"] = inputs;
  m["documents"] = res.documents;
  m["tokens"] = res.tokens;
  m["text_bytes"] = res.text_bytes;
  m["bad_lines"] = {{"malformed_json", res.bad[0]}, {"missing_text", res.bad[1]}, {"invalid_utf8", res.bad[2]},
                    {"examples", res.bad_examples}};
  m["checksum"] = "sha256 of the whole shard file (as sha256sum prints it)";
  nlohmann::ordered_json sl = nlohmann::ordered_json::array();
  for (const auto& s : res.shards)
    sl.push_back({{"file", s.file}, {"split", s.split}, {"tokens", s.tokens}, {"documents", s.documents},
                  {"sha256", s.sha256}});
  m["shards"] = sl;
  const std::string mpath = (std::filesystem::path(opt.out_dir) / "manifest.json").string();
  {
    std::ofstream f(mpath + ".tmp", std::ios::binary | std::ios::trunc);
    f << m.dump(1) << "\n";
    f.close();
    if (!f) throw std::runtime_error(mpath + ".tmp: write failed");
  }
  std::filesystem::rename(mpath + ".tmp", mpath);

  if (log) {
    const double s = res.seconds;
    int nval = 0, ntrain = 0;
    for (const auto& sh : res.shards) (sh.split == "val" ? nval : ntrain)++;
    std::fprintf(log,
                 "prepare: %zu files, %llu documents, %llu tokens (uint%d), %s of text in %.1f s "
                 "(%.1f MB/s of input, %.0f docs/s)\n",
                 res.files.size(), static_cast<unsigned long long>(res.documents),
                 static_cast<unsigned long long>(res.tokens), res.token_bytes * 8,
                 human_bytes(static_cast<double>(res.text_bytes)).c_str(), s,
                 s > 0 ? res.input_bytes / 1e6 / s : 0.0, s > 0 ? res.documents / s : 0.0);
    std::fprintf(log, "prepare: wrote %d val + %d train shards and manifest.json to %s\n", nval, ntrain,
                 opt.out_dir.c_str());
    if (opt.val_tokens > 0 && ntrain == 0)
      std::fprintf(log, "prepare: warning: every document went to validation (--val-tokens %llu); no train shard\n",
                   static_cast<unsigned long long>(opt.val_tokens));
    if (res.bad_total() > 0) {
      std::fprintf(log, "prepare: skipped %llu bad lines: %llu malformed JSON, %llu missing text, %llu invalid UTF-8\n",
                   static_cast<unsigned long long>(res.bad_total()), static_cast<unsigned long long>(res.bad[0]),
                   static_cast<unsigned long long>(res.bad[1]), static_cast<unsigned long long>(res.bad[2]));
      for (const auto& e : res.bad_examples) std::fprintf(log, "prepare:   %s\n", e.c_str());
      if (res.bad_total() > res.bad_examples.size())
        std::fprintf(log, "prepare:   ... (%llu more)\n",
                     static_cast<unsigned long long>(res.bad_total() - res.bad_examples.size()));
    } else {
      std::fprintf(log, "prepare: no bad lines\n");
    }
  }
  return res;
}

}  // namespace mor::io
