// Communicator and ShardedParams under a real `mpirun -np N` (registered for
// N = 1..4, and for N = 2, 3 with MOR_TEST_COMM_MAX_CHUNK=7 so that every collective over more
// than 7 elements takes the split 64-bit-count path): every collective and dtype against its
// definition, byte counters, bf16 rounding, handles destroyed early, and the shard -> gather
// round trip of a model whose row counts do not divide N. MpiCommStall.* runs only from the
// mpi_comm_stall_* tests (MOR_TEST_COMM_STALL names the collective).
#include <gtest/gtest.h>
#include <mpi.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <thread>
#include <type_traits>

#include "dist/communicator.h"
#include "dist/nccl_bootstrap.h"
#include "dist/sharded_params.h"
#include "kernels/cpu/cpu_backend.h"

using namespace mor;

static dist::Communicator* g_comm = nullptr;

// The NCCL communicator's start-up logic (dist/nccl_bootstrap.h), here without NCCL: rank 0's id
// reaches every rank bit for bit, and only rank 0 makes one.
TEST(NcclBootstrap, EveryRankGetsRankZerosUniqueId) {
  auto& c = *g_comm;
  int made = 0;
  const dist::NcclUniqueIdBytes got = dist::share_unique_id(c, [&] {
    ++made;
    dist::NcclUniqueIdBytes id;
    for (size_t i = 0; i < id.size(); ++i) id[i] = (uint8_t)(7 * i + 3);
    return id;
  });
  EXPECT_EQ(made, c.rank() == 0 ? 1 : 0);
  for (size_t i = 0; i < got.size(); ++i) ASSERT_EQ(got[i], (uint8_t)(7 * i + 3)) << "byte " << i;
}

TEST(MpiComm, AllGatherConcatenatesInRankOrder) {
  auto& c = *g_comm;
  const int W = c.size(), n = 5;
  std::vector<float> send(n), recv(n * W);
  for (int i = 0; i < n; ++i) send[i] = 100.f * c.rank() + i;
  c.stats.clear();
  c.all_gather(send.data(), recv.data(), n, "t/ag");
  for (int q = 0; q < W; ++q)
    for (int i = 0; i < n; ++i) EXPECT_EQ(recv[q * n + i], 100.f * q + i);
  EXPECT_EQ(c.stats.bytes["t/ag"], (uint64_t)n * 4 * (W - 1));
  EXPECT_EQ(c.stats.calls["t/ag"], 1u);
}

TEST(MpiComm, ReduceScatterSumsBlockOfRank) {
  auto& c = *g_comm;
  const int W = c.size(), n = 3;
  std::vector<float> send(n * W), recv(n);
  for (int q = 0; q < W; ++q)
    for (int i = 0; i < n; ++i) send[q * n + i] = (float)(c.rank() + 1) * (q * 10 + i);
  c.reduce_scatter(send.data(), recv.data(), n, "t/rs");
  const float ranks_sum = W * (W + 1) / 2.f;
  for (int i = 0; i < n; ++i) EXPECT_EQ(recv[i], ranks_sum * (c.rank() * 10 + i));
}

TEST(MpiComm, NonBlockingCollectivesCompleteInAnyWaitOrder) {
  auto& c = *g_comm;
  const int W = c.size(), n = 1000;
  std::vector<float> a(n, (float)c.rank()), ra(n * W), b(n * W, 1.f), rb(n);
  auto r1 = c.iall_gather(a.data(), ra.data(), n, "t/ag2");
  auto r2 = c.ireduce_scatter(b.data(), rb.data(), n, "t/rs2");
  r2->wait();
  r1->wait();
  for (int q = 0; q < W; ++q) EXPECT_EQ(ra[q * n + n - 1], (float)q);
  EXPECT_EQ(rb[0], (float)W);
}

TEST(MpiComm, AllReduceAndBroadcast) {
  auto& c = *g_comm;
  double v[2] = {1.0 * c.rank(), 2.0};
  c.all_reduce_sum(v, 2, "t/ar");
  EXPECT_EQ(v[0], c.size() * (c.size() - 1) / 2.0);
  EXPECT_EQ(v[1], 2.0 * c.size());
  int x = c.rank() == 0 ? 42 : -1;
  c.broadcast(&x, 1, 0, "t/bc");  // typed: one int, not sizeof(int) bytes
  EXPECT_EQ(x, 42);
}

// ---- every collective for every dtype ----------------------------------------------------------
// 23 elements: 4 pieces (7+7+7+2) when MOR_TEST_COMM_MAX_CHUNK=7.
constexpr int64_t kN = 23;

// Rank r's element i. Sums over ranks are exact; the 64-bit ones are far beyond 2^53, so a sum
// that went through doubles would lose their low bits.
template <class T>
T val(int r, int64_t i) {
  if constexpr (std::is_same_v<T, uint64_t>)
    return (uint64_t(1) << 60) + 3u * (uint64_t)r + (uint64_t)i;
  else if constexpr (std::is_same_v<T, int64_t>)
    return -(int64_t(1) << 58) - 5 * (int64_t)r + i;
  else
    return T(100 * r + i);
}
template <class T>
T sum_val(int W, int64_t i) {
  T s = 0;
  for (int r = 0; r < W; ++r) s += val<T>(r, i);
  return s;
}
// Element i's largest value is on rank i % W; unsigned: above 2^63 (wrong under a signed
// comparison); signed: the only non-negative one (wrong under an unsigned comparison).
template <class T>
T max_val(int r, int W, int64_t i) {
  const bool top = r == i % W;
  if constexpr (std::is_unsigned_v<T>)
    return top ? (uint64_t(1) << 63) + (uint64_t)i : 7u * (uint64_t)r + (uint64_t)i;
  else
    return top ? T(i) : T(-1000 * (r + 1) - i);
}

template <class T>
class MpiCommTyped : public ::testing::Test {};
using CommTypes = ::testing::Types<float, double, int32_t, int64_t, uint64_t>;
TYPED_TEST_SUITE(MpiCommTyped, CommTypes);

TYPED_TEST(MpiCommTyped, AllGather) {
  using T = TypeParam;
  auto& c = *g_comm;
  const int W = c.size();
  std::vector<T> send(kN), recv(kN * W);
  for (int64_t i = 0; i < kN; ++i) send[i] = val<T>(c.rank(), i);
  c.stats.clear();
  c.all_gather(send.data(), recv.data(), kN, "t/ag_typed");
  for (int q = 0; q < W; ++q)
    for (int64_t i = 0; i < kN; ++i)
      ASSERT_EQ(recv[q * kN + i], val<T>(q, i)) << "rank block " << q << " element " << i;
  EXPECT_EQ(c.stats.bytes["t/ag_typed"], (uint64_t)kN * sizeof(T) * (W - 1));
  EXPECT_EQ(c.stats.calls["t/ag_typed"], 1u);
}

TYPED_TEST(MpiCommTyped, ReduceScatterSum) {
  using T = TypeParam;
  auto& c = *g_comm;
  const int W = c.size();
  std::vector<T> send(kN * W), recv(kN);
  for (int q = 0; q < W; ++q)
    for (int64_t i = 0; i < kN; ++i) send[q * kN + i] = val<T>(c.rank(), q * kN + i);
  c.stats.clear();
  c.reduce_scatter(send.data(), recv.data(), kN, "t/rs_typed");
  for (int64_t i = 0; i < kN; ++i) ASSERT_EQ(recv[i], sum_val<T>(W, c.rank() * kN + i)) << i;
  EXPECT_EQ(c.stats.bytes["t/rs_typed"], (uint64_t)kN * sizeof(T) * (W - 1));
}

TYPED_TEST(MpiCommTyped, ReduceScatterMax) {
  using T = TypeParam;
  auto& c = *g_comm;
  const int W = c.size();
  std::vector<T> send(kN * W), recv(kN);
  for (int64_t j = 0; j < kN * W; ++j) send[j] = max_val<T>(c.rank(), W, j);
  c.ireduce_scatter(send.data(), recv.data(), kN, kern::dtype_of<T>(), dist::ReduceOp::Max, "t/rsmax_typed")->wait();
  for (int64_t i = 0; i < kN; ++i)
    ASSERT_EQ(recv[i], max_val<T>((int)((c.rank() * kN + i) % W), W, c.rank() * kN + i)) << i;
}

TYPED_TEST(MpiCommTyped, AllReduceSumAndMax) {
  using T = TypeParam;
  auto& c = *g_comm;
  const int W = c.size();
  std::vector<T> s(kN), m(kN);
  for (int64_t i = 0; i < kN; ++i) s[i] = val<T>(c.rank(), i), m[i] = max_val<T>(c.rank(), W, i);
  c.stats.clear();
  c.all_reduce_sum(s.data(), kN, "t/ar_typed");
  c.all_reduce_max(m.data(), kN, "t/ar_typed");
  for (int64_t i = 0; i < kN; ++i) {
    ASSERT_EQ(s[i], sum_val<T>(W, i)) << i;
    ASSERT_EQ(m[i], max_val<T>((int)(i % W), W, i)) << i;
  }
  EXPECT_EQ(c.stats.calls["t/ar_typed"], 2u);
  EXPECT_EQ(c.stats.bytes["t/ar_typed"], 2 * (uint64_t)(2.0 * kN * sizeof(T) * (W - 1) / W));
}

TYPED_TEST(MpiCommTyped, BroadcastFromLastRank) {
  using T = TypeParam;
  auto& c = *g_comm;
  const int W = c.size(), root = W - 1;
  std::vector<T> v(kN);
  for (int64_t i = 0; i < kN; ++i) v[i] = val<T>(c.rank(), i);
  c.stats.clear();
  c.broadcast(v.data(), kN, root, "t/bc_typed");
  for (int64_t i = 0; i < kN; ++i) ASSERT_EQ(v[i], val<T>(root, i)) << i;
  EXPECT_EQ(c.stats.bytes["t/bc_typed"], c.rank() == root ? (uint64_t)kN * sizeof(T) * (W - 1) : 0u);
}

TEST(MpiComm, EmptyCollectivesComplete) {
  auto& c = *g_comm;
  std::vector<double> a(1, 3.0), b(c.size(), 5.0);
  c.all_gather(a.data(), b.data(), 0, "t/empty");
  c.reduce_scatter(b.data(), a.data(), 0, "t/empty");
  c.all_reduce_sum(a.data(), 0, "t/empty");
  c.broadcast(a.data(), 0, 0, "t/empty");
  EXPECT_EQ(a[0], 3.0);
  EXPECT_EQ(b[0], 5.0);
  EXPECT_EQ(c.stats.bytes["t/empty"], 0u);
}

TEST(MpiComm, BadArgumentsThrowBeforeAnyRankCommunicates) {
  auto& c = *g_comm;
  double x = 0;
  EXPECT_THROW(c.all_reduce_sum(&x, -1, "t/bad"), std::invalid_argument);
  EXPECT_THROW(c.broadcast(&x, 1, c.size(), "t/bad"), std::invalid_argument);
}

// The split path is taken exactly when a count exceeds the limit (MOR_TEST_COMM_MAX_CHUNK).
TEST(MpiComm, CountsAboveTheLimitAreSplit) {
  auto& c = *g_comm;
  const char* lim = std::getenv("MOR_TEST_COMM_MAX_CHUNK");
  const int64_t limit = lim ? std::atoll(lim) : INT64_MAX;
  std::vector<float> a(kN, 1.f), g(kN * c.size());
  c.stats.clear();
  c.all_gather(a.data(), g.data(), 7, "t/split");
  const uint64_t first = limit < 7 ? 1 : 0;
  EXPECT_EQ(c.stats.split_calls, first);
  c.all_gather(a.data(), g.data(), kN, "t/split");
  c.reduce_scatter(g.data(), a.data(), kN, "t/split");
  c.all_reduce_sum(a.data(), kN, "t/split");
  c.broadcast(a.data(), kN, 0, "t/split");
  EXPECT_EQ(c.stats.split_calls, first + (limit < kN ? 4 : 0));
  for (int64_t i = 0; i < kN; ++i) ASSERT_EQ(a[i], (float)c.size() * c.size()) << i;
}

// ---- bf16 ------------------------------------------------------------------------------------
// Test-local conversions (exact for the values used here).
static uint16_t bf(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return (uint16_t)(u >> 16);
}

// Gathers and broadcasts move the 16 bits untouched, NaN payloads included.
TEST(MpiCommBf16, AllGatherAndBroadcastMoveBits) {
  auto& c = *g_comm;
  const int W = c.size();
  auto bits = [](int r, int64_t i) { return (uint16_t)(i == 0 ? 0x7fc1 : i == 1 ? 0xffff : 0x0101 * r + 3 * i); };
  std::vector<uint16_t> send(kN), recv(kN * W);
  for (int64_t i = 0; i < kN; ++i) send[i] = bits(c.rank(), i);
  c.stats.clear();
  c.iall_gather(send.data(), recv.data(), kN, kern::DType::BF16, "t/ag_bf16")->wait();
  for (int q = 0; q < W; ++q)
    for (int64_t i = 0; i < kN; ++i) ASSERT_EQ(recv[q * kN + i], bits(q, i));
  EXPECT_EQ(c.stats.bytes["t/ag_bf16"], (uint64_t)kN * 2 * (W - 1));
  c.broadcast(send.data(), kN, kern::DType::BF16, 0, "t/bc_bf16");
  for (int64_t i = 0; i < kN; ++i) ASSERT_EQ(send[i], bits(0, i));
}

// Rank 0 holds a, rank 1 holds b, every other rank 0: the sum is one fp32 addition rounded to
// nearest even, whatever order the reduction takes. Truncation fails 1 and 2, round-half-up 0 and 4.
struct Bf16Case {
  uint16_t a, b, sum;
};
static const Bf16Case kBf16Sums[] = {
    {0x3f80, 0x3b80, 0x3f80},  // 1 + 2^-8: a tie, rounds to the even 1.0
    {0x3f81, 0x3b80, 0x3f82},  // (1 + 2^-7) + 2^-8: a tie, rounds up to the even 1 + 2^-6
    {0x3f80, 0x3bc0, 0x3f81},  // 1 + 1.5*2^-8: above the tie, rounds up
    {0x3f80, 0x3b00, 0x3f80},  // 1 + 2^-9: below the tie, rounds down
    {0xbf81, 0xbb80, 0xbf82},  // negative tie: to even
    {0x7f7f, 0x7f7f, 0x7f80},  // largest finite twice: inf
    {0x3f80, 0x3f80, 0x4000},  // exact: 2
    {0x3f80, 0xbf80, 0x0000},  // exact: 0
    {0x4040, 0x0000, 0x4040},  // 3 + 0
};
constexpr int64_t kBf16Cases = sizeof kBf16Sums / sizeof kBf16Sums[0];

static uint16_t bf16_input(int r, int64_t i) {
  const Bf16Case& k = kBf16Sums[i % kBf16Cases];
  return r == 0 ? k.a : r == 1 ? k.b : 0;
}
static uint16_t bf16_expected(int W, int64_t i) {
  const Bf16Case& k = kBf16Sums[i % kBf16Cases];
  return W == 1 ? k.a : k.sum;
}

TEST(MpiCommBf16, AllReduceSumRoundsToNearestEven) {
  auto& c = *g_comm;
  const int64_t n = 2 * kBf16Cases;  // 18: split when the limit is 7
  std::vector<uint16_t> v(n);
  for (int64_t i = 0; i < n; ++i) v[i] = bf16_input(c.rank(), i);
  c.all_reduce(v.data(), n, kern::DType::BF16, dist::ReduceOp::Sum, "t/ar_bf16");
  for (int64_t i = 0; i < n; ++i) EXPECT_EQ(v[i], bf16_expected(c.size(), i)) << "case " << i % kBf16Cases;
  // Every rank adding 1.0: the count of ranks, exactly.
  uint16_t one = 0x3f80;
  c.all_reduce(&one, 1, kern::DType::BF16, dist::ReduceOp::Sum, "t/ar_bf16");
  EXPECT_EQ(one, bf((float)c.size()));
}

TEST(MpiCommBf16, ReduceScatterSumRoundsToNearestEven) {
  auto& c = *g_comm;
  const int W = c.size();
  const int64_t n = 2 * kBf16Cases;
  std::vector<uint16_t> send(n * W), recv(n);
  for (int q = 0; q < W; ++q)
    for (int64_t i = 0; i < n; ++i) send[q * n + i] = bf16_input(c.rank(), i + q);  // each block shifted by its rank
  c.ireduce_scatter(send.data(), recv.data(), n, kern::DType::BF16, dist::ReduceOp::Sum, "t/rs_bf16")->wait();
  for (int64_t i = 0; i < n; ++i) EXPECT_EQ(recv[i], bf16_expected(W, i + c.rank())) << i;
}

TEST(MpiCommBf16, AllReduceMax) {
  auto& c = *g_comm;
  const int W = c.size();
  // element 0: -1.5 * (r + 1) (max -1.5, on rank 0); element 1: r - 2.5 (max on the last rank);
  // element 2: a NaN on the last rank wins.
  std::vector<uint16_t> v = {bf(-1.5f * (c.rank() + 1)), bf(c.rank() - 2.5f),
                             c.rank() == W - 1 ? (uint16_t)0x7fc0 : bf(1.f)};
  c.all_reduce(v.data(), 3, kern::DType::BF16, dist::ReduceOp::Max, "t/max_bf16");
  EXPECT_EQ(v[0], bf(-1.5f));
  EXPECT_EQ(v[1], bf(W - 3.5f));
  EXPECT_EQ(v[2], 0x7fc0);
}

// ---- handles ------------------------------------------------------------------------------------
// Rank 0 starts an all-gather and drops its handle while the other ranks have not joined (they
// wait for a message rank 0 sends only after checking that): the destructor waits for the
// collective, so the data is complete afterwards and nothing terminates.
TEST(MpiComm, HandleDestroyedBeforeCompletionWaits) {
  auto& c = *g_comm;
  const int W = c.size(), n = 64;
  std::vector<int64_t> send(n, 10 + c.rank()), recv(n * W, -1);
  int go = 1;
  if (c.rank() == 0) {
    auto w = c.iall_gather(send.data(), recv.data(), n, "t/dropped");
    if (W > 1) {
      EXPECT_FALSE(w->test()) << "completed before the other ranks joined";
    }
    for (int q = 1; q < W; ++q) MPI_Send(&go, 1, MPI_INT, q, 17, MPI_COMM_WORLD);
    w.reset();  // unfinished: waits
  } else {
    MPI_Recv(&go, 1, MPI_INT, 0, 17, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    c.iall_gather(send.data(), recv.data(), n, "t/dropped");  // a temporary handle, destroyed at once
  }
  for (int q = 0; q < W; ++q) EXPECT_EQ(recv[q * n + n - 1], 10 + q);
  // A finished handle: test() is true, wait() may be called again.
  auto w = c.iall_gather(send.data(), recv.data(), n, "t/dropped");
  w->wait();
  EXPECT_TRUE(w->test());
  w->wait();
}

// A handle pending while an exception unwinds the stack is waited on, not std::terminate'd.
TEST(MpiComm, HandleDestroyedDuringUnwindingWaits) {
  auto& c = *g_comm;
  const int W = c.size(), n = 16;
  std::vector<float> send(n * W, 1.f), recv(n, 0.f);
  EXPECT_THROW(
      {
        auto w = c.ireduce_scatter(send.data(), recv.data(), n, "t/unwind");
        throw std::runtime_error("compute failed");
      },
      std::runtime_error);
  EXPECT_EQ(recv[n - 1], (float)W);
}

// ---- the stall timeout, for every collective (tests/CMakeLists.txt: mpi_comm_stall_*) ----------
// The last rank never joins; the others must end the job with kExitCollectiveTimeout.
TEST(MpiCommStall, EndsTheJobWithExitStatus5) {
  const char* which = std::getenv("MOR_TEST_COMM_STALL");
  if (!which) GTEST_SKIP() << "runs from the mpi_comm_stall_* tests";
  auto& c = *g_comm;
  ASSERT_GE(c.size(), 2);
  c.set_timeout(1);
  c.set_context("stall test");
  // Ended by the others after 1 s; should they not, it joins after 20 s and the test fails (rc != 5).
  if (c.rank() == c.size() - 1) std::this_thread::sleep_for(std::chrono::seconds(20));
  const std::string w = which;
  std::vector<float> a(8 * c.size()), b(8 * c.size());
  if (w == "allgather") {
    auto h = c.iall_gather(a.data(), b.data(), 8, "t/stall");  // destroyed unfinished: the destructor waits
  } else if (w == "reducescatter") {
    c.reduce_scatter(a.data(), b.data(), 8, "t/stall");
  } else if (w == "allreduce") {
    c.all_reduce_sum(a.data(), 8, "t/stall");
  } else if (w == "broadcast") {
    c.broadcast(a.data(), 8, c.size() - 1, "t/stall");  // a root need not wait for the receivers
  } else if (w == "barrier") {
    c.barrier();
  } else {
    FAIL() << "unknown MOR_TEST_COMM_STALL=" << w;
  }
  ADD_FAILURE() << w << " returned although rank " << c.size() - 1 << " never joined";
}

TEST(ShardedParams, ShardThenGatherIsBitwiseIdentity) {
  ModelConfig cfg;
  cfg.vocab_size = 37;  // odd row counts: the last row block is padded
  cfg.d_model = 12;
  cfg.n_heads = 2;
  cfg.n_kv_heads = 1;
  cfg.d_ff = 19;
  cfg.n_layers = 5;
  cfg.seq_len = 8;
  cfg.n_recursions = 3;
  cfg.router = RouterKind::Expert;
  Model m(cfg, kern::cpu_backend());
  m.init(3);
  const std::vector<float> full = m.params.to_host_vector();
  dist::ShardedParams sp(m, *g_comm, {});
  sp.shard_from_full();
  // Each rank holds ~1/W of the parameters (plus padding).
  EXPECT_LE(sp.shard_size() * g_comm->size(),
            m.layout.total + (int64_t)m.layout.tensors.size() * cfg.d_model * g_comm->size());
  std::fill(m.params.data(), m.params.data() + m.params.size(), -7.f);  // CPU backend: host memory
  sp.gather_full();
  EXPECT_EQ(std::memcmp(full.data(), m.params.data(), full.size() * sizeof(float)), 0);
}

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  auto comm = dist::make_mpi_comm(&argc, &argv);
  g_comm = comm.get();
  // Only rank 0 prints the gtest report; every rank's failures count.
  if (comm->rank() != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  int failed = RUN_ALL_TESTS() != 0, any = 0;
  MPI_Allreduce(&failed, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  comm.reset();
  return any;
}
