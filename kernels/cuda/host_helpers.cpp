#include "kernels/cuda/host_helpers.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <stdexcept>

namespace mor::kern::cuda {

Launch1D launch_1d(int64_t n, int threads, int64_t max_blocks) {
  if (n < 0) throw std::invalid_argument("launch_1d: negative element count " + std::to_string(n));
  if (threads < 32 || threads > 1024 || threads % 32)
    throw std::invalid_argument("launch_1d: threads must be a multiple of 32 in [32, 1024], not " +
                                std::to_string(threads));
  if (max_blocks < 1 || max_blocks > INT32_MAX) throw std::invalid_argument("launch_1d: max_blocks out of range");
  const int64_t want = n / threads + (n % threads != 0);  // no overflow near INT64_MAX
  // n = 0 still launches one block (which does nothing): callers need no special case.
  return {(unsigned)std::clamp<int64_t>(want, 1, max_blocks), (unsigned)threads};
}

int row_block_threads(int64_t d, int max_threads) {
  if (d < 0) throw std::invalid_argument("row_block_threads: negative row length");
  if (max_threads < 32 || max_threads > 1024 || (max_threads & (max_threads - 1)))
    throw std::invalid_argument("row_block_threads: max_threads must be a power of two in [32, 1024]");
  int t = 32;
  while (t < max_threads && t < d) t *= 2;
  return t;
}

ReducePlan reduce_plan(int64_t n) {
  if (n < 0) throw std::invalid_argument("reduce_plan: negative element count");
  return {kReduceChunk, std::max<int64_t>(1, n / kReduceChunk + (n % kReduceChunk != 0))};
}

FlashGrid flash_grid(FlashPass pass, int head_dim, int nq, int nk, int n_heads, int n_kv_heads) {
  if (!flash_supports(head_dim))
    throw std::invalid_argument("flash attention: head_dim " + std::to_string(head_dim) + " (64 or 128 only)");
  if (nq < 0 || nk < 0 || n_heads < 1 || n_kv_heads < 1 || n_heads % n_kv_heads)
    throw std::invalid_argument("flash attention: invalid shape");
  const FlashTile t = flash_tile(pass, head_dim);
  const bool by_keys = pass == FlashPass::DkDv;
  const int64_t x = by_keys ? ceil_div(nk, t.bk) : ceil_div(nq, t.bq);
  const int y = by_keys ? n_kv_heads : n_heads;
  if (y > 65535) throw std::invalid_argument("flash attention: more than 65535 heads");
  // Keys without queries have no gradient to add (dk, dv accumulate): no DkDv launch either.
  if (nq == 0) return {0, (unsigned)y};
  return {(unsigned)x, (unsigned)y};  // x <= 2^31 / 32: within the grid's x limit
}

namespace {
// A non-negative int from the whole of `text`, or -1.
int parse_index(const char* text) {
  if (!text || !*text) return -1;
  char* end = nullptr;
  errno = 0;
  const long v = std::strtol(text, &end, 10);
  if (errno || *end || v < 0 || v > INT32_MAX) return -1;
  return (int)v;
}
}  // namespace

int select_device(const GetEnv& getenv, int device_count, std::string* source) {
  if (device_count <= 0) throw std::runtime_error("no CUDA device is visible to this process");
  for (const char* var : {"MOR_CUDA_DEVICE", "OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID"}) {
    const char* v = getenv(var);
    if (!v) continue;
    const int d = parse_index(v);
    if (d < 0) throw std::runtime_error(std::string(var) + "='" + v + "' is not a non-negative integer");
    if (d >= device_count)
      throw std::runtime_error(std::string(var) + "=" + v + " but only " + std::to_string(device_count) +
                               " CUDA device(s) are visible" +
                               (var[0] == 'M' ? "" : ": more ranks on this node than GPUs (one GPU per rank)"));
    if (source) *source = var;
    return d;
  }
  if (source) *source = "default";
  return 0;
}

}  // namespace mor::kern::cuda
