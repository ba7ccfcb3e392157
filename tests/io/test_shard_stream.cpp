// stream_write / stream_read: the exact file bytes, the XXH3-64 of the whole file, both the
// O_DIRECT paths (a disk file system) and buffered I/O (--ckpt.direct_io false, and the
// fallback on file systems that refuse O_DIRECT).
#include <gtest/gtest.h>
#include <unistd.h>
#include <xxhash.h>

#include <cstdio>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "io/ckpt/shard_stream.h"

namespace {

using mor::ckpt::Span;

std::vector<char> slurp(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}
void put(const std::string& p, const std::vector<char>& b) {
  std::ofstream(p, std::ios::binary).write(b.data(), (std::streamsize)b.size());
}
std::vector<char> random_bytes(size_t n, unsigned seed) {
  std::mt19937 g(seed);
  std::vector<char> v(n);
  for (auto& c : v) c = (char)(g() & 0xff);
  return v;
}

// A file of `size` bytes whose "metadata" (everything outside the spans) is already in place,
// as HDF5 leaves it; the spans' bytes live in memory. Sizes cross the 16 MiB window and are
// not multiples of 4096, so block padding and cutting back are exercised.
struct Layout {
  std::vector<char> expected;                     // the whole file after the write
  std::vector<std::vector<char>> data;            // the spans' bytes
  std::vector<std::pair<uint64_t, uint64_t>> at;  // (off, len) per span
};
// windows = 2: a 32 MiB file; larger: one more, longer span per extra window, so that reads
// run through more windows than the reader has buffers (4).
Layout make_layout(uint64_t windows = 2) {
  Layout l;
  const uint64_t w = 16u << 20, size = w * windows + 12345;
  l.expected = random_bytes(size, 1);
  l.at = {{1000, 5000}, {6000, w + 777}, {w + 20000, 3}, {w * 2, 12000}};
  if (windows > 2) l.at.push_back({w * 2 + 12000 + 4097, w * (windows - 2) - 4097});
  for (size_t i = 0; i < l.at.size(); ++i) {
    l.data.push_back(random_bytes(l.at[i].second, 10 + (unsigned)i));
    std::copy(l.data[i].begin(), l.data[i].end(), l.expected.begin() + (long)l.at[i].first);
  }
  return l;
}

// Returns whether O_DIRECT was used.
bool write_and_check(const std::string& dir, bool try_direct, uint64_t windows = 2) {
  const std::string p = dir + "/mor_shard_stream_test_" + std::to_string(getpid()) + ".bin";
  Layout l = make_layout(windows);
  std::vector<char> before = l.expected;  // metadata right, the spans' bytes stale
  for (const auto& [off, len] : l.at) std::fill(before.begin() + (long)off, before.begin() + (long)(off + len), 'x');
  put(p, before);
  std::vector<Span> spans;
  for (size_t i = l.at.size(); i-- > 0;)
    spans.push_back({l.at[i].first, l.at[i].second, l.data[i].data()});  // any order
  bool direct = false;
  const uint64_t h = mor::ckpt::stream_write(p, spans, try_direct, &direct);
  const std::vector<char> got = slurp(p);
  EXPECT_EQ(got.size(), l.expected.size()) << "padding of the last O_DIRECT block not cut back";
  EXPECT_TRUE(got == l.expected);
  EXPECT_EQ(h, XXH3_64bits(l.expected.data(), l.expected.size()));

  // Reading back, both ways: the spans' bytes into fresh memory, the same hash.
  std::vector<Span> rspans;
  for (bool read_direct : {true, false}) {
    std::vector<std::vector<char>> back;
    rspans.clear();
    for (const auto& [off, len] : l.at) rspans.push_back({off, len, back.emplace_back(len).data()});
    bool used = !read_direct;
    EXPECT_EQ(mor::ckpt::stream_read(p, rspans, read_direct, &used), h) << "O_DIRECT read: " << read_direct;
    EXPECT_EQ(used, read_direct) << "the test directory (a disk file system) takes O_DIRECT reads";
    EXPECT_TRUE(back == l.data) << "O_DIRECT read: " << read_direct;
  }

  // A span past the end of a truncated file is an error naming the file.
  EXPECT_EQ(truncate(p.c_str(), (off_t)(l.at[1].first + 100)), 0);
  try {
    mor::ckpt::stream_read(p, rspans);
    ADD_FAILURE() << "no error on a truncated file";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("truncated"), std::string::npos) << e.what();
  }
  std::remove(p.c_str());
  return direct;
}

// /var/tmp is a disk file system on the machines CI runs on (ext4 here): O_DIRECT is taken.
TEST(ShardStream, DirectIoOnDisk) { EXPECT_TRUE(write_and_check("/var/tmp", true)); }
TEST(ShardStream, BufferedWhenAsked) { EXPECT_FALSE(write_and_check("/var/tmp", false)); }
// Six 16 MiB windows: the O_DIRECT reader's four buffers are each reused.
TEST(ShardStream, DirectIoManyWindows) { EXPECT_TRUE(write_and_check("/var/tmp", true, 6)); }

TEST(ShardStream, OverlappingSpansAreRejected) {
  const std::string p = "/dev/shm/mor_shard_stream_overlap_" + std::to_string(getpid());
  put(p, std::vector<char>(100, 'm'));
  std::vector<char> a(50), b(50);
  EXPECT_THROW(mor::ckpt::stream_write(p, {{0, 50, a.data()}, {40, 50, b.data()}}), std::runtime_error);
  EXPECT_THROW(mor::ckpt::stream_write(p, {{80, 50, a.data()}}), std::runtime_error);  // past the end
  std::remove(p.c_str());
}

}  // namespace
