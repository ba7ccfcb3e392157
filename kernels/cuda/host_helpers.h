// The host-side logic of the CUDA backend that needs no GPU (plain C++, built and unit-tested in
// every build, tests/test_cuda_host.cpp): launch shapes, the fixed reduction plan that makes
// sum_squares deterministic, the fused attention kernel's tiles, grids, shared memory and causal
// tile bounds, and which device a process uses.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

// Functions the kernels call too (nvcc) and the host tests call (any compiler).
#if defined(__CUDACC__)
#define MOR_HOST_DEVICE __host__ __device__
#else
#define MOR_HOST_DEVICE
#endif

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

// ---- fused attention (attention_flash.cu) ------------------------------------------------------
// Three kernels over the compacted-token-set contract of Backend::attention_forward/backward:
//   Forward  one block per (query tile, head): online softmax over the key tiles;
//   Dq       one block per (query tile, head): dq = sum over key tiles of dS K (written);
//   DkDv     one block per (key tile, kv head): dk, dv summed over the group's heads and the query
//            tiles in a fixed order, then added to dk, dv (no atomics: deterministic).
// Tiles of bq queries x bk keys, rows of head_dim floats in shared memory padded to head_dim + 1
// (conflict-free column reads); kFlashThreads threads as 16 x 16, each owning bq/16 (or bk/16)
// rows of the score tile.
enum class FlashPass { Forward, Dq, DkDv };
constexpr int kFlashThreads = 256;
MOR_HOST_DEVICE constexpr bool flash_supports(int head_dim) { return head_dim == 64 || head_dim == 128; }
struct FlashTile {
  int bq = 0, bk = 0;  // queries, keys per tile
};
// Forward 64 x 64; Dq 64 x 64 (head_dim 64) or 64 x 32 (128); DkDv 64 x 64 (64) or 32 x 64 (128):
// every pass within the 163 KiB of shared memory an sm_80 block may opt into.
MOR_HOST_DEVICE constexpr FlashTile flash_tile(FlashPass p, int head_dim) {
  if (p == FlashPass::Dq && head_dim > 64) return {64, 32};
  if (p == FlashPass::DkDv && head_dim > 64) return {32, 64};
  return {64, 64};
}
// Shared-memory layout of a pass, offsets in 4-byte words (floats and int32 positions); a section
// a pass does not use has size 0. The kernels index with these offsets, the launch asks for bytes.
struct FlashSmem {
  int ld = 0;                                  // row stride of the q/k/v/dO tiles (head_dim + 1)
  int lp = 0;                                  // row stride of the score tiles p, ds
  int q = 0, d_o = 0, k = 0, v = 0;            // [bq][ld], [bq][ld], [bk][ld], [bk][ld]
  int p = 0, ds = 0;                           // Forward: p [bq][bk+1]; Dq: ds [bq][bk+1];
                                               // DkDv: p, ds transposed [bk][bq+1]
  int qpos = 0, kpos = 0, lse = 0, delta = 0;  // [bq], [bk], [bq], [bq]
  int words = 0;
  MOR_HOST_DEVICE constexpr size_t bytes() const { return (size_t)words * 4; }
};
MOR_HOST_DEVICE constexpr FlashSmem flash_smem(FlashPass pass, int head_dim) {
  const FlashTile t = flash_tile(pass, head_dim);
  FlashSmem m;
  m.ld = head_dim + 1;
  m.lp = (pass == FlashPass::DkDv ? t.bq : t.bk) + 1;
  const bool bwd = pass != FlashPass::Forward;
  const int score = (pass == FlashPass::DkDv ? t.bk : t.bq) * m.lp;
  int at = 0;
  m.q = at, at += t.bq * m.ld;
  m.d_o = at, at += bwd ? t.bq * m.ld : 0;
  m.k = at, at += t.bk * m.ld;
  m.v = at, at += t.bk * m.ld;
  m.p = at, at += pass != FlashPass::Dq ? score : 0;
  m.ds = at, at += bwd ? score : 0;
  m.qpos = at, at += t.bq;
  m.kpos = at, at += t.bk;
  m.lse = at, at += bwd ? t.bq : 0;
  m.delta = at, at += bwd ? t.bq : 0;
  m.words = at;
  return m;
}
constexpr size_t kFlashMaxSmemSm80 = 166912;  // cudaDevAttrMaxSharedMemoryPerBlockOptin on sm_80
inline int64_t ceil_div(int64_t n, int64_t d) { return n / d + (n % d != 0); }
// Grid of a pass: Forward and Dq (query tiles, n_heads), DkDv (key tiles, n_kv_heads). An empty
// grid (x = 0: no queries, or no keys for DkDv) means no launch. Throws std::invalid_argument on an
// unsupported head_dim or a grid past CUDA's limits (y <= 65535).
struct FlashGrid {
  unsigned x = 0, y = 0;
};
FlashGrid flash_grid(FlashPass pass, int head_dim, int nq, int nk, int n_heads, int n_kv_heads);

// Causal tile bounds on ascending positions (query i sees key j iff kpos[j] <= qpos[i]).
// The first index with a[i] > p, and the first with a[i] >= p.
MOR_HOST_DEVICE inline int pos_upper_bound(const int* a, int n, int p) {
  int lo = 0, hi = n;
  while (lo < hi) {
    const int m = (lo + hi) / 2;
    if (a[m] <= p)
      lo = m + 1;
    else
      hi = m;
  }
  return lo;
}
MOR_HOST_DEVICE inline int pos_lower_bound(const int* a, int n, int p) {
  int lo = 0, hi = n;
  while (lo < hi) {
    const int m = (lo + hi) / 2;
    if (a[m] < p)
      lo = m + 1;
    else
      hi = m;
  }
  return lo;
}
// Query tile [i0, i1), non-empty: keys [0, end) are visible to at least one of its queries (the
// key tiles from `end` on are skipped), keys [0, full) to every one of them.
struct KeySpan {
  int end = 0, full = 0;
};
MOR_HOST_DEVICE inline KeySpan flash_key_span(const int* qpos, const int* kpos, int nk, int i0, int i1) {
  return {pos_upper_bound(kpos, nk, qpos[i1 - 1]), pos_upper_bound(kpos, nk, qpos[i0])};
}
// Key tile [j0, j1), non-empty: queries [begin, nq) see at least one of its keys (the query tiles
// before `begin` are skipped), queries [full, nq) see every one of them.
struct QuerySpan {
  int begin = 0, full = 0;
};
MOR_HOST_DEVICE inline QuerySpan flash_query_span(const int* qpos, int nq, const int* kpos, int j0, int j1) {
  return {pos_lower_bound(qpos, nq, kpos[j0]), pos_lower_bound(qpos, nq, kpos[j1 - 1])};
}
// Whether a whole tile needs no mask: the key tile [j0, j0 + bk) of a query tile with KeySpan
// `ks` (complete and inside ks.full), or the query tile [i0, i0 + bq) of a key tile with QuerySpan
// `qs` (complete, i.e. inside nq, and from qs.full on).
MOR_HOST_DEVICE inline bool flash_keys_unmasked(const KeySpan& ks, int j0, int bk) { return j0 + bk <= ks.full; }
MOR_HOST_DEVICE inline bool flash_queries_unmasked(const QuerySpan& qs, int i0, int bq, int nq) {
  return i0 >= qs.full && i0 + bq <= nq;
}

// Which CUDA device this process uses: MOR_CUDA_DEVICE (an explicit index) when set, else the
// node-local rank from Open MPI (OMPI_COMM_WORLD_LOCAL_RANK) or SLURM (SLURM_LOCALID), else 0.
// Throws std::runtime_error naming the variable when it is not a non-negative integer, when there
// are no devices, or when the index is not below device_count (more ranks on a node than GPUs is
// an error, not a silent sharing of one GPU). `source` (if given) gets where the index came from.
using GetEnv = std::function<const char*(const char*)>;
int select_device(const GetEnv& getenv, int device_count, std::string* source = nullptr);

}  // namespace mor::kern::cuda
