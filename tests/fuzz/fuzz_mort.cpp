// Fuzzes the `.mort` tensor-file reader (io/ckpt/tensor_file.h, read_mort) on arbitrary bytes.
// Invariants: only std::runtime_error escapes; every tensor read holds exactly numel() values
// of its dtype; and a file that reads writes back (write_mort) to the very same bytes — the
// format has one encoding, so anything else means the reader accepted more than it should.
#include <cstring>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <vector>

#include "fuzz_util.h"
#include "io/ckpt/tensor_file.h"

using namespace mor::io;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = mor::fuzz::scratch_dir() + "/t.mort";
  static const std::string back = mor::fuzz::scratch_dir() + "/back.mort";
  mor::fuzz::write_file(path, data, size);
  std::vector<NamedTensor> ts;
  try {
    ts = read_mort(path);
  } catch (const std::runtime_error&) {
    return 0;
  }
  for (const NamedTensor& t : ts) {
    const size_t n = static_cast<size_t>(t.numel());
    MOR_FUZZ_CHECK(t.is_int ? (t.i.size() == n && t.f.empty()) : (t.f.size() == n && t.i.empty()),
                   "tensor '%s' holds %zu/%zu values, numel %zu", t.name.c_str(), t.f.size(), t.i.size(), n);
    MOR_FUZZ_CHECK(find_tensor(ts, t.name) != nullptr, "find_tensor misses '%s'", t.name.c_str());
  }
  write_mort(back, ts);
  std::ifstream f(back, std::ios::binary);
  const std::vector<char> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  MOR_FUZZ_CHECK(bytes.size() == size && (size == 0 || std::memcmp(bytes.data(), data, size) == 0),
                 "read + write gives %zu bytes that differ from the %zu read", bytes.size(), size);
  return 0;
}
