// Token shard format: round trips (uint16 / uint32) and every bad input.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdint>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "io/data/loader.h"
#include "io/ckpt/tensor_file.h"
#include "io/data/token_shard.h"
#include "io_test_util.h"

namespace mor::io {
namespace {

using testing::expect_error;
using testing::read_bytes;
using testing::TempDir;
using testing::write_bytes;
using testing::write_raw_shard;

std::vector<uint32_t> random_tokens(size_t n, uint32_t vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint32_t> t(n);
  for (auto& x : t) x = static_cast<uint32_t>(rng() % vocab);
  if (n >= 2) {
    t[0] = 0;
    t[n - 1] = vocab - 1;  // both ends of the id range
  }
  return t;
}

uint64_t file_size(const std::string& p) { return std::filesystem::file_size(p); }

void check_round_trip(uint32_t vocab, int expect_bytes, size_t n) {
  TempDir dir;
  const std::string path = dir.file("shard.bin");
  const auto tokens = random_tokens(n, vocab, 1234 + vocab);
  write_token_shard(path, tokens, vocab);
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  EXPECT_EQ(file_size(path), 1024 + n * static_cast<uint64_t>(expect_bytes));

  const ShardHeader h = read_shard_header(path);
  EXPECT_EQ(h.magic, expect_bytes == 2 ? kShardMagicU16 : kShardMagicU32);
  EXPECT_EQ(h.version, expect_bytes == 2 ? kShardVersionU16 : kShardVersionU32);
  EXPECT_EQ(h.count, n);
  EXPECT_EQ(h.token_bytes, expect_bytes);

  TokenShard shard(path, vocab);
  EXPECT_EQ(shard.path(), path);
  EXPECT_EQ(shard.size(), n);
  EXPECT_EQ(shard.token_bytes(), expect_bytes);
  for (size_t i = 0; i < n; ++i) ASSERT_EQ(shard.token(i), tokens[i]) << "index " << i;

  std::vector<int32_t> out(n);
  shard.copy_tokens(0, n, out.data());
  for (size_t i = 0; i < n; ++i) ASSERT_EQ(static_cast<uint32_t>(out[i]), tokens[i]);
  if (n > 10) {
    std::vector<int32_t> part(7, -1);
    shard.copy_tokens(3, 7, part.data());
    for (size_t i = 0; i < 7; ++i) EXPECT_EQ(static_cast<uint32_t>(part[i]), tokens[3 + i]);
  }

  // Header bytes beyond [0..2] are zero, tokens are little-endian.
  const auto bytes = read_bytes(path);
  for (size_t b = 12; b < 1024; ++b) ASSERT_EQ(bytes[b], 0) << "header byte " << b;
  if (n > 0) {
    uint32_t last = 0;
    const size_t off = 1024 + (n - 1) * static_cast<size_t>(expect_bytes);
    for (int b = expect_bytes - 1; b >= 0; --b) last = (last << 8) | bytes[off + static_cast<size_t>(b)];
    EXPECT_EQ(last, tokens[n - 1]);
  }
}

TEST(TokenShard, RoundTripUint16) { check_round_trip(50257, 2, 100000); }
TEST(TokenShard, RoundTripUint16FullRange) { check_round_trip(65536, 2, 5000); }
TEST(TokenShard, RoundTripUint32) { check_round_trip(65537, 4, 5000); }
TEST(TokenShard, RoundTripUint32LargeVocab) { check_round_trip(200000, 4, 70000); }
TEST(TokenShard, RoundTripEmpty) { check_round_trip(1024, 2, 0); }

TEST(TokenShard, OverwriteReplacesFile) {
  TempDir dir;
  const std::string path = dir.file("s.bin");
  write_token_shard(path, {1, 2, 3, 4, 5}, 10);
  write_token_shard(path, {7, 8}, 10);
  TokenShard s(path, 10);
  ASSERT_EQ(s.size(), 2u);
  EXPECT_EQ(s.token(0), 7u);
  EXPECT_EQ(s.token(1), 8u);
}

TEST(TokenShard, MoveKeepsMapping) {
  TempDir dir;
  const std::string path = dir.file("s.bin");
  write_token_shard(path, {4, 5, 6}, 10);
  TokenShard a(path, 10);
  TokenShard b(std::move(a));
  EXPECT_EQ(b.size(), 3u);
  EXPECT_EQ(b.token(2), 6u);
  std::vector<TokenShard> v;
  v.push_back(std::move(b));
  v.emplace_back(path, 10);
  EXPECT_EQ(v[0].token(0), 4u);
  EXPECT_EQ(v[1].token(1), 5u);
}

TEST(TokenShard, VocabZeroSkipsIdCheck) {
  TempDir dir;
  const std::string path = dir.file("s.bin");
  write_token_shard(path, {0, 999}, 1000);
  TokenShard s(path, 0);
  EXPECT_EQ(s.token(1), 999u);
  expect_error([&] { TokenShard t(path, 999); }, {path, "999", ">= vocab_size 999"});
}

// ---- bad inputs: each error names the file -------------------------------

TEST(TokenShardErrors, WrongMagic) {
  TempDir dir;
  const std::string path = dir.file("bad_magic.bin");
  write_raw_shard(path, 12345, 1, 2, std::vector<unsigned char>(4, 0));
  expect_error<std::runtime_error>([&] { TokenShard s(path); }, {path, "bad magic 12345"});
  expect_error<std::runtime_error>([&] { read_shard_header(path); }, {path, "bad magic"});
}

TEST(TokenShardErrors, UnknownVersionUint16Magic) {
  TempDir dir;
  const std::string path = dir.file("bad_version16.bin");
  write_raw_shard(path, kShardMagicU16, 7, 2, std::vector<unsigned char>(4, 0));
  expect_error<std::runtime_error>([&] { TokenShard s(path); }, {path, "unknown version 7"});
}

TEST(TokenShardErrors, UnknownVersionUint32Magic) {
  TempDir dir;
  const std::string path = dir.file("bad_version32.bin");
  write_raw_shard(path, kShardMagicU32, 1, 2, std::vector<unsigned char>(8, 0));
  expect_error<std::runtime_error>([&] { TokenShard s(path); }, {path, "unknown version 1"});
}

TEST(TokenShardErrors, SizeLargerThanHeaderSays) {
  TempDir dir;
  const std::string path = dir.file("trailing.bin");
  write_raw_shard(path, kShardMagicU16, 1, 2, std::vector<unsigned char>(6, 0));  // 3 tokens
  expect_error<std::runtime_error>([&] { TokenShard s(path); }, {path, "file size 1030", "1028", "trailing"});
}

TEST(TokenShardErrors, SizeDisagreesWithTokenWidth) {
  TempDir dir;
  const std::string path = dir.file("width.bin");
  // uint32 magic, 3 tokens, but only 6 payload bytes (written as if uint16).
  write_raw_shard(path, kShardMagicU32, 7, 3, std::vector<unsigned char>(6, 0));
  expect_error<std::runtime_error>([&] { TokenShard s(path); }, {path, "1030", "1036"});
}

TEST(TokenShardErrors, TruncatedTokens) {
  TempDir dir;
  const std::string path = dir.file("truncated.bin");
  write_token_shard(path, random_tokens(1000, 500, 7), 500);
  std::filesystem::resize_file(path, 1024 + 2 * 1000 - 10);
  expect_error<std::runtime_error>([&] { TokenShard s(path, 500); }, {path, "truncated"});
}

TEST(TokenShardErrors, TruncatedHeader) {
  TempDir dir;
  const std::string path = dir.file("short_header.bin");
  testing::write_bytes(path, std::vector<unsigned char>(100, 0));
  expect_error<std::runtime_error>([&] { TokenShard s(path); }, {path, "truncated header", "100"});
  expect_error<std::runtime_error>([&] { read_shard_header(path); }, {path, "truncated header"});
}

TEST(TokenShardErrors, EmptyFile) {
  TempDir dir;
  const std::string path = dir.file("empty.bin");
  testing::write_bytes(path, {});
  expect_error<std::runtime_error>([&] { TokenShard s(path); }, {path, "truncated header"});
}

TEST(TokenShardErrors, NegativeCount) {
  TempDir dir;
  const std::string path = dir.file("negative.bin");
  write_raw_shard(path, kShardMagicU16, 1, -5, {});
  expect_error<std::runtime_error>([&] { TokenShard s(path); }, {path, "negative token count -5"});
}

TEST(TokenShardErrors, TokenIdAtVocabSize) {
  TempDir dir;
  const std::string path = dir.file("big_id.bin");
  // Put the bad id late (past the first scan block) so the block search is used.
  std::vector<uint32_t> t(40000, 5);
  t[33333] = 1000;
  write_token_shard(path, t, 1001);
  expect_error<std::runtime_error>([&] { TokenShard s(path, 1000); },
                                   {path, "token id 1000", "token index 33333",
                                    "byte offset " + std::to_string(1024 + 2 * 33333), ">= vocab_size 1000"});
  TokenShard ok(path, 1001);  // the same file is fine for a larger vocabulary
  EXPECT_EQ(ok.token(33333), 1000u);
}

TEST(TokenShardErrors, TokenIdTooLargeUint32) {
  TempDir dir;
  const std::string path = dir.file("big_id32.bin");
  std::vector<uint32_t> t(100, 70000);
  t[99] = 99999;
  write_token_shard(path, t, 100000);
  expect_error<std::runtime_error>(
      [&] { TokenShard s(path, 80000); },
      {path, "token id 99999", "token index 99", "byte offset " + std::to_string(1024 + 4 * 99)});
}

TEST(TokenShardErrors, NonexistentFile) {
  TempDir dir;
  const std::string path = dir.file("does_not_exist.bin");
  expect_error<std::runtime_error>([&] { TokenShard s(path); }, {path, "cannot open"});
  expect_error<std::runtime_error>([&] { read_shard_header(path); }, {path, "cannot open"});
}

TEST(TokenShardErrors, DirectoryIsNotAShard) {
  TempDir dir;
  expect_error<std::runtime_error>([&] { TokenShard s(dir.path()); }, {dir.path()});
}

TEST(TokenShardErrors, PatternMatchingNothing) {
  TempDir dir;
  const std::string pattern = dir.file("edu_fineweb_train_*.bin");
  expect_error<std::runtime_error>([&] { glob_shards(pattern); }, {pattern, "no files match"});
  LoaderConfig cfg{pattern, 8, 100, 1};
  expect_error<std::runtime_error>([&] { DataLoader d(cfg); }, {pattern});
  expect_error<std::runtime_error>([&] { ValLoader v(pattern, 8, 100); }, {pattern});
}

TEST(TokenShardErrors, AccessOutOfRange) {
  TempDir dir;
  const std::string path = dir.file("s.bin");
  write_token_shard(path, {1, 2, 3}, 10);
  TokenShard s(path, 10);
  std::vector<int32_t> out(4);
  expect_error<std::out_of_range>([&] { s.token(3); }, {path, "token index 3"});
  expect_error<std::out_of_range>([&] { s.copy_tokens(1, 3, out.data()); }, {path, "[1, 4)"});
  expect_error<std::out_of_range>([&] { s.copy_tokens(4, 0, out.data()); }, {path});
  s.copy_tokens(3, 0, out.data());  // empty range at the end is fine
}

TEST(TokenShardErrors, WriterRejectsBadInput) {
  TempDir dir;
  const std::string path = dir.file("w.bin");
  expect_error<std::runtime_error>(
      [&] {
        write_token_shard(path, {1, 2, 10}, 10);
      },
      {path, "token id 10", "index 2", "vocab_size 10"});
  EXPECT_FALSE(std::filesystem::exists(path));
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  const std::string nodir = dir.file("no/such/dir/w.bin");
  expect_error<std::runtime_error>([&] { write_token_shard(nodir, {1}, 10); }, {nodir});
}

}  // namespace
// The `.mort` tensor-file reader (io/ckpt/tensor_file.h, in mor_ckpt); its corrupt-input cases
// are here. Found by tests/fuzz (fuzz_mort); the inputs are in tests/fuzz/crashes/mort/.
TEST(TensorFileErrors, SizesAreCheckedAgainstTheFileBeforeAllocating) {
  TempDir dir;
  auto mort = [](uint32_t count, const std::vector<unsigned char>& rest) {
    std::vector<unsigned char> b = {'M', 'O', 'R', 'T', 'N', 'S', 'R', '1'};
    for (int k = 0; k < 4; ++k) b.push_back(static_cast<unsigned char>(count >> (8 * k)));
    b.insert(b.end(), rest.begin(), rest.end());
    return b;
  };
  auto tensor = [](const std::string& name, uint32_t dtype, const std::vector<int64_t>& shape) {
    std::vector<unsigned char> b;
    auto put = [&](uint64_t v, int n) {
      for (int k = 0; k < n; ++k) b.push_back(static_cast<unsigned char>(v >> (8 * k)));
    };
    put(name.size(), 4);
    for (char c : name) b.push_back(static_cast<unsigned char>(c));  // (insert() trips GCC 12's -Wstringop-overread)
    put(dtype, 4);
    put(shape.size(), 4);
    for (int64_t d : shape) put(static_cast<uint64_t>(d), 8);
    return b;
  };
  const std::string p = dir.file("t.mort");
  write_bytes(p, mort(20000000, std::vector<unsigned char>(64, 0)));
  expect_error<std::runtime_error>([&] { read_mort(p); },
                                   {p, "header claims 20000000 tensors", "the 64 bytes after it hold at most 5"});
  write_bytes(p, mort(1, tensor("w", 0, {int64_t(1) << 40})));
  expect_error<std::runtime_error>([&] { read_mort(p); },
                                   {p, "tensor 'w' at offset 12", "needs 4398046511104 bytes", "only 0 remain"});
  write_bytes(p, mort(1, tensor("w", 1, {int64_t(1) << 40, int64_t(1) << 40, 0})));
  expect_error<std::runtime_error>([&] { read_mort(p); }, {p, "tensor 'w'", "overflows"});
  write_bytes(p, mort(1, tensor("w", 2, {})));
  expect_error<std::runtime_error>([&] { read_mort(p); }, {p, "dtype 2"});
  auto ok = tensor("s", 0, {});
  ok.insert(ok.end(), {0, 0, 0x80, 0x3F});  // 1.0f
  write_bytes(p, mort(1, ok));
  const auto ts = read_mort(p);
  ASSERT_EQ(ts.size(), 1u);
  EXPECT_EQ(ts[0].f, std::vector<float>{1.0f});
  ok.insert(ok.end(), {'j', 'u', 'n', 'k'});
  write_bytes(p, mort(1, ok));
  expect_error<std::runtime_error>([&] { read_mort(p); }, {p, "4 trailing bytes after the last of 1 tensors"});
  ok.resize(ok.size() - 6);
  write_bytes(p, mort(1, ok));
  expect_error<std::runtime_error>([&] { read_mort(p); },
                                   {p, "needs 4 bytes of values but only 2 remain", "truncated"});
  expect_error<std::runtime_error>([&] { read_mort(dir.path()); }, {dir.path(), "is a directory"});
  // The writer refuses a tensor whose values do not match its shape (it would read past them).
  NamedTensor bad{"b", {2, 3}, false, {1.0f}, {}};
  expect_error<std::runtime_error>([&] { write_mort(dir.file("b.mort"), {bad}); }, {"holds 1 values", "shape has 6"});
}

}  // namespace mor::io
