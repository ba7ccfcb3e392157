// The CUDA backend's host-side logic, which needs no GPU (kernels/cuda/host_helpers.h, bf16_bits.h):
// launch shapes, the fixed reduction plan, the fused attention kernel's tiles, grids, shared memory
// and causal tile bounds, device selection and the device kernels' bf16 rounding.
#include <gtest/gtest.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <map>
#include <random>
#include <stdexcept>
#include <string>

#include "kernels/cuda/bf16_bits.h"
#include "kernels/cuda/host_helpers.h"
#include "kernels/dtype.h"

namespace {

using namespace mor::kern::cuda;

TEST(CudaLaunch, OneDimensionalGridsCoverAnyCountWithinLimits) {
  EXPECT_EQ(launch_1d(0).blocks, 1u);  // an empty launch is still a valid grid
  EXPECT_EQ(launch_1d(1).blocks, 1u);
  EXPECT_EQ(launch_1d(256).blocks, 1u);
  EXPECT_EQ(launch_1d(257).blocks, 2u);
  EXPECT_EQ(launch_1d(1000, 128).threads, 128u);
  EXPECT_EQ(launch_1d(1000, 128).blocks, 8u);
  // Past 2^31 elements the grid is capped and the kernels' grid-stride loops do the rest.
  const Launch1D big = launch_1d(int64_t{5} << 31);
  EXPECT_EQ(big.blocks, (unsigned)kMaxGridBlocks);
  EXPECT_EQ(launch_1d(INT64_MAX).blocks, (unsigned)kMaxGridBlocks);
  EXPECT_THROW(launch_1d(-1), std::invalid_argument);
  EXPECT_THROW(launch_1d(10, 100), std::invalid_argument);   // not a multiple of a warp
  EXPECT_THROW(launch_1d(10, 2048), std::invalid_argument);  // above the block limit
  EXPECT_THROW(launch_1d(10, 256, 0), std::invalid_argument);
}

TEST(CudaLaunch, RowBlocksArePowersOfTwoBetweenAWarpAndTheCap) {
  EXPECT_EQ(row_block_threads(0), 32);
  EXPECT_EQ(row_block_threads(1), 32);
  EXPECT_EQ(row_block_threads(33), 64);
  EXPECT_EQ(row_block_threads(576), 1024);
  EXPECT_EQ(row_block_threads(576, 256), 256);
  EXPECT_EQ(row_block_threads(49152, 1024), 1024);
  EXPECT_THROW(row_block_threads(-1), std::invalid_argument);
  EXPECT_THROW(row_block_threads(10, 48), std::invalid_argument);
}

TEST(CudaReducePlan, ChunksDependOnlyOnTheCount) {
  EXPECT_EQ(reduce_plan(0).blocks, 1);
  EXPECT_EQ(reduce_plan(1).blocks, 1);
  EXPECT_EQ(reduce_plan(kReduceChunk).blocks, 1);
  EXPECT_EQ(reduce_plan(kReduceChunk + 1).blocks, 2);
  const ReducePlan p = reduce_plan(135'000'000);  // SmolLM-135M's gradients
  EXPECT_EQ(p.chunk, kReduceChunk);
  EXPECT_GE(p.blocks * p.chunk, 135'000'000);
  EXPECT_LT((p.blocks - 1) * p.chunk, 135'000'000);
  EXPECT_THROW(reduce_plan(-5), std::invalid_argument);
}

// ---- fused attention (attention_flash.cu) --------------------------------------------------------
TEST(FlashTiles, SharedMemoryFitsAnSm80BlockAndSectionsDoNotOverlap) {
  for (int hd : {64, 128})
    for (FlashPass p : {FlashPass::Forward, FlashPass::Dq, FlashPass::DkDv}) {
      const FlashTile t = flash_tile(p, hd);
      const FlashSmem m = flash_smem(p, hd);
      const std::string what = "head_dim " + std::to_string(hd) + " pass " + std::to_string((int)p);
      EXPECT_EQ(t.bq % 16, 0) << what;  // 16 x 16 threads own bq/16 (bk/16) rows or columns each
      EXPECT_EQ(t.bk % 16, 0) << what;
      EXPECT_EQ(m.ld, hd + 1) << what;  // odd stride: a column read by 16 threads hits 16 banks
      EXPECT_EQ(m.lp % 2, 1) << what;
      EXPECT_LE(m.bytes(), kFlashMaxSmemSm80) << what;
      EXPECT_GT(m.bytes(), 48u * 1024) << what;  // hence the opt-in in the launch
      // Sections in order, each of its size, no overlap, the total their sum.
      const bool bwd = p != FlashPass::Forward;
      const int score = (p == FlashPass::DkDv ? t.bk : t.bq) * m.lp;
      const std::pair<int, int> sec[] = {{m.q, t.bq * m.ld},
                                         {m.d_o, bwd ? t.bq * m.ld : 0},
                                         {m.k, t.bk * m.ld},
                                         {m.v, t.bk * m.ld},
                                         {m.p, p != FlashPass::Dq ? score : 0},
                                         {m.ds, bwd ? score : 0},
                                         {m.qpos, t.bq},
                                         {m.kpos, t.bk},
                                         {m.lse, bwd ? t.bq : 0},
                                         {m.delta, bwd ? t.bq : 0}};
      int at = 0;
      for (const auto& [off, size] : sec) {
        EXPECT_EQ(off, at) << what;
        at += size;
      }
      EXPECT_EQ(m.words, at) << what;
      EXPECT_EQ(m.bytes(), (size_t)at * 4) << what;
    }
  // The figures the kernels are written for (fp32 rows of 129 floats for head_dim 128).
  EXPECT_EQ(flash_smem(FlashPass::Forward, 128).bytes(), (size_t)4 * (3 * 64 * 129 + 64 * 65 + 128));
  EXPECT_EQ(flash_smem(FlashPass::DkDv, 128).bytes(),
            (size_t)4 * (2 * 32 * 129 + 2 * 64 * 129 + 2 * 64 * 33 + 32 + 64 + 2 * 32));
  EXPECT_TRUE(flash_supports(64));
  EXPECT_TRUE(flash_supports(128));
  for (int hd : {0, 16, 32, 63, 96, 256}) EXPECT_FALSE(flash_supports(hd)) << hd;
}

TEST(FlashTiles, GridsCoverEveryQueryOrKeyTileOnce) {
  // Forward and dq: query tiles x heads; dk/dv: key tiles x kv heads.
  FlashGrid g = flash_grid(FlashPass::Forward, 64, 2048, 2048, 15, 5);
  EXPECT_EQ(g.x, 32u);
  EXPECT_EQ(g.y, 15u);
  g = flash_grid(FlashPass::Dq, 128, 100, 300, 8, 2);
  EXPECT_EQ(g.x, 2u);  // 64 + 36
  EXPECT_EQ(g.y, 8u);
  g = flash_grid(FlashPass::DkDv, 128, 100, 300, 8, 2);
  EXPECT_EQ(g.x, 5u);  // 300 keys in tiles of 64
  EXPECT_EQ(g.y, 2u);
  g = flash_grid(FlashPass::Forward, 64, 1, 1, 1, 1);
  EXPECT_EQ(g.x, 1u);
  // Nothing to do: no launch (x = 0). No queries: no outputs and no gradient for the keys.
  EXPECT_EQ(flash_grid(FlashPass::Forward, 64, 0, 10, 4, 2).x, 0u);
  EXPECT_EQ(flash_grid(FlashPass::DkDv, 64, 0, 10, 4, 2).x, 0u);
  EXPECT_EQ(flash_grid(FlashPass::DkDv, 64, 10, 0, 4, 2).x, 0u);
  EXPECT_EQ(flash_grid(FlashPass::Forward, 64, 10, 0, 4, 2).x, 1u);  // zero output, lse -inf
  for (int n : {1, 63, 64, 65, 2047, 2048, 2049})
    for (FlashPass p : {FlashPass::Forward, FlashPass::Dq, FlashPass::DkDv}) {
      const FlashTile t = flash_tile(p, 128);
      const int tile = p == FlashPass::DkDv ? t.bk : t.bq;
      const unsigned x = flash_grid(p, 128, n, n, 4, 4).x;
      EXPECT_GE((int64_t)x * tile, n);
      EXPECT_LT((int64_t)(x - 1) * tile, n);
    }
  EXPECT_THROW(flash_grid(FlashPass::Forward, 96, 10, 10, 4, 2), std::invalid_argument);
  EXPECT_THROW(flash_grid(FlashPass::Forward, 64, 10, 10, 4, 3), std::invalid_argument);  // 4 % 3
  EXPECT_THROW(flash_grid(FlashPass::Forward, 64, -1, 10, 4, 2), std::invalid_argument);
  EXPECT_THROW(flash_grid(FlashPass::Forward, 64, 10, 10, 70000, 1), std::invalid_argument);
  EXPECT_EQ(ceil_div(0, 64), 0);
  EXPECT_EQ(ceil_div(65, 64), 2);
}

// Ascending position sets as MoR makes them: every position (a kv-share source), a compacted
// subset with gaps (expert-choice's selected tokens), runs, a single token.
std::vector<std::vector<int>> position_sets() {
  std::mt19937 g(11);
  std::vector<std::vector<int>> sets;
  std::vector<int> all(300);
  for (int i = 0; i < 300; ++i) all[i] = i;
  sets.push_back(all);
  for (double keep : {0.9, 0.5, 0.1}) {
    std::vector<int> s;
    std::bernoulli_distribution b(keep);
    for (int p = 0; p < 400; ++p)
      if (b(g)) s.push_back(p);
    sets.push_back(s);
  }
  sets.push_back({5});
  sets.push_back({0, 1, 2, 200, 201, 202, 203, 390});
  return sets;
}

TEST(FlashBounds, KeySpanIsTightAndFullMeansEveryQuerySeesTheKey) {
  const auto sets = position_sets();
  for (const auto& qp : sets)
    for (const auto& kp : sets)
      for (int bq : {1, 7, 32, 64}) {
        const int nq = (int)qp.size(), nk = (int)kp.size();
        for (int i0 = 0; i0 < nq; i0 += bq) {
          const int i1 = std::min(i0 + bq, nq);
          const KeySpan ks = flash_key_span(qp.data(), kp.data(), nk, i0, i1);
          ASSERT_LE(ks.full, ks.end);
          for (int j = 0; j < nk; ++j) {
            bool any = false, all = true;
            for (int i = i0; i < i1; ++i) {
              any |= kp[j] <= qp[i];
              all &= kp[j] <= qp[i];
            }
            ASSERT_EQ(any, j < ks.end) << "key " << j << " of tile " << i0;  // skipped tiles see nothing
            ASSERT_EQ(all, j < ks.full) << "key " << j << " of tile " << i0;
          }
          // A key tile is mask-free exactly when it lies inside `full` (so also inside nk).
          for (int j0 = 0; j0 < ks.end; j0 += 64) {
            bool need_mask = j0 + 64 > nk;
            for (int j = j0; j < std::min(j0 + 64, nk); ++j)
              for (int i = i0; i < i1; ++i) need_mask |= kp[j] > qp[i];
            ASSERT_EQ(flash_keys_unmasked(ks, j0, 64), !need_mask) << j0;
          }
        }
      }
}

TEST(FlashBounds, QuerySpanIsTightAndFullMeansTheQuerySeesTheWholeKeyTile) {
  const auto sets = position_sets();
  for (const auto& qp : sets)
    for (const auto& kp : sets)
      for (int bk : {1, 5, 64}) {
        const int nq = (int)qp.size(), nk = (int)kp.size();
        for (int j0 = 0; j0 < nk; j0 += bk) {
          const int j1 = std::min(j0 + bk, nk);
          const QuerySpan qs = flash_query_span(qp.data(), nq, kp.data(), j0, j1);
          ASSERT_LE(qs.begin, qs.full);
          for (int i = 0; i < nq; ++i) {
            bool any = false, all = true;
            for (int j = j0; j < j1; ++j) {
              any |= kp[j] <= qp[i];
              all &= kp[j] <= qp[i];
            }
            ASSERT_EQ(any, i >= qs.begin) << "query " << i << " of key tile " << j0;
            ASSERT_EQ(all, i >= qs.full) << "query " << i << " of key tile " << j0;
          }
          for (int bq : {32, 64})
            for (int i0 = qs.begin; i0 < nq; i0 += bq) {
              bool need_mask = i0 + bq > nq;
              for (int i = i0; i < std::min(i0 + bq, nq); ++i)
                for (int j = j0; j < j1; ++j) need_mask |= kp[j] > qp[i];
              ASSERT_EQ(flash_queries_unmasked(qs, i0, bq, nq), !need_mask) << i0;
            }
        }
      }
  // Binary searches on an empty array and at the ends.
  EXPECT_EQ(pos_upper_bound(nullptr, 0, 5), 0);
  EXPECT_EQ(pos_lower_bound(nullptr, 0, 5), 0);
  const int a[] = {2, 4, 4, 9};
  EXPECT_EQ(pos_upper_bound(a, 4, 4), 3);
  EXPECT_EQ(pos_lower_bound(a, 4, 4), 1);
  EXPECT_EQ(pos_upper_bound(a, 4, 1), 0);
  EXPECT_EQ(pos_lower_bound(a, 4, 10), 4);
  EXPECT_EQ(pos_upper_bound(a, 4, INT_MAX), 4);
}

struct Env {
  std::map<std::string, std::string> vars;
  GetEnv fn() const {
    return [this](const char* k) -> const char* {
      auto it = vars.find(k);
      return it == vars.end() ? nullptr : it->second.c_str();
    };
  }
};

TEST(CudaDeviceSelect, ExplicitThenOpenMpiThenSlurmThenZero) {
  std::string src;
  Env e;
  EXPECT_EQ(select_device(e.fn(), 4, &src), 0);
  EXPECT_EQ(src, "default");
  e.vars["SLURM_LOCALID"] = "2";
  EXPECT_EQ(select_device(e.fn(), 4, &src), 2);
  EXPECT_EQ(src, "SLURM_LOCALID");
  e.vars["OMPI_COMM_WORLD_LOCAL_RANK"] = "1";
  EXPECT_EQ(select_device(e.fn(), 4, &src), 1);
  EXPECT_EQ(src, "OMPI_COMM_WORLD_LOCAL_RANK");
  e.vars["MOR_CUDA_DEVICE"] = "3";
  EXPECT_EQ(select_device(e.fn(), 4, &src), 3);
  EXPECT_EQ(src, "MOR_CUDA_DEVICE");
}

TEST(CudaDeviceSelect, BadValuesAndTooFewDevicesAreErrorsNamingTheVariable) {
  auto message = [](const Env& e, int count) {
    try {
      select_device(e.fn(), count);
    } catch (const std::runtime_error& x) {
      return std::string(x.what());
    }
    return std::string("no error");
  };
  Env e;
  EXPECT_NE(message(e, 0).find("no CUDA device"), std::string::npos);
  e.vars["OMPI_COMM_WORLD_LOCAL_RANK"] = "4";  // 5 ranks on a node with 4 GPUs
  EXPECT_NE(message(e, 4).find("OMPI_COMM_WORLD_LOCAL_RANK=4 but only 4"), std::string::npos);
  EXPECT_NE(message(e, 4).find("more ranks on this node than GPUs"), std::string::npos);
  for (const char* bad : {"-1", "x", "1x", "", "99999999999"}) {
    e.vars["MOR_CUDA_DEVICE"] = bad;
    EXPECT_NE(message(e, 4).find("MOR_CUDA_DEVICE"), std::string::npos) << bad;
  }
}

// The device kernels' rounding (bf16_bits_rne) gives the same bits as the CPU backend's
// float_to_bf16 on every upper half-word with the low half-words that decide the rounding.
TEST(CudaBf16Rounding, SameBitsAsTheCpuBackend) {
  std::mt19937 g(5);
  int64_t checked = 0;
  for (uint32_t hi = 0; hi < 65536; ++hi)
    for (uint32_t lo : {0x0000u, 0x0001u, 0x7fffu, 0x8000u, 0x8001u, 0xffffu, (uint32_t)(g() & 0xffff)}) {
      const uint32_t u = hi << 16 | lo;
      float f;
      std::memcpy(&f, &u, 4);
      ASSERT_EQ(bf16_bits_rne(u), mor::kern::float_to_bf16(f).bits) << std::hex << u;
      ++checked;
    }
  EXPECT_EQ(checked, 65536 * 7);
  EXPECT_EQ(bf16_bits_rne(0x3f808000u), 0x3f80);  // a tie rounds to the even mantissa
  EXPECT_EQ(bf16_bits_rne(0x3f818000u), 0x3f82);
  EXPECT_EQ(bf16_bits_rne(0x7f7fffffu), 0x7f80);           // FLT_MAX rounds up to inf
  EXPECT_EQ(bf16_bits_rne(0x7f800001u) & 0x7fc0, 0x7fc0);  // a signalling NaN comes out quiet
}

}  // namespace
