// Communicator and ShardedParams under a real `mpirun -np N` (registered for
// N = 1..4): every collective against its definition, byte counters, and the
// shard -> gather round trip of a model whose row counts do not divide N.
#include <gtest/gtest.h>
#include <mpi.h>

#include <cstring>
#include <numeric>

#include "dist/communicator.h"
#include "dist/sharded_params.h"

using namespace mor;

static dist::Communicator* g_comm = nullptr;

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
  Model m(cfg);
  m.init(3);
  const std::vector<float> full = m.params;
  dist::ShardedParams sp(m, *g_comm, {});
  sp.shard_from_full();
  // Each rank holds ~1/W of the parameters (plus padding).
  EXPECT_LE(sp.shard_size() * g_comm->size(), m.layout.total + (int64_t)m.layout.tensors.size() * cfg.d_model * g_comm->size());
  std::fill(m.params.begin(), m.params.end(), -7.f);
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
