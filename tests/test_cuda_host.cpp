// The CUDA backend's host-side logic, which needs no GPU (kernels/cuda/host_helpers.h, bf16_bits.h):
// launch shapes, the fixed reduction plan, device selection and the device kernels' bf16 rounding.
#include <gtest/gtest.h>

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
