// Fused causal attention in the style of FlashAttention-2 over a compacted token set (the contract
// of Backend::attention_forward/backward, kernels/backend.h: query i sees key j iff kpos[j] <=
// qpos[i], both ascending; GQA; lse[H, nq]; a query with no visible key gives zero output and lse
// -inf), for head_dim 64 and 128 (a template parameter). fp32 throughout: inputs, products (on the
// CUDA cores, no tensor-core MMA), the online softmax and all outputs.
//
// Forward: one block per (query tile, head). The query tile stays in shared memory; the key/value
// tiles stream through it; scores, the running row maximum and sum live in registers (online
// softmax), P goes through shared memory for P V. Key tiles past the last key any query of the
// tile sees are skipped; tiles every query sees fully need no mask (flash_key_span).
// Backward (recomputing P from q, k and lse; D = rowsum(dO o O) first):
//   dq: one block per (query tile, head), dq = sum over key tiles of dS K, written;
//   dk, dv: one block per (key tile, kv head), summed over the group's heads and the query tiles
//   from the first that sees the tile (flash_query_span), then added to dk, dv.
// Every output element is owned by one thread of one block and summed in a fixed order: no
// atomics, the same bits on every run. Tiles, grids, shared-memory layout and the causal bounds are
// host functions (host_helpers.h), unit-tested on the host. Compiled, not yet run on a GPU.
#include <climits>
#include <cmath>
#include <stdexcept>
#include <string>

#include "kernels/cuda/device_common.cuh"
#include "kernels/cuda/kernels.h"

namespace mor::kern::cuda {

namespace {

// Threads as 16 x 16: tx = threadIdx.x % 16 picks columns (strided by 16), ty = threadIdx.x / 16
// picks a run of rows. The 16 threads of one ty are one half-warp, so row reductions are shuffles.
constexpr int kCols = 16;
static_assert(kFlashThreads == kCols * kCols, "16 x 16 threads");

__device__ inline float half_warp_max(float v) {
  for (int o = kCols / 2; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ inline float half_warp_sum(float v) {
  for (int o = kCols / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Rows [r0, r0 + rows) of head h of a [n, heads, D] tensor into a [rows][ld] tile; rows at or past
// n are zero. Consecutive threads read consecutive floats of a row (coalesced).
template <int D>
__device__ inline void load_rows(float* tile, int ld, const float* x, int n, int heads, int h, int r0, int rows) {
  for (int idx = threadIdx.x; idx < rows * D; idx += kFlashThreads) {
    const int r = idx / D, e = idx % D, row = r0 + r;
    tile[r * ld + e] = row < n ? x[((int64_t)row * heads + h) * D + e] : 0.f;
  }
}
// Positions of a tile; padding that no mask lets through: queries past nq see no key (INT_MIN),
// keys past nk are seen by no query (INT_MAX).
__device__ inline void load_pos(int* tile, const int* pos, int n, int r0, int rows, int pad) {
  for (int r = threadIdx.x; r < rows; r += kFlashThreads) tile[r] = r0 + r < n ? pos[r0 + r] : pad;
}
// Per-row values [h * nq + i] of a query tile (lse, delta); 0 past nq (masked anyway).
__device__ inline void load_row_values(float* tile, const float* x, int nq, int h, int i0, int rows) {
  for (int r = threadIdx.x; r < rows; r += kFlashThreads) tile[r] = i0 + r < nq ? x[(int64_t)h * nq + i0 + r] : 0.f;
}

// ---- forward ------------------------------------------------------------------------------------
template <int D>
__global__ void __launch_bounds__(kFlashThreads)
    k_flash_forward(float* o, float* lse, const float* q, const float* k, const float* v, const int* qpos,
                    const int* kpos, int nq, int nk, int H, int Hkv, float scale) {
  constexpr FlashTile T = flash_tile(FlashPass::Forward, D);
  constexpr FlashSmem L = flash_smem(FlashPass::Forward, D);
  constexpr int RQ = T.bq / kCols, CK = T.bk / kCols, CD = D / kCols;  // per thread: rows, key cols, dims
  extern __shared__ float sm[];
  float *qs = sm + L.q, *ks = sm + L.k, *vs = sm + L.v, *ps = sm + L.p;
  int *qp = reinterpret_cast<int*>(sm + L.qpos), *kp = reinterpret_cast<int*>(sm + L.kpos);
  const int tx = threadIdx.x % kCols, ty = threadIdx.x / kCols;
  const int i0 = blockIdx.x * T.bq, h = blockIdx.y, g = h / (H / Hkv), i1 = min(i0 + T.bq, nq);
  load_rows<D>(qs, L.ld, q, nq, H, h, i0, T.bq);
  load_pos(qp, qpos, nq, i0, T.bq, INT_MIN);
  const KeySpan span = flash_key_span(qpos, kpos, nk, i0, i1);

  float m[RQ], l[RQ], acc[RQ][CD];
#pragma unroll
  for (int r = 0; r < RQ; ++r) {
    m[r] = -INFINITY;
    l[r] = 0.f;
#pragma unroll
    for (int d = 0; d < CD; ++d) acc[r][d] = 0.f;
  }
  for (int j0 = 0; j0 < span.end; j0 += T.bk) {
    __syncthreads();  // the previous tile's k, v and p have been read
    load_rows<D>(ks, L.ld, k, nk, Hkv, g, j0, T.bk);
    load_rows<D>(vs, L.ld, v, nk, Hkv, g, j0, T.bk);
    load_pos(kp, kpos, nk, j0, T.bk, INT_MAX);
    __syncthreads();
    // S = Q K^T for rows ty*RQ + r, keys tx + 16 c.
    float s[RQ][CK];
#pragma unroll
    for (int r = 0; r < RQ; ++r)
#pragma unroll
      for (int c = 0; c < CK; ++c) s[r][c] = 0.f;
#pragma unroll 4
    for (int e = 0; e < D; ++e) {
      float a[RQ], b[CK];
#pragma unroll
      for (int r = 0; r < RQ; ++r) a[r] = qs[(ty * RQ + r) * L.ld + e];
#pragma unroll
      for (int c = 0; c < CK; ++c) b[c] = ks[(tx + kCols * c) * L.ld + e];
#pragma unroll
      for (int r = 0; r < RQ; ++r)
#pragma unroll
        for (int c = 0; c < CK; ++c) s[r][c] = fmaf(a[r], b[c], s[r][c]);
    }
    const bool masked = !flash_keys_unmasked(span, j0, T.bk);
    // Online softmax: the new row maximum, the old sum and output rescaled, P into shared memory.
#pragma unroll
    for (int r = 0; r < RQ; ++r) {
      const int row = ty * RQ + r;
      float mx = -INFINITY;
#pragma unroll
      for (int c = 0; c < CK; ++c) {
        float x = s[r][c] * scale;
        if (masked && kp[tx + kCols * c] > qp[row]) x = -INFINITY;
        s[r][c] = x;
        mx = fmaxf(mx, x);
      }
      mx = half_warp_max(mx);
      const float m_new = fmaxf(m[r], mx);
      const float base = m_new == -INFINITY ? 0.f : m_new;  // nothing visible yet: exp(-inf) = 0
      const float alpha = expf(m[r] - base);
      float rs = 0.f;
#pragma unroll
      for (int c = 0; c < CK; ++c) {
        const float p = expf(s[r][c] - base);
        ps[row * L.lp + tx + kCols * c] = p;
        rs += p;
      }
      rs = half_warp_sum(rs);
      l[r] = l[r] * alpha + rs;
      m[r] = m_new;
#pragma unroll
      for (int d = 0; d < CD; ++d) acc[r][d] *= alpha;
    }
    __syncthreads();
    // O += P V for rows ty*RQ + r, dims tx + 16 d.
#pragma unroll 4
    for (int jj = 0; jj < T.bk; ++jj) {
      float b[CD];
#pragma unroll
      for (int d = 0; d < CD; ++d) b[d] = vs[jj * L.ld + tx + kCols * d];
#pragma unroll
      for (int r = 0; r < RQ; ++r) {
        const float p = ps[(ty * RQ + r) * L.lp + jj];
#pragma unroll
        for (int d = 0; d < CD; ++d) acc[r][d] = fmaf(p, b[d], acc[r][d]);
      }
    }
  }
#pragma unroll
  for (int r = 0; r < RQ; ++r) {
    const int i = i0 + ty * RQ + r;
    if (i >= nq) continue;
    const float inv = l[r] > 0.f ? 1.f / l[r] : 0.f;  // l = 0: no visible key, zero output
#pragma unroll
    for (int d = 0; d < CD; ++d) o[((int64_t)i * H + h) * D + tx + kCols * d] = acc[r][d] * inv;
    if (tx == 0) lse[(int64_t)h * nq + i] = l[r] > 0.f ? m[r] + logf(l[r]) : -INFINITY;
  }
}

// ---- backward -----------------------------------------------------------------------------------
// delta[h, i] = <dout, o> of query i, head h: one warp per row, 8 rows per block.
template <int D>
__global__ void k_flash_delta(float* delta, const float* dout, const float* o, int nq, int H) {
  const int64_t row = (int64_t)blockIdx.x * (kFlashThreads / 32) + threadIdx.x / 32;  // = i * H + h
  if (row >= (int64_t)nq * H) return;                                                 // whole warps leave together
  const int lane = threadIdx.x % 32;
  float s = 0.f;
#pragma unroll
  for (int e = lane; e < D; e += 32) s += dout[row * D + e] * o[row * D + e];
  s = warp_sum(s);
  if (lane == 0) delta[(row % H) * nq + row / H] = s;
}

// dq for the query tile blockIdx.x of head blockIdx.y (written).
template <int D>
__global__ void __launch_bounds__(kFlashThreads)
    k_flash_dq(float* dq, const float* dout, const float* lse, const float* delta, const float* q, const float* k,
               const float* v, const int* qpos, const int* kpos, int nq, int nk, int H, int Hkv, float scale) {
  constexpr FlashTile T = flash_tile(FlashPass::Dq, D);
  constexpr FlashSmem L = flash_smem(FlashPass::Dq, D);
  constexpr int RQ = T.bq / kCols, CK = T.bk / kCols, CD = D / kCols;
  extern __shared__ float sm[];
  float *qs = sm + L.q, *gs = sm + L.d_o, *ks = sm + L.k, *vs = sm + L.v, *dss = sm + L.ds;
  float *ls = sm + L.lse, *dl = sm + L.delta;
  int *qp = reinterpret_cast<int*>(sm + L.qpos), *kp = reinterpret_cast<int*>(sm + L.kpos);
  const int tx = threadIdx.x % kCols, ty = threadIdx.x / kCols;
  const int i0 = blockIdx.x * T.bq, h = blockIdx.y, g = h / (H / Hkv), i1 = min(i0 + T.bq, nq);
  load_rows<D>(qs, L.ld, q, nq, H, h, i0, T.bq);
  load_rows<D>(gs, L.ld, dout, nq, H, h, i0, T.bq);
  load_pos(qp, qpos, nq, i0, T.bq, INT_MIN);
  load_row_values(ls, lse, nq, h, i0, T.bq);
  load_row_values(dl, delta, nq, h, i0, T.bq);
  const KeySpan span = flash_key_span(qpos, kpos, nk, i0, i1);

  float acc[RQ][CD];
#pragma unroll
  for (int r = 0; r < RQ; ++r)
#pragma unroll
    for (int d = 0; d < CD; ++d) acc[r][d] = 0.f;
  for (int j0 = 0; j0 < span.end; j0 += T.bk) {
    __syncthreads();
    load_rows<D>(ks, L.ld, k, nk, Hkv, g, j0, T.bk);
    load_rows<D>(vs, L.ld, v, nk, Hkv, g, j0, T.bk);
    load_pos(kp, kpos, nk, j0, T.bk, INT_MAX);
    __syncthreads();
    // S = Q K^T and dP = dO V^T for rows ty*RQ + r, keys tx + 16 c.
    float s[RQ][CK], dp[RQ][CK];
#pragma unroll
    for (int r = 0; r < RQ; ++r)
#pragma unroll
      for (int c = 0; c < CK; ++c) s[r][c] = dp[r][c] = 0.f;
#pragma unroll 4
    for (int e = 0; e < D; ++e) {
      float a[RQ], ga[RQ], b[CK], vb[CK];
#pragma unroll
      for (int r = 0; r < RQ; ++r) a[r] = qs[(ty * RQ + r) * L.ld + e], ga[r] = gs[(ty * RQ + r) * L.ld + e];
#pragma unroll
      for (int c = 0; c < CK; ++c) b[c] = ks[(tx + kCols * c) * L.ld + e], vb[c] = vs[(tx + kCols * c) * L.ld + e];
#pragma unroll
      for (int r = 0; r < RQ; ++r)
#pragma unroll
        for (int c = 0; c < CK; ++c) {
          s[r][c] = fmaf(a[r], b[c], s[r][c]);
          dp[r][c] = fmaf(ga[r], vb[c], dp[r][c]);
        }
    }
    // dS = P o (dP - delta) * scale, P = exp(S * scale - lse) where visible, else 0.
    const bool masked = !flash_keys_unmasked(span, j0, T.bk);
#pragma unroll
    for (int r = 0; r < RQ; ++r) {
      const int row = ty * RQ + r;
#pragma unroll
      for (int c = 0; c < CK; ++c) {
        const int col = tx + kCols * c;
        const bool visible = !masked || kp[col] <= qp[row];
        const float p = visible ? expf(s[r][c] * scale - ls[row]) : 0.f;
        dss[row * L.lp + col] = p * (dp[r][c] - dl[row]) * scale;
      }
    }
    __syncthreads();
    // dQ += dS K for rows ty*RQ + r, dims tx + 16 d.
#pragma unroll 4
    for (int jj = 0; jj < T.bk; ++jj) {
      float b[CD];
#pragma unroll
      for (int d = 0; d < CD; ++d) b[d] = ks[jj * L.ld + tx + kCols * d];
#pragma unroll
      for (int r = 0; r < RQ; ++r) {
        const float ds = dss[(ty * RQ + r) * L.lp + jj];
#pragma unroll
        for (int d = 0; d < CD; ++d) acc[r][d] = fmaf(ds, b[d], acc[r][d]);
      }
    }
  }
#pragma unroll
  for (int r = 0; r < RQ; ++r) {
    const int i = i0 + ty * RQ + r;
    if (i >= nq) continue;
#pragma unroll
    for (int d = 0; d < CD; ++d) dq[((int64_t)i * H + h) * D + tx + kCols * d] = acc[r][d];
  }
}

// dk, dv for the key tile blockIdx.x of kv head blockIdx.y (added): the scores are computed
// transposed (keys as rows) so each thread keeps its keys' dk, dv rows in registers throughout.
template <int D>
__global__ void __launch_bounds__(kFlashThreads)
    k_flash_dkdv(float* dk, float* dv, const float* dout, const float* lse, const float* delta, const float* q,
                 const float* k, const float* v, const int* qpos, const int* kpos, int nq, int nk, int H, int Hkv,
                 float scale) {
  constexpr FlashTile T = flash_tile(FlashPass::DkDv, D);
  constexpr FlashSmem L = flash_smem(FlashPass::DkDv, D);
  constexpr int RK = T.bk / kCols, CQ = T.bq / kCols, CD = D / kCols;  // per thread: key rows, query cols, dims
  extern __shared__ float sm[];
  float *qs = sm + L.q, *gs = sm + L.d_o, *ks = sm + L.k, *vs = sm + L.v, *ps = sm + L.p, *dss = sm + L.ds;
  float *ls = sm + L.lse, *dl = sm + L.delta;
  int *qp = reinterpret_cast<int*>(sm + L.qpos), *kp = reinterpret_cast<int*>(sm + L.kpos);
  const int tx = threadIdx.x % kCols, ty = threadIdx.x / kCols;
  const int j0 = blockIdx.x * T.bk, g = blockIdx.y, group = H / Hkv, j1 = min(j0 + T.bk, nk);
  load_rows<D>(ks, L.ld, k, nk, Hkv, g, j0, T.bk);
  load_rows<D>(vs, L.ld, v, nk, Hkv, g, j0, T.bk);
  load_pos(kp, kpos, nk, j0, T.bk, INT_MAX);
  const QuerySpan span = flash_query_span(qpos, nq, kpos, j0, j1);

  float ak[RK][CD], av[RK][CD];
#pragma unroll
  for (int r = 0; r < RK; ++r)
#pragma unroll
    for (int d = 0; d < CD; ++d) ak[r][d] = av[r][d] = 0.f;
  for (int h = g * group; h < (g + 1) * group; ++h)
    for (int i0 = span.begin; i0 < nq; i0 += T.bq) {
      __syncthreads();  // the previous query tile's q, dO, p and ds have been read
      load_rows<D>(qs, L.ld, q, nq, H, h, i0, T.bq);
      load_rows<D>(gs, L.ld, dout, nq, H, h, i0, T.bq);
      load_pos(qp, qpos, nq, i0, T.bq, INT_MIN);
      load_row_values(ls, lse, nq, h, i0, T.bq);
      load_row_values(dl, delta, nq, h, i0, T.bq);
      __syncthreads();
      // S^T = K Q^T and dP^T = V dO^T for keys ty*RK + r, queries tx + 16 c.
      float s[RK][CQ], dp[RK][CQ];
#pragma unroll
      for (int r = 0; r < RK; ++r)
#pragma unroll
        for (int c = 0; c < CQ; ++c) s[r][c] = dp[r][c] = 0.f;
#pragma unroll 4
      for (int e = 0; e < D; ++e) {
        float a[RK], va[RK], b[CQ], gb[CQ];
#pragma unroll
        for (int r = 0; r < RK; ++r) a[r] = ks[(ty * RK + r) * L.ld + e], va[r] = vs[(ty * RK + r) * L.ld + e];
#pragma unroll
        for (int c = 0; c < CQ; ++c) b[c] = qs[(tx + kCols * c) * L.ld + e], gb[c] = gs[(tx + kCols * c) * L.ld + e];
#pragma unroll
        for (int r = 0; r < RK; ++r)
#pragma unroll
          for (int c = 0; c < CQ; ++c) {
            s[r][c] = fmaf(a[r], b[c], s[r][c]);
            dp[r][c] = fmaf(va[r], gb[c], dp[r][c]);
          }
      }
      const bool masked = !flash_queries_unmasked(span, i0, T.bq, nq);
#pragma unroll
      for (int r = 0; r < RK; ++r) {
        const int row = ty * RK + r;
#pragma unroll
        for (int c = 0; c < CQ; ++c) {
          const int col = tx + kCols * c;
          const bool visible = !masked || kp[row] <= qp[col];
          const float p = visible ? expf(s[r][c] * scale - ls[col]) : 0.f;
          ps[row * L.lp + col] = p;
          dss[row * L.lp + col] = p * (dp[r][c] - dl[col]) * scale;
        }
      }
      __syncthreads();
      // dV += P^T dO, dK += dS^T Q for keys ty*RK + r, dims tx + 16 d.
#pragma unroll 4
      for (int ii = 0; ii < T.bq; ++ii) {
        float gb[CD], qb[CD];
#pragma unroll
        for (int d = 0; d < CD; ++d) gb[d] = gs[ii * L.ld + tx + kCols * d], qb[d] = qs[ii * L.ld + tx + kCols * d];
#pragma unroll
        for (int r = 0; r < RK; ++r) {
          const float p = ps[(ty * RK + r) * L.lp + ii], ds = dss[(ty * RK + r) * L.lp + ii];
#pragma unroll
          for (int d = 0; d < CD; ++d) {
            av[r][d] = fmaf(p, gb[d], av[r][d]);
            ak[r][d] = fmaf(ds, qb[d], ak[r][d]);
          }
        }
      }
    }
#pragma unroll
  for (int r = 0; r < RK; ++r) {
    const int j = j0 + ty * RK + r;
    if (j >= nk) continue;
#pragma unroll
    for (int d = 0; d < CD; ++d) {
      const int64_t at = ((int64_t)j * Hkv + g) * D + tx + kCols * d;
      dk[at] += ak[r][d];
      dv[at] += av[r][d];
    }
  }
}

// A kernel's dynamic shared memory above the default 48 KiB must be opted into (per device and
// kernel; cheap, so every launch does it rather than caching per device).
template <class K>
void allow_smem(K kernel, size_t bytes) {
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
}

template <int D>
void forward(cudaStream_t s, float* o, float* lse, const float* q, const float* k, const float* v, const int* qpos,
             const int* kpos, const AttnShape& sh, float scale) {
  const FlashGrid g = flash_grid(FlashPass::Forward, D, sh.nq, sh.nk, sh.n_heads, sh.n_kv_heads);
  if (!g.x) return;
  constexpr size_t bytes = flash_smem(FlashPass::Forward, D).bytes();
  allow_smem(k_flash_forward<D>, bytes);
  k_flash_forward<D><<<dim3(g.x, g.y), kFlashThreads, bytes, s>>>(o, lse, q, k, v, qpos, kpos, sh.nq, sh.nk, sh.n_heads,
                                                                  sh.n_kv_heads, scale);
  CUDA_CHECK_LAUNCH();
}

template <int D>
void backward(cudaStream_t s, Workspace& ws, float* dq, float* dk, float* dv, const float* dout, const float* o,
              const float* lse, const float* q, const float* k, const float* v, const int* qpos, const int* kpos,
              const AttnShape& sh, float scale) {
  const FlashGrid gq = flash_grid(FlashPass::Dq, D, sh.nq, sh.nk, sh.n_heads, sh.n_kv_heads);
  const FlashGrid gk = flash_grid(FlashPass::DkDv, D, sh.nq, sh.nk, sh.n_heads, sh.n_kv_heads);
  if (!gq.x) return;  // no queries: nothing to write, nothing to add
  float* delta = static_cast<float*>(ws.get((size_t)sh.n_heads * sh.nq * sizeof(float)));
  const int64_t rows = (int64_t)sh.nq * sh.n_heads, per_block = kFlashThreads / 32;
  k_flash_delta<D><<<(unsigned)ceil_div(rows, per_block), kFlashThreads, 0, s>>>(delta, dout, o, sh.nq, sh.n_heads);
  CUDA_CHECK_LAUNCH();
  constexpr size_t dq_bytes = flash_smem(FlashPass::Dq, D).bytes();
  allow_smem(k_flash_dq<D>, dq_bytes);
  k_flash_dq<D><<<dim3(gq.x, gq.y), kFlashThreads, dq_bytes, s>>>(dq, dout, lse, delta, q, k, v, qpos, kpos, sh.nq,
                                                                  sh.nk, sh.n_heads, sh.n_kv_heads, scale);
  CUDA_CHECK_LAUNCH();
  if (!gk.x) return;  // no keys
  constexpr size_t kv_bytes = flash_smem(FlashPass::DkDv, D).bytes();
  allow_smem(k_flash_dkdv<D>, kv_bytes);
  k_flash_dkdv<D><<<dim3(gk.x, gk.y), kFlashThreads, kv_bytes, s>>>(dk, dv, dout, lse, delta, q, k, v, qpos, kpos,
                                                                    sh.nq, sh.nk, sh.n_heads, sh.n_kv_heads, scale);
  CUDA_CHECK_LAUNCH();
}

void check_flash_shape(const AttnShape& s) {
  if (!flash_supports(s.head_dim))
    throw std::invalid_argument("flash attention: head_dim " + std::to_string(s.head_dim) + " (64 or 128 only)");
  // The rest (counts, heads, GQA grouping, grid limits) is flash_grid's.
}

}  // namespace

void attention_forward_flash(cudaStream_t s, float* o, float* lse, const float* q, const float* k, const float* v,
                             const int* qpos, const int* kpos, const AttnShape& sh) {
  check_flash_shape(sh);
  const float scale = 1.f / std::sqrt((float)sh.head_dim);
  if (sh.head_dim == 64)
    forward<64>(s, o, lse, q, k, v, qpos, kpos, sh, scale);
  else
    forward<128>(s, o, lse, q, k, v, qpos, kpos, sh, scale);
}

void attention_backward_flash(cudaStream_t s, Workspace& ws, float* dq, float* dk, float* dv, const float* dout,
                              const float* o, const float* lse, const float* q, const float* k, const float* v,
                              const int* qpos, const int* kpos, const AttnShape& sh) {
  check_flash_shape(sh);
  const float scale = 1.f / std::sqrt((float)sh.head_dim);
  if (sh.head_dim == 64)
    backward<64>(s, ws, dq, dk, dv, dout, o, lse, q, k, v, qpos, kpos, sh, scale);
  else
    backward<128>(s, ws, dq, dk, dv, dout, o, lse, q, k, v, qpos, kpos, sh, scale);
}

}  // namespace mor::kern::cuda
