#include "io/tensor_file.h"

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

void write_mort(const std::string& path, const std::vector<NamedTensor>& ts) {
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
      if (t.is_int) f.write(reinterpret_cast<const char*>(t.i.data()), t.numel() * 4);
      else f.write(reinterpret_cast<const char*>(t.f.data()), t.numel() * 4);
    }
    if (!f) throw std::runtime_error("write failed for '" + tmp + "'");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) throw std::runtime_error("cannot rename '" + tmp + "' to '" + path + "'");
}

std::vector<NamedTensor> read_mort(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot open tensor file '" + path + "'");
  auto fail = [&](const std::string& what) { throw std::runtime_error("tensor file '" + path + "': " + what); };
  auto get = [&](void* p, size_t n) {
    f.read(static_cast<char*>(p), n);
    if ((size_t)f.gcount() != n) fail("truncated");
  };
  char magic[8];
  get(magic, 8);
  if (std::memcmp(magic, kMagic, 8) != 0) fail("bad magic (not a .mort file)");
  uint32_t count;
  get(&count, 4);
  std::vector<NamedTensor> out(count);
  for (auto& t : out) {
    uint32_t len, dtype, ndim;
    get(&len, 4);
    if (len > 4096) fail("tensor name too long");
    t.name.resize(len);
    get(t.name.data(), len);
    get(&dtype, 4);
    get(&ndim, 4);
    if (dtype > 1 || ndim > 8) fail("bad header of tensor '" + t.name + "'");
    t.is_int = dtype == 1;
    t.shape.resize(ndim);
    for (auto& d : t.shape) {
      get(&d, 8);
      if (d < 0 || d > (int64_t(1) << 40)) fail("bad shape of tensor '" + t.name + "'");
    }
    if (t.is_int) {
      t.i.resize(t.numel());
      get(t.i.data(), t.numel() * 4);
    } else {
      t.f.resize(t.numel());
      get(t.f.data(), t.numel() * 4);
    }
  }
  return out;
}

const NamedTensor* find_tensor(const std::vector<NamedTensor>& ts, const std::string& name) {
  for (const auto& t : ts)
    if (t.name == name) return &t;
  return nullptr;
}

}  // namespace mor::io
