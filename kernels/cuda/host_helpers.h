// The host-side logic of the CUDA backend that needs no GPU (plain C++, built and unit-tested in
// every build, tests/test_cuda_host.cpp): launch shapes, the fixed reduction plan that makes
// sum_squares deterministic, and which device a process uses.
#pragma once
#include <cstdint>
#include <functional>
#include <string>

namespace mor::kern::cuda {

// A 1-D launch over n elements with a grid-stride loop: `threads` per block, at most max_blocks
// blocks (the loop covers the rest), so any n up to INT64_MAX launches a valid grid.
struct Launch1D {
  unsigned blocks = 0, threads = 0;
};
constexpr int64_t kMaxGridBlocks = 65536;  // enough to fill any current GPU; the loop does the rest
Launch1D launch_1d(int64_t n, int threads = 256, int64_t max_blocks = kMaxGridBlocks);

// Threads of a block that reduces one row of d elements (RMSNorm, softmax): a power of two, at
// least one warp, at most max_threads; each thread strides over the row.
int row_block_threads(int64_t d, int max_threads = 1024);

// sum_squares: pass 1 gives each block a fixed chunk of the input and writes one partial; pass 2
// sums the partials in one block. The chunk depends on nothing but the constant below, so the
// summation order (and the bits of the result) is the same on every GPU and every run.
struct ReducePlan {
  int64_t chunk = 0;   // elements per pass-1 block
  int64_t blocks = 0;  // pass-1 blocks = partials
};
constexpr int64_t kReduceChunk = 16384;
ReducePlan reduce_plan(int64_t n);

// Which CUDA device this process uses: MOR_CUDA_DEVICE (an explicit index) when set, else the
// node-local rank from Open MPI (OMPI_COMM_WORLD_LOCAL_RANK) or SLURM (SLURM_LOCALID), else 0.
// Throws std::runtime_error naming the variable when it is not a non-negative integer, when there
// are no devices, or when the index is not below device_count (more ranks on a node than GPUs is
// an error, not a silent sharing of one GPU). `source` (if given) gets where the index came from.
using GetEnv = std::function<const char*(const char*)>;
int select_device(const GetEnv& getenv, int device_count, std::string* source = nullptr);

}  // namespace mor::kern::cuda
