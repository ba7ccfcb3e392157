#include "io/ckpt/tensor_file.h"

#include <sys/stat.h>

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <stdexcept>

namespace mor::io {

static const char kMagic[8] = {'M', 'O', 'R', 'T', 'N', 'S', 'R', '1'};

int64_t NamedTensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

namespace {

constexpr uint32_t kMaxNameBytes = 4096;
constexpr uint32_t kMaxDims = 8;

}  // namespace

void write_mort(const std::string& path, const std::vector<NamedTensor>& ts) {
  // Refuse what read_mort would refuse (and what would write past a tensor's values).
  for (const auto& t : ts) {
    if (t.name.size() > kMaxNameBytes || t.shape.size() > kMaxDims)
      throw std::runtime_error("cannot write '" + path + "': tensor '" + t.name.substr(0, 64) + "' has a name over " +
                               std::to_string(kMaxNameBytes) + " bytes or over " + std::to_string(kMaxDims) + " dims");
    int64_t n = 1;
    for (int64_t d : t.shape)
      if (d < 0 || __builtin_mul_overflow(n, d, &n))
        throw std::runtime_error("cannot write '" + path + "': tensor '" + t.name + "' has an invalid shape");
    const size_t have = t.is_int ? t.i.size() : t.f.size();
    if (have != static_cast<size_t>(n))
      throw std::runtime_error("cannot write '" + path + "': tensor '" + t.name + "' holds " + std::to_string(have) +
                               " values but its shape has " + std::to_string(n));
  }
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary);
    if (!f) throw std::runtime_error("cannot write '" + tmp + "'");
    auto put32 = [&](uint32_t v) { f.write(reinterpret_cast<const char*>(&v), 4); };
    f.write(kMagic, 8);
    put32((uint32_t)ts.size());
    for (const auto& t : ts) {
      put32((uint32_t)t.name.size());
      f.write(t.name.data(), t.name.size());
      put32(t.is_int ? 1 : 0);
      put32((uint32_t)t.shape.size());
      for (int64_t d : t.shape) f.write(reinterpret_cast<const char*>(&d), 8);
      if (t.is_int)
        f.write(reinterpret_cast<const char*>(t.i.data()), t.numel() * 4);
      else
        f.write(reinterpret_cast<const char*>(t.f.data()), t.numel() * 4);
    }
    if (!f) throw std::runtime_error("write failed for '" + tmp + "'");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0)
    throw std::runtime_error("cannot rename '" + tmp + "' to '" + path + "'");
}

// Every size read from the file is checked against the bytes that remain before anything is
// allocated: a corrupt header fails with what it claims and how much is there, never with a
// huge allocation or a read past the end.
std::vector<NamedTensor> read_mort(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0)
    throw std::runtime_error("cannot open tensor file '" + path + "': " + std::strerror(errno));
  if (S_ISDIR(st.st_mode)) throw std::runtime_error("tensor file '" + path + "' is a directory");
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot open tensor file '" + path + "'");
  if (!S_ISREG(st.st_mode)) throw std::runtime_error("tensor file '" + path + "' is not a regular file");
  const uint64_t file_bytes = static_cast<uint64_t>(st.st_size);
  uint64_t pos = 0;  // bytes consumed
  auto fail = [&](const std::string& what) -> void { throw std::runtime_error("tensor file '" + path + "': " + what); };
  auto remain = [&] { return file_bytes - pos; };
  auto get = [&](void* p, uint64_t n, const char* what) {
    if (n > remain())
      fail(std::string("truncated: ") + what + " needs " + std::to_string(n) + " bytes at offset " +
           std::to_string(pos) + " but the file (" + std::to_string(file_bytes) + " bytes) has " +
           std::to_string(remain()) + " left");
    f.read(static_cast<char*>(p), static_cast<std::streamsize>(n));
    if (static_cast<uint64_t>(f.gcount()) != n) fail("read failed at offset " + std::to_string(pos));
    pos += n;
  };
  char magic[8];
  get(magic, 8, "the magic");
  if (std::memcmp(magic, kMagic, 8) != 0) fail("bad magic (not a .mort file)");
  uint32_t count;
  get(&count, 4, "the tensor count");
  // The smallest tensor record: name length, dtype, ndim (a scalar with an empty name needs 4 more).
  constexpr uint64_t kMinRecord = 12;
  if (count > remain() / kMinRecord)
    fail("header claims " + std::to_string(count) + " tensors, but the " + std::to_string(remain()) +
         " bytes after it hold at most " + std::to_string(remain() / kMinRecord) + " (" + std::to_string(kMinRecord) +
         " bytes each at least)");
  std::vector<NamedTensor> out;
  out.reserve(count);
  for (uint32_t k = 0; k < count; ++k) {
    NamedTensor t;
    const uint64_t at = pos;
    uint32_t len, dtype, ndim;
    get(&len, 4, "a name length");
    if (len > kMaxNameBytes)
      fail("tensor " + std::to_string(k) + " at offset " + std::to_string(at) + ": name length " + std::to_string(len) +
           " is over the limit of " + std::to_string(kMaxNameBytes));
    t.name.resize(len);
    get(t.name.data(), len, "a tensor name");
    get(&dtype, 4, "a dtype");
    get(&ndim, 4, "a dim count");
    if (dtype > 1)
      fail("tensor '" + t.name + "' at offset " + std::to_string(at) + ": dtype " + std::to_string(dtype) +
           " is neither 0 (fp32) nor 1 (int32)");
    if (ndim > kMaxDims)
      fail("tensor '" + t.name + "' at offset " + std::to_string(at) + ": " + std::to_string(ndim) + " dims (at most " +
           std::to_string(kMaxDims) + ")");
    t.is_int = dtype == 1;
    t.shape.resize(ndim);
    int64_t numel = 1;
    for (auto& d : t.shape) {
      get(&d, 8, "a dimension");
      if (d < 0)
        fail("tensor '" + t.name + "' at offset " + std::to_string(at) + ": negative dimension " + std::to_string(d));
      if (__builtin_mul_overflow(numel, d, &numel) || numel > INT64_MAX / 4)
        fail("tensor '" + t.name + "' at offset " + std::to_string(at) + ": shape overflows 64 bits");
    }
    const uint64_t bytes = static_cast<uint64_t>(numel) * 4;
    if (bytes > remain())
      fail("tensor '" + t.name + "' at offset " + std::to_string(at) + ": its shape needs " + std::to_string(bytes) +
           " bytes of values but only " + std::to_string(remain()) + " remain in the file (truncated?)");
    if (t.is_int) {
      t.i.resize(static_cast<size_t>(numel));
      get(t.i.data(), bytes, "tensor values");
    } else {
      t.f.resize(static_cast<size_t>(numel));
      get(t.f.data(), bytes, "tensor values");
    }
    out.push_back(std::move(t));
  }
  if (remain() != 0)
    fail(std::to_string(remain()) + " trailing bytes after the last of " + std::to_string(count) + " tensors (offset " +
         std::to_string(pos) + ")");
  return out;
}

const NamedTensor* find_tensor(const std::vector<NamedTensor>& ts, const std::string& name) {
  for (const auto& t : ts)
    if (t.name == name) return &t;
  return nullptr;
}

}  // namespace mor::io
