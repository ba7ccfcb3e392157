// DataLoader / ValLoader: windows, permutation, world-size invariance,
// resume, prefetch.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <filesystem>
#include <numeric>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "io/data/loader.h"
#include "io/data/token_shard.h"
#include "io_test_util.h"

namespace mor::io {
namespace {

using testing::expect_error;
using testing::TempDir;

constexpr uint32_t kVocab = 65536;  // uint16 shards; token = global position (unique)
constexpr int kSeq = 16;

// Three train shards (written out of name order) of sizes 1000, 537, 17 plus
// a 10-token shard that is too short for a sample, and one val shard.
class LoaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::vector<std::pair<std::string, uint64_t>> shards = {
        {"edu_fineweb_train_000003.bin", 17},
        {"edu_fineweb_train_000001.bin", 1000},
        {"edu_fineweb_train_000004.bin", 10},
        {"edu_fineweb_train_000002.bin", 537},
    };
    // Token values: by sorted name order, running position across shards.
    std::vector<std::pair<std::string, uint64_t>> sorted = shards;
    std::sort(sorted.begin(), sorted.end());
    uint32_t next = 0;
    for (const auto& [name, n] : sorted) {
      std::vector<uint32_t> t(n);
      for (auto& x : t) x = next++;
      shard_tokens_.push_back(t);
      counts_.push_back(n);
    }
    for (const auto& [name, n] : shards) {
      const size_t s = static_cast<size_t>(
          std::find_if(sorted.begin(), sorted.end(), [&](auto& p) { return p.first == name; }) - sorted.begin());
      write_token_shard(dir_.file(name), shard_tokens_[s], kVocab);
    }
    std::vector<uint32_t> val(250);
    for (uint32_t i = 0; i < val.size(); ++i) val[i] = 60000 + i;
    write_token_shard(dir_.file("edu_fineweb_val_000000.bin"), val, kVocab);
    val_tokens_ = val;
  }

  LoaderConfig config(uint64_t seed = 7, bool shuffle = true) const {
    return LoaderConfig{dir_.file("edu_fineweb_train_*.bin"), kSeq, kVocab, seed, shuffle};
  }

  uint64_t expected_samples() const {
    uint64_t n = 0;
    for (auto c : counts_) n += c == 0 ? 0 : (c - 1) / kSeq;
    return n;
  }

  // Reads global steps [0, steps) as W simulated ranks (each its own loader,
  // as separate processes would), each rank in micro-batches of `micro`.
  std::vector<int32_t> read_steps_as_world(int world, int global_batch, int steps, int micro, bool use_prefetch) {
    std::vector<std::unique_ptr<DataLoader>> ranks;
    for (int r = 0; r < world; ++r) ranks.push_back(std::make_unique<DataLoader>(config()));
    const size_t L = kSeq + 1;
    std::vector<int32_t> all;
    for (int s = 0; s < steps; ++s) {
      for (int r = 0; r < world; ++r) {
        const SampleRange sl = rank_slice(static_cast<uint64_t>(s), global_batch, r, world);
        EXPECT_EQ(sl.count % static_cast<uint64_t>(micro), 0u);
        for (uint64_t m = 0; m < sl.count; m += static_cast<uint64_t>(micro)) {
          std::vector<int32_t> buf(static_cast<size_t>(micro) * L);
          if (use_prefetch) ranks[static_cast<size_t>(r)]->prefetch(sl.first + m, micro);
          ranks[static_cast<size_t>(r)]->read_samples(sl.first + m, micro, buf.data());
          all.insert(all.end(), buf.begin(), buf.end());
        }
      }
    }
    return all;
  }

  TempDir dir_;
  std::vector<std::vector<uint32_t>> shard_tokens_;  // in sorted-name order
  std::vector<uint64_t> counts_;
  std::vector<uint32_t> val_tokens_;
};

TEST_F(LoaderTest, ShardsSortedByNameAndSampleCounts) {
  DataLoader d(config());
  const TokenDataset& ds = d.dataset();
  ASSERT_EQ(ds.num_shards(), 4u);
  for (size_t s = 0; s + 1 < ds.num_shards(); ++s) EXPECT_LT(ds.shard(s).path(), ds.shard(s + 1).path());
  EXPECT_EQ(ds.shard_samples(0), (1000u - 1) / kSeq);  // 62
  EXPECT_EQ(ds.shard_samples(1), (537u - 1) / kSeq);   // 33
  EXPECT_EQ(ds.shard_samples(2), 1u);                  // 17 tokens: exactly one window
  EXPECT_EQ(ds.shard_samples(3), 0u);                  // 10 tokens: none
  EXPECT_EQ(d.num_samples(), expected_samples());
  EXPECT_EQ(ds.num_tokens(), 1000u + 537 + 17 + 10);
  EXPECT_EQ(d.sample_len(), kSeq + 1);
}

TEST_F(LoaderTest, WindowsAreConsecutiveAndShareOneToken) {
  DataLoader d(config());
  const TokenDataset& ds = d.dataset();
  std::vector<int32_t> w(kSeq + 1), prev(kSeq + 1);
  uint64_t k = 0;
  for (size_t s = 0; s < ds.num_shards(); ++s) {
    for (uint64_t j = 0; j < ds.shard_samples(s); ++j, ++k) {
      const auto loc = ds.locate(k);
      EXPECT_EQ(loc.shard, s);
      EXPECT_EQ(loc.offset, j * kSeq);
      ds.read_sample(k, w.data());
      for (int t = 0; t <= kSeq; ++t)
        ASSERT_EQ(static_cast<uint32_t>(w[static_cast<size_t>(t)]),
                  shard_tokens_[s][j * kSeq + static_cast<uint64_t>(t)]);
      if (j > 0) {
        EXPECT_EQ(w[0], prev[kSeq]);  // shared boundary token
      }
      prev = w;
    }
  }
  EXPECT_EQ(k, ds.num_samples());
  expect_error<std::out_of_range>([&] { ds.locate(k); }, {std::to_string(k)});
}

TEST(SamplePermutation, IsBijection) {
  for (uint64_t n : {1ull, 2ull, 3ull, 4ull, 5ull, 7ull, 10ull, 17ull, 64ull, 100ull, 1000ull, 4097ull, 65537ull}) {
    for (uint64_t seed : {0ull, 1ull, 0xDEADBEEFull}) {
      for (uint64_t epoch : {0ull, 1ull, 5ull}) {
        SamplePermutation p(n, seed, epoch);
        std::vector<uint8_t> seen(n, 0);
        for (uint64_t i = 0; i < n; ++i) {
          const uint64_t v = p(i);
          ASSERT_LT(v, n);
          ASSERT_EQ(seen[v], 0) << "n=" << n << " seed=" << seed << " epoch=" << epoch;
          seen[v] = 1;
        }
      }
    }
  }
}

std::vector<uint64_t> perm_list(uint64_t n, uint64_t seed, uint64_t epoch, bool shuffle = true) {
  SamplePermutation p(n, seed, epoch, shuffle);
  std::vector<uint64_t> v(n);
  for (uint64_t i = 0; i < n; ++i) v[i] = p(i);
  return v;
}

size_t agreements(const std::vector<uint64_t>& a, const std::vector<uint64_t>& b) {
  size_t same = 0;
  for (size_t i = 0; i < a.size(); ++i) same += a[i] == b[i];
  return same;
}

TEST(SamplePermutation, DiffersBySeedAndEpoch) {
  const uint64_t n = 1000;
  const auto base = perm_list(n, 1, 0);
  const auto other_seed = perm_list(n, 2, 0);
  const auto other_epoch = perm_list(n, 1, 1);
  std::vector<uint64_t> id(n);
  std::iota(id.begin(), id.end(), 0);
  // A random permutation agrees with another in ~1 place on average.
  EXPECT_LT(agreements(base, other_seed), 20u);
  EXPECT_LT(agreements(base, other_epoch), 20u);
  EXPECT_LT(agreements(other_seed, other_epoch), 20u);
  EXPECT_LT(agreements(base, id), 20u);
  EXPECT_EQ(base, perm_list(n, 1, 0));  // deterministic
  EXPECT_EQ(perm_list(n, 1, 3, false), id);
  EXPECT_EQ(perm_list(n, 99, 0, false), id);
}

// Pinned values: the order must never change silently (it would break resuming
// a run across versions) and must be the same on every platform.
TEST(SamplePermutation, GoldenValues) {
  EXPECT_EQ(perm_list(10, 42, 0), (std::vector<uint64_t>{8, 3, 9, 5, 7, 6, 4, 1, 0, 2}));
  EXPECT_EQ(perm_list(10, 42, 1), (std::vector<uint64_t>{6, 7, 9, 5, 3, 8, 1, 2, 4, 0}));
  SamplePermutation big(1000000007ull, 123, 4);
  EXPECT_EQ(big(0), 212392669u);
  EXPECT_EQ(big(999999999ull), 417151369u);
}

TEST_F(LoaderTest, ShuffleFalseIsFileOrder) {
  DataLoader d(config(7, /*shuffle=*/false));
  const uint64_t N = d.num_samples();
  for (uint64_t g = 0; g < 3 * N; ++g) EXPECT_EQ(d.dataset_index(g), g % N);
  std::vector<int32_t> out(2 * (kSeq + 1));
  d.read_samples(N - 1, 2, out.data());  // last of epoch 0, first of epoch 1
  EXPECT_EQ(static_cast<uint32_t>(out[kSeq + 1]), shard_tokens_[0][0]);
}

TEST_F(LoaderTest, EachEpochCoversEverySampleOnce) {
  DataLoader d(config());
  const uint64_t N = d.num_samples();
  const size_t L = kSeq + 1;
  std::vector<std::vector<uint64_t>> orders;
  for (uint64_t e = 0; e < 3; ++e) {
    std::vector<int32_t> out(N * L);
    d.read_samples(e * N, static_cast<int>(N), out.data());
    std::vector<uint64_t> order;
    std::set<int32_t> firsts;
    for (uint64_t i = 0; i < N; ++i) {
      const uint64_t k = d.dataset_index(e * N + i);
      EXPECT_EQ(d.epoch_of(e * N + i), e);
      order.push_back(k);
      std::vector<int32_t> want(L);
      d.dataset().read_sample(k, want.data());
      ASSERT_TRUE(std::equal(want.begin(), want.end(), out.begin() + static_cast<long>(i * L)));
      firsts.insert(out[i * L]);  // tokens are unique positions: first token identifies a window
    }
    EXPECT_EQ(firsts.size(), N);
    std::vector<uint64_t> sorted = order;
    std::sort(sorted.begin(), sorted.end());
    for (uint64_t i = 0; i < N; ++i) ASSERT_EQ(sorted[i], i);
    orders.push_back(order);
  }
  EXPECT_NE(orders[0], orders[1]);
  EXPECT_NE(orders[1], orders[2]);
}

TEST_F(LoaderTest, DifferentSeedsGiveDifferentOrders) {
  DataLoader a(config(1)), b(config(2));
  std::vector<int32_t> x(8 * (kSeq + 1)), y(8 * (kSeq + 1));
  a.read_samples(0, 8, x.data());
  b.read_samples(0, 8, y.data());
  EXPECT_NE(x, y);
}

TEST(RankSlice, ContiguousSlices) {
  const SampleRange a = rank_slice(3, 12, 0, 4);
  EXPECT_EQ(a.first, 36u);
  EXPECT_EQ(a.count, 3u);
  const SampleRange b = rank_slice(3, 12, 3, 4);
  EXPECT_EQ(b.first, 45u);
  EXPECT_EQ(b.count, 3u);
  const SampleRange c = rank_slice(0, 8, 0, 1);
  EXPECT_EQ(c.first, 0u);
  EXPECT_EQ(c.count, 8u);
}

TEST(RankSlice, RejectsIndivisibleBatch) {
  expect_error<std::invalid_argument>([] { rank_slice(0, 10, 0, 4); }, {"10", "4", "divisible"});
  expect_error<std::invalid_argument>([] { rank_slice(0, 12, 4, 4); }, {"rank 4"});
  expect_error<std::invalid_argument>([] { rank_slice(0, 12, 0, 0); }, {"world size 0"});
  expect_error<std::invalid_argument>([] { rank_slice(0, 0, 0, 1); }, {"global batch 0"});
}

TEST(EvenSlice, CoversRangeInOrder) {
  for (int world = 1; world <= 5; ++world) {
    uint64_t next = 0;
    for (int r = 0; r < world; ++r) {
      const SampleRange s = even_slice(13, r, world);
      EXPECT_EQ(s.first, next);
      EXPECT_LE(s.count, 13u / static_cast<uint64_t>(world) + 1);
      next += s.count;
    }
    EXPECT_EQ(next, 13u);
  }
}

TEST_F(LoaderTest, SameSamplesForWorldSizes1234) {
  // B = 12, 20 steps = 240 samples > 2 epochs (N = 96): crosses epoch boundaries.
  const int B = 12, steps = 20;
  ASSERT_LT(expected_samples() * 2, static_cast<uint64_t>(B * steps));
  const auto w1 = read_steps_as_world(1, B, steps, 12, false);
  // Reference: the plain global ranges [s*B, (s+1)*B).
  DataLoader ref(config());
  std::vector<int32_t> direct(static_cast<size_t>(B * steps) * (kSeq + 1));
  ref.read_samples(0, B * steps, direct.data());
  EXPECT_EQ(w1, direct);
  EXPECT_EQ(read_steps_as_world(2, B, steps, 3, false), w1);  // 2 ranks, accum 2
  EXPECT_EQ(read_steps_as_world(3, B, steps, 4, true), w1);   // 3 ranks, prefetching
  EXPECT_EQ(read_steps_as_world(4, B, steps, 1, false), w1);  // 4 ranks, accum 3
  EXPECT_EQ(read_steps_as_world(4, B, steps, 3, true), w1);
}

TEST_F(LoaderTest, ResumeFromSavedStateContinuesExactly) {
  const int B = 8;
  const size_t L = kSeq + 1;
  // Uninterrupted run: 30 steps.
  std::vector<int32_t> full;
  {
    DataLoader d(config());
    LoaderState st;
    for (int s = 0; s < 30; ++s) {
      std::vector<int32_t> buf(B * L);
      d.read_next(st, B, buf.data());
      full.insert(full.end(), buf.begin(), buf.end());
    }
    EXPECT_EQ(st.next_sample, 30u * B);
    EXPECT_EQ(st.epoch(d.num_samples()), 30u * B / d.num_samples());
  }
  // Interrupted after 11 steps; state saved as a plain integer (as the
  // checkpoint stores it), resumed by a fresh loader, and by 2 ranks.
  uint64_t saved = 0;
  std::vector<int32_t> part;
  {
    DataLoader d(config());
    LoaderState st;
    for (int s = 0; s < 11; ++s) {
      std::vector<int32_t> buf(B * L);
      d.prefetch(st.next_sample, B);
      d.read_next(st, B, buf.data());
      part.insert(part.end(), buf.begin(), buf.end());
    }
    saved = st.next_sample;
  }
  EXPECT_EQ(saved, 11u * B);
  {
    DataLoader d(config());
    LoaderState st{saved};
    std::vector<int32_t> resumed = part;
    for (int s = 11; s < 30; ++s) {
      std::vector<int32_t> buf(B * L);
      d.read_next(st, B, buf.data());
      resumed.insert(resumed.end(), buf.begin(), buf.end());
    }
    EXPECT_EQ(resumed, full);
  }
  {
    // Resume on world size 2: step s = saved / B.
    DataLoader r0(config()), r1(config());
    std::vector<int32_t> resumed = part;
    for (uint64_t s = saved / B; s < 30; ++s) {
      for (int r = 0; r < 2; ++r) {
        const SampleRange sl = rank_slice(s, B, r, 2);
        std::vector<int32_t> buf(sl.count * L);
        (r == 0 ? r0 : r1).read_samples(sl.first, static_cast<int>(sl.count), buf.data());
        resumed.insert(resumed.end(), buf.begin(), buf.end());
      }
    }
    EXPECT_EQ(resumed, full);
  }
}

TEST_F(LoaderTest, PrefetchMatchesSynchronousRead) {
  DataLoader pre(config()), sync(config());
  const size_t L = kSeq + 1;
  const int n = 10;
  uint64_t hits = 0;
  // Pipelined: prefetch step s+1 while "computing" step s.
  pre.prefetch(0, n);
  for (uint64_t s = 0; s < 25; ++s) {
    std::vector<int32_t> a(n * L, -1), b(n * L, -2);
    pre.read_samples(s * n, n, a.data());
    pre.prefetch((s + 1) * n, n);
    sync.read_samples(s * n, n, b.data());
    ASSERT_EQ(a, b) << "step " << s;
    ++hits;
  }
  EXPECT_EQ(pre.prefetch_hits(), hits);
  EXPECT_EQ(sync.prefetch_hits(), 0u);

  // A read of another range is served synchronously; the prefetch stays usable.
  std::vector<int32_t> a(n * L), b(n * L);
  pre.prefetch(1000, n);
  pre.read_samples(2000, n, a.data());
  sync.read_samples(2000, n, b.data());
  EXPECT_EQ(a, b);
  EXPECT_EQ(pre.prefetch_hits(), hits);
  pre.read_samples(1000, n, a.data());
  sync.read_samples(1000, n, b.data());
  EXPECT_EQ(a, b);
  EXPECT_EQ(pre.prefetch_hits(), hits + 1);

  // A replaced prefetch: only the newest range is served from the buffer.
  pre.prefetch(3000, n);
  pre.prefetch(4000, n);
  pre.read_samples(3000, n, a.data());
  sync.read_samples(3000, n, b.data());
  EXPECT_EQ(a, b);
  EXPECT_EQ(pre.prefetch_hits(), hits + 1);
  pre.read_samples(4000, n, a.data());
  sync.read_samples(4000, n, b.data());
  EXPECT_EQ(a, b);
  EXPECT_EQ(pre.prefetch_hits(), hits + 2);

  // Zero samples.
  pre.prefetch(5, 0);
  pre.read_samples(5, 0, a.data());
  expect_error<std::invalid_argument>([&] { pre.prefetch(0, -1); }, {"-1"});
}

TEST_F(LoaderTest, ConcurrentReadersAndCleanShutdown) {
  const size_t L = kSeq + 1;
  DataLoader ref(config());
  std::vector<int32_t> want(64 * L);
  ref.read_samples(500, 64, want.data());
  for (int round = 0; round < 20; ++round) {
    DataLoader d(config());
    d.prefetch(500, 64);
    std::atomic<int> ok{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t)
      threads.emplace_back([&] {
        std::vector<int32_t> got(64 * L);
        d.read_samples(500, 64, got.data());
        ok += got == want;
      });
    for (auto& th : threads) th.join();
    EXPECT_EQ(ok.load(), 4);
    EXPECT_LE(d.prefetch_hits(), 1u);
    d.prefetch(10000, 64);  // destroyed with a pending / running prefetch
  }
}

TEST_F(LoaderTest, ValLoaderCoversValShardInOrder) {
  ValLoader v(dir_.file("edu_fineweb_val_*.bin"), kSeq, kVocab);
  const int n = v.num_samples();
  EXPECT_EQ(n, static_cast<int>((val_tokens_.size() - 1) / kSeq));
  const size_t L = kSeq + 1;
  std::vector<int32_t> out(static_cast<size_t>(n) * L);
  v.read_samples(0, n, out.data());
  for (int j = 0; j < n; ++j)
    for (size_t t = 0; t < L; ++t)
      ASSERT_EQ(static_cast<uint32_t>(out[static_cast<size_t>(j) * L + t]),
                val_tokens_[static_cast<size_t>(j) * kSeq + t]);
  // Every target token from position 1 to n*seq_len is scored exactly once.
  std::vector<int32_t> part(3 * L);
  v.read_samples(4, 3, part.data());
  EXPECT_TRUE(std::equal(part.begin(), part.end(), out.begin() + 4 * static_cast<long>(L)));
  expect_error<std::out_of_range>([&] { v.read_samples(static_cast<uint64_t>(n) - 1, 2, part.data()); },
                                  {"out of range"});
}

TEST_F(LoaderTest, ValLoaderOverSeveralShards) {
  ValLoader v(dir_.file("edu_fineweb_train_*.bin"), kSeq, kVocab);
  DataLoader d(config(0, false));
  ASSERT_EQ(static_cast<uint64_t>(v.num_samples()), d.num_samples());
  std::vector<int32_t> a(static_cast<size_t>(v.num_samples()) * (kSeq + 1)), b(a.size());
  v.read_samples(0, v.num_samples(), a.data());
  d.read_samples(0, v.num_samples(), b.data());
  EXPECT_EQ(a, b);
}

TEST_F(LoaderTest, ConfigErrors) {
  LoaderConfig c = config();
  c.seq_len = 0;
  expect_error<std::invalid_argument>([&] { DataLoader d(c); }, {"seq_len 0"});
  c = config();
  c.seq_len = 5000;  // no shard has 5001 tokens
  expect_error<std::runtime_error>([&] { DataLoader d(c); }, {"no samples", "5001"});
  c = config();
  c.vocab_size = 0;
  expect_error<std::invalid_argument>([&] { DataLoader d(c); }, {"vocab_size"});
  c = config();
  c.vocab_size = 999;  // shard 1 holds ids 0..999, later shards larger ones
  expect_error<std::runtime_error>([&] { DataLoader d(c); },
                                   {dir_.file("edu_fineweb_train_000001.bin"), "token id 999", "token index 999"});
}

// The data glob never drops a match silently: whatever it matches that is not a regular file
// is an error naming it and what it is, and a directory given as the pattern says so.
TEST(GlobShards, DirectoryAsThePatternSaysSo) {
  TempDir dir;
  write_token_shard(dir.file("edu_fineweb_train_000001.bin"), {1, 2, 3}, 100);
  expect_error<std::runtime_error>([&] { glob_shards(dir.path()); },
                                   {"'" + dir.path() + "' is a directory", dir.path() + "/*"});
  expect_error<std::runtime_error>([&] { DataLoader d(LoaderConfig{dir.path(), 2, 100, 1}); }, {"is a directory"});
  expect_error<std::runtime_error>([&] { ValLoader v(dir.path(), 2, 100); }, {"is a directory"});
}

TEST(GlobShards, DanglingSymlinkDirectoryAndLoopAreNamed) {
  namespace fs = std::filesystem;
  TempDir dir;
  const std::string pattern = dir.file("edu_fineweb_train_*.bin");
  write_token_shard(dir.file("edu_fineweb_train_000001.bin"), {1, 2, 3}, 100);
  EXPECT_EQ(glob_shards(pattern), std::vector<std::string>{dir.file("edu_fineweb_train_000001.bin")});

  fs::create_symlink(dir.file("gone.bin"), dir.file("edu_fineweb_train_000002.bin"));  // dangling
  expect_error<std::runtime_error>(
      [&] { glob_shards(pattern); },
      {"token shards", pattern, "1 path that is not a regular file", dir.file("edu_fineweb_train_000002.bin"),
       "a dangling symlink to '" + dir.file("gone.bin") + "'"});
  expect_error<std::runtime_error>(
      [&] {
        DataLoader d(LoaderConfig{pattern, 2, 100, 1});
      },
      {dir.file("edu_fineweb_train_000002.bin"), "dangling symlink"});
  fs::remove(dir.file("edu_fineweb_train_000002.bin"));

  fs::create_directory(dir.file("edu_fineweb_train_000003.bin"));
  fs::create_symlink(dir.file("edu_fineweb_train_000004.bin"), dir.file("edu_fineweb_train_000004.bin"));  // loop
  expect_error<std::runtime_error>(
      [&] { glob_shards(pattern); },
      {"2 paths that are not regular files", "'" + dir.file("edu_fineweb_train_000003.bin") + "' is a directory",
       "'" + dir.file("edu_fineweb_train_000004.bin") + "' is a symlink loop"});
  fs::remove(dir.file("edu_fineweb_train_000004.bin"));
  fs::remove(dir.file("edu_fineweb_train_000003.bin"));

  // A symlink to a real shard is a file like any other.
  fs::create_symlink(dir.file("edu_fineweb_train_000001.bin"), dir.file("edu_fineweb_train_000005.bin"));
  EXPECT_EQ(glob_shards(pattern).size(), 2u);
}

}  // namespace
}  // namespace mor::io
