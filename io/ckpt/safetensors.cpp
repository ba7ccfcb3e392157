#include "io/ckpt/safetensors.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <stdexcept>

namespace mor::io {

namespace {

[[noreturn]] void fail(const std::string& what, const std::string& path) {
  throw std::runtime_error(what + " '" + path + "': " + std::strerror(errno));
}

// A file written through path.tmp: every write checked, fsynced, renamed into place on close().
class AtomicFile {
 public:
  explicit AtomicFile(std::string path) : path_(std::move(path)), tmp_(path_ + ".tmp") {
    fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd_ < 0) fail("cannot create", tmp_);
  }
  ~AtomicFile() {
    if (fd_ >= 0) {  // not closed: an exception is on its way; leave nothing behind
      ::close(fd_);
      ::unlink(tmp_.c_str());
    }
  }
  void write(const void* p, size_t n) {
    const char* c = static_cast<const char*>(p);
    while (n > 0) {
      const ssize_t w = ::write(fd_, c, std::min<size_t>(n, size_t(1) << 30));
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) fail("cannot write", tmp_);
      c += w;
      n -= (size_t)w;
    }
  }
  void close() {
    if (::fsync(fd_) != 0) fail("cannot fsync", tmp_);
    const int fd = fd_;
    fd_ = -1;
    if (::close(fd) != 0) {
      ::unlink(tmp_.c_str());
      fail("cannot close", tmp_);
    }
    if (std::rename(tmp_.c_str(), path_.c_str()) != 0) {
      ::unlink(tmp_.c_str());
      fail("cannot rename to", path_);
    }
  }

 private:
  std::string path_, tmp_;
  int fd_ = -1;
};

int64_t numel(const SafeTensor& t) {
  int64_t n = 1;
  for (int64_t d : t.shape) {
    if (d < 0 || __builtin_mul_overflow(n, d, &n))
      throw std::runtime_error("safetensors: tensor '" + t.name + "' has an invalid shape");
  }
  return n;
}

std::string shape_json(const std::vector<int64_t>& s) {
  std::string j = "[";
  // Appended piece by piece: GCC 12 warns (-Wrestrict, a false positive) on "lit" + std::string.
  for (size_t i = 0; i < s.size(); ++i) {
    if (i) j += ',';
    j += std::to_string(s[i]);
  }
  j += ']';
  return j;
}

void write_one(const std::string& path, const std::vector<const SafeTensor*>& ts,
               const std::map<std::string, std::string>& metadata) {
  std::string h = "{\"__metadata__\":{";
  bool first = true;
  for (const auto& [k, v] : metadata) {
    if (!first) h += ',';
    h += json_string(k);
    h += ':';
    h += json_string(v);
    first = false;
  }
  h += "}";
  int64_t off = 0;
  for (const SafeTensor* t : ts) {
    const int64_t bytes = numel(*t) * 4;
    h += ',';
    h += json_string(t->name);
    h += ":{\"dtype\":\"F32\",\"shape\":";
    h += shape_json(t->shape);
    h += ",\"data_offsets\":[";
    h += std::to_string(off);
    h += ',';
    h += std::to_string(off + bytes);
    h += "]}";
    off += bytes;
  }
  h += "}";
  h.append((8 - h.size() % 8) % 8, ' ');  // the data starts 8-byte aligned
  const uint64_t n = h.size();
  unsigned char len[8];
  for (int i = 0; i < 8; ++i) len[i] = (unsigned char)(n >> (8 * i));  // little-endian on any host
  AtomicFile f(path);
  f.write(len, 8);
  f.write(h.data(), h.size());
  static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "F32 data is written in host order");
  for (const SafeTensor* t : ts) f.write(t->data, (size_t)numel(*t) * 4);
  f.close();
}

}  // namespace

std::string json_string(const std::string& s) {
  std::string j = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      j += '\\';
      j += (char)c;
    } else if (c < 0x20) {
      char b[8];
      std::snprintf(b, sizeof b, "\\u%04x", c);
      j += b;
    } else {
      j += (char)c;
    }
  }
  return j + "\"";
}

void write_text_file(const std::string& path, const std::string& text) {
  AtomicFile f(path);
  f.write(text.data(), text.size());
  f.close();
}

std::vector<std::string> write_safetensors(const std::string& dir, const std::vector<SafeTensor>& tensors,
                                           int64_t max_file_bytes, const std::map<std::string, std::string>& metadata) {
  if (max_file_bytes < 1) throw std::runtime_error("safetensors: the file size limit must be >= 1 byte");
  // Tensors in order, a new file whenever the next one would pass the limit.
  std::vector<std::vector<const SafeTensor*>> files(1);
  int64_t in_file = 0, total = 0;
  for (const SafeTensor& t : tensors) {
    const int64_t bytes = numel(t) * 4;
    if (!files.back().empty() && in_file + bytes > max_file_bytes) {
      files.emplace_back();
      in_file = 0;
    }
    files.back().push_back(&t);
    in_file += bytes;
    total += bytes;
  }
  std::vector<std::string> names;
  if (files.size() == 1) {
    names.push_back("model.safetensors");
  } else {
    char b[64];
    for (size_t i = 0; i < files.size(); ++i) {
      std::snprintf(b, sizeof b, "model-%05zu-of-%05zu.safetensors", i + 1, files.size());
      names.push_back(b);
    }
  }
  for (size_t i = 0; i < files.size(); ++i) write_one(dir + "/" + names[i], files[i], metadata);
  if (files.size() > 1) {
    std::string idx = "{\n  \"metadata\": {\"total_size\": " + std::to_string(total) + "},\n  \"weight_map\": {";
    bool first = true;
    for (size_t i = 0; i < files.size(); ++i)
      for (const SafeTensor* t : files[i]) {
        if (!first) idx += ',';
        idx += "\n    ";
        idx += json_string(t->name);
        idx += ": ";
        idx += json_string(names[i]);
        first = false;
      }
    idx += "\n  }\n}\n";
    write_text_file(dir + "/model.safetensors.index.json", idx);
    names.push_back("model.safetensors.index.json");
  }
  return names;
}

}  // namespace mor::io
