// Helpers shared by the io/ tests: a temp folder per test, raw file writing,
// and an assertion that an exception's text contains given pieces.
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <vector>

namespace mor::io::testing {

// Creates a fresh folder under ::testing::TempDir(); removed with the object.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = ::testing::TempDir() + "mor_io_XXXXXX";
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    if (::mkdtemp(buf.data()) == nullptr) throw std::runtime_error("mkdtemp failed: " + tmpl);
    path_ = buf.data();
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

inline void write_bytes(const std::string& path, const std::vector<unsigned char>& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  if (!f) throw std::runtime_error("cannot write " + path);
}

inline std::vector<unsigned char> read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot read " + path);
  return std::vector<unsigned char>((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

// A shard file with an arbitrary header and payload (for corrupt-input tests).
inline void write_raw_shard(const std::string& path, int32_t magic, int32_t version, int32_t count,
                            const std::vector<unsigned char>& payload) {
  std::vector<unsigned char> bytes(1024, 0);
  const int32_t h[3] = {magic, version, count};
  for (int i = 0; i < 3; ++i)
    for (int b = 0; b < 4; ++b)
      bytes[static_cast<size_t>(i * 4 + b)] =
          static_cast<unsigned char>((static_cast<uint32_t>(h[i]) >> (8 * b)) & 0xFF);
  bytes.insert(bytes.end(), payload.begin(), payload.end());
  write_bytes(path, bytes);
}

// Runs fn, expects an exception of type E whose what() contains every piece.
template <typename E = std::exception>
void expect_error(const std::function<void()>& fn, std::initializer_list<std::string> pieces) {
  try {
    fn();
  } catch (const std::exception& e) {
    const std::string msg = e.what();
    if (dynamic_cast<const E*>(&e) == nullptr) {
      ADD_FAILURE() << "wrong exception type: " << msg;
      return;
    }
    for (const auto& p : pieces) EXPECT_NE(msg.find(p), std::string::npos) << "error text lacks '" << p << "': " << msg;
    return;
  }
  ADD_FAILURE() << "no exception thrown";
}

}  // namespace mor::io::testing
