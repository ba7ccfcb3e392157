#include "io/data/token_shard.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <utility>

namespace mor::io {

static_assert(std::endian::native == std::endian::little,
              "token shards are little-endian; this reader assumes a little-endian host");

namespace {

std::string shard_err(const std::string& path, const std::string& what) {
  return "token shard '" + path + "': " + what;
}

std::string errno_str() { return std::strerror(errno); }

// Interprets the header ints; validates magic/version/count and the file size.
ShardHeader parse_header(const std::string& path, const int32_t* h, uint64_t file_bytes) {
  ShardHeader hd;
  hd.magic = h[0];
  hd.version = h[1];
  if (hd.magic == kShardMagicU16) {
    if (hd.version != kShardVersionU16)
      throw std::runtime_error(shard_err(path, "unknown version " + std::to_string(hd.version) + " for magic " +
                                                   std::to_string(hd.magic) + " (expected version " +
                                                   std::to_string(kShardVersionU16) + ", uint16 tokens)"));
    hd.token_bytes = 2;
  } else if (hd.magic == kShardMagicU32) {
    if (hd.version != kShardVersionU32)
      throw std::runtime_error(shard_err(path, "unknown version " + std::to_string(hd.version) + " for magic " +
                                                   std::to_string(hd.magic) + " (expected version " +
                                                   std::to_string(kShardVersionU32) + ", uint32 tokens)"));
    hd.token_bytes = 4;
  } else {
    throw std::runtime_error(shard_err(path, "bad magic " + std::to_string(hd.magic) + " (expected " +
                                                 std::to_string(kShardMagicU16) + " for uint16 or " +
                                                 std::to_string(kShardMagicU32) +
                                                 " for uint32 tokens); not an llm.c token shard"));
  }
  if (h[2] < 0)
    throw std::runtime_error(shard_err(path, "negative token count " + std::to_string(h[2]) + " in header"));
  hd.count = static_cast<uint64_t>(h[2]);
  const uint64_t expected = kShardHeaderBytes + hd.count * static_cast<uint64_t>(hd.token_bytes);
  if (file_bytes != expected)
    throw std::runtime_error(shard_err(
        path, "file size " + std::to_string(file_bytes) + " bytes disagrees with header: " + std::to_string(hd.count) +
                  " tokens x " + std::to_string(hd.token_bytes) + " bytes + 1024 header bytes = " +
                  std::to_string(expected) + (file_bytes < expected ? " (truncated file?)" : " (trailing bytes)")));
  return hd;
}

// Index of the first token >= vocab, or n if none. Blocked max-scan so the hot
// loop vectorizes; only a block that fails is searched element by element.
template <typename T>
uint64_t first_bad_token(const T* tok, uint64_t n, uint32_t vocab) {
  constexpr uint64_t kBlock = 1 << 14;
  for (uint64_t b = 0; b < n; b += kBlock) {
    const uint64_t e = std::min(n, b + kBlock);
    T mx = 0;
    for (uint64_t i = b; i < e; ++i) mx = tok[i] > mx ? tok[i] : mx;
    if (static_cast<uint64_t>(mx) >= vocab) {
      for (uint64_t i = b; i < e; ++i)
        if (static_cast<uint64_t>(tok[i]) >= vocab) return i;
    }
  }
  return n;
}

// Opens a shard read-only and returns its descriptor and size; errors name the file: not there,
// not a regular file, or too short to hold the header.
int open_shard_file(const std::string& path, uint64_t& bytes) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw std::runtime_error(shard_err(path, "cannot open: " + errno_str()));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const std::string e = errno_str();
    ::close(fd);
    throw std::runtime_error(shard_err(path, "cannot stat: " + e));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw std::runtime_error(shard_err(path, "not a regular file"));
  }
  bytes = static_cast<uint64_t>(st.st_size);
  if (bytes < kShardHeaderBytes) {
    ::close(fd);
    throw std::runtime_error(
        shard_err(path, "truncated header: file has " + std::to_string(bytes) + " bytes, the header alone needs 1024"));
  }
  return fd;
}

}  // namespace

ShardHeader read_shard_header(const std::string& path) {
  uint64_t bytes = 0;
  const int fd = open_shard_file(path, bytes);
  int32_t h[kShardHeaderInts];
  const ssize_t got = ::pread(fd, h, kShardHeaderBytes, 0);
  const std::string e = got < 0 ? errno_str() : "short read";
  ::close(fd);
  if (got != static_cast<ssize_t>(kShardHeaderBytes))
    throw std::runtime_error(shard_err(path, "cannot read header: " + e));
  return parse_header(path, h, bytes);
}

TokenShard::TokenShard(const std::string& path, uint32_t vocab_size) : path_(path) {
  uint64_t bytes = 0;
  const int fd = open_shard_file(path, bytes);
  void* p = ::mmap(nullptr, bytes, PROT_READ, MAP_SHARED, fd, 0);
  const std::string map_errno = p == MAP_FAILED ? errno_str() : "";
  ::close(fd);  // the mapping keeps the file open
  if (p == MAP_FAILED) throw std::runtime_error(shard_err(path, "mmap failed: " + map_errno));
  map_ = static_cast<const unsigned char*>(p);
  map_bytes_ = bytes;
  try {
    int32_t h[kShardHeaderInts];
    std::memcpy(h, map_, kShardHeaderBytes);
    const ShardHeader hd = parse_header(path, h, bytes);
    count_ = hd.count;
    token_bytes_ = hd.token_bytes;
    if (vocab_size > 0) {
      const bool can_exceed = token_bytes_ == 4 || vocab_size < 65536u;
      if (can_exceed && count_ > 0) {
        ::madvise(const_cast<unsigned char*>(map_), map_bytes_, MADV_SEQUENTIAL);
        uint64_t bad = count_;
        uint32_t id = 0;
        if (token_bytes_ == 2) {
          const auto* t = reinterpret_cast<const uint16_t*>(map_ + kShardHeaderBytes);
          bad = first_bad_token(t, count_, vocab_size);
          if (bad < count_) id = t[bad];
        } else {
          const auto* t = reinterpret_cast<const uint32_t*>(map_ + kShardHeaderBytes);
          bad = first_bad_token(t, count_, vocab_size);
          if (bad < count_) id = t[bad];
        }
        if (bad < count_)
          throw std::runtime_error(shard_err(path, "token id " + std::to_string(id) + " at token index " +
                                                       std::to_string(bad) + " (byte offset " +
                                                       std::to_string(kShardHeaderBytes + bad * token_bytes_) +
                                                       ") is >= vocab_size " + std::to_string(vocab_size)));
      }
    }
    // Training reads windows in shuffled order.
    ::madvise(const_cast<unsigned char*>(map_), map_bytes_, MADV_RANDOM);
  } catch (...) {
    unmap();
    throw;
  }
}

TokenShard::~TokenShard() { unmap(); }

void TokenShard::unmap() noexcept {
  if (map_ != nullptr) ::munmap(const_cast<unsigned char*>(map_), map_bytes_);
  map_ = nullptr;
  map_bytes_ = 0;
}

TokenShard::TokenShard(TokenShard&& o) noexcept
    : path_(std::move(o.path_)), map_(std::exchange(o.map_, nullptr)), map_bytes_(std::exchange(o.map_bytes_, 0)),
      count_(std::exchange(o.count_, 0)), token_bytes_(std::exchange(o.token_bytes_, 0)) {}

TokenShard& TokenShard::operator=(TokenShard&& o) noexcept {
  if (this != &o) {
    unmap();
    path_ = std::move(o.path_);
    map_ = std::exchange(o.map_, nullptr);
    map_bytes_ = std::exchange(o.map_bytes_, 0);
    count_ = std::exchange(o.count_, 0);
    token_bytes_ = std::exchange(o.token_bytes_, 0);
  }
  return *this;
}

uint32_t TokenShard::token(uint64_t i) const {
  if (i >= count_)
    throw std::out_of_range(
        shard_err(path_, "token index " + std::to_string(i) + " out of range (size " + std::to_string(count_) + ")"));
  const unsigned char* base = map_ + kShardHeaderBytes;
  if (token_bytes_ == 2) {
    uint16_t v;
    std::memcpy(&v, base + i * 2, 2);
    return v;
  }
  uint32_t v;
  std::memcpy(&v, base + i * 4, 4);
  return v;
}

void TokenShard::copy_tokens(uint64_t first, uint64_t n, int32_t* out) const {
  if (first > count_ || n > count_ - first)
    throw std::out_of_range(shard_err(path_, "token range [" + std::to_string(first) + ", " +
                                                 std::to_string(first + n) + ") out of range (size " +
                                                 std::to_string(count_) + ")"));
  if (token_bytes_ == 2) {
    const auto* t = reinterpret_cast<const uint16_t*>(map_ + kShardHeaderBytes) + first;
    for (uint64_t i = 0; i < n; ++i) out[i] = static_cast<int32_t>(t[i]);
  } else {
    const auto* t = reinterpret_cast<const uint32_t*>(map_ + kShardHeaderBytes) + first;
    for (uint64_t i = 0; i < n; ++i) out[i] = static_cast<int32_t>(t[i]);
  }
}

void write_token_shard(const std::string& path, const std::vector<uint32_t>& tokens, uint32_t vocab_size) {
  if (vocab_size == 0) throw std::runtime_error(shard_err(path, "cannot write with vocab_size 0"));
  if (tokens.size() > static_cast<size_t>(std::numeric_limits<int32_t>::max()))
    throw std::runtime_error(
        shard_err(path, std::to_string(tokens.size()) + " tokens do not fit the int32 header count"));
  for (size_t i = 0; i < tokens.size(); ++i)
    if (tokens[i] >= vocab_size)
      throw std::runtime_error(shard_err(path, "cannot write token id " + std::to_string(tokens[i]) + " at index " +
                                                   std::to_string(i) + ": >= vocab_size " +
                                                   std::to_string(vocab_size)));
  const bool u16 = vocab_size <= 65536u;
  int32_t header[kShardHeaderInts] = {};
  header[0] = u16 ? kShardMagicU16 : kShardMagicU32;
  header[1] = u16 ? kShardVersionU16 : kShardVersionU32;
  header[2] = static_cast<int32_t>(tokens.size());

  std::vector<unsigned char> body;
  if (u16) {
    std::vector<uint16_t> t(tokens.begin(), tokens.end());
    body.resize(t.size() * 2);
    if (!t.empty()) std::memcpy(body.data(), t.data(), body.size());
  } else {
    body.resize(tokens.size() * 4);
    if (!tokens.empty()) std::memcpy(body.data(), tokens.data(), body.size());
  }

  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw std::runtime_error(shard_err(tmp, "cannot create: " + errno_str()));
  auto write_all = [&](const void* data, size_t n) {
    const auto* p = static_cast<const unsigned char*>(data);
    while (n > 0) {
      const ssize_t w = ::write(fd, p, n);
      if (w < 0) {
        if (errno == EINTR) continue;
        return false;
      }
      p += w;
      n -= static_cast<size_t>(w);
    }
    return true;
  };
  bool ok = write_all(header, kShardHeaderBytes) && write_all(body.data(), body.size());
  std::string err = ok ? "" : "write failed: " + errno_str();
  if (ok && ::fsync(fd) != 0) {
    ok = false;
    err = "fsync failed: " + errno_str();
  }
  if (::close(fd) != 0 && ok) {
    ok = false;
    err = "close failed: " + errno_str();
  }
  if (!ok) {
    ::unlink(tmp.c_str());
    throw std::runtime_error(shard_err(tmp, err));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    err = errno_str();
    ::unlink(tmp.c_str());
    throw std::runtime_error(shard_err(path, "cannot rename " + tmp + " into place: " + err));
  }
}

}  // namespace mor::io
