// Causal attention over a compacted token set (query i sees key j iff kpos[j] <= qpos[i]; both
// ascending, so the visible keys of query i are a prefix of length upper_bound(kpos, qpos[i])).
// The straightforward, robust path: one block of kThreads per (query, head) for the forward and
// dq, one block per (key, kv head) for dk/dv, scores recomputed from q and k where needed, fp32
// throughout, no atomics (deterministic). Correctness first: the fused tiled (FlashAttention-2
// style) kernel is later work.
#include <cmath>

#include "kernels/cuda/device_common.cuh"
#include "kernels/cuda/host_helpers.h"  // pos_upper_bound, pos_lower_bound (shared with the host tests)
#include "kernels/cuda/kernels.h"

namespace mor::kern::cuda {

namespace {

constexpr int kThreads = 128;
constexpr int kMaxDimsPerThread = 4;  // head_dim <= kThreads * 4 = 512

__device__ inline float dot(const float* a, const float* b, int n) {
  float s = 0.f;
  for (int e = 0; e < n; ++e) s += a[e] * b[e];
  return s;
}

// grid (nq, H). Dynamic shared memory: the query row (hd floats).
__global__ void k_attn_forward(float* o, float* lse, const float* q, const float* k, const float* v, const int* qpos,
                               const int* kpos, int nq, int nk, int H, int Hkv, int hd, float scale) {
  extern __shared__ float qs[];
  __shared__ float p[kThreads];
  __shared__ float red[32];
  const int i = blockIdx.x, h = blockIdx.y, g = h / (H / Hkv), t = threadIdx.x;
  const int64_t row = ((int64_t)i * H + h) * hd;
  for (int e = t; e < hd; e += kThreads) qs[e] = q[row + e];
  const int nvis = pos_upper_bound(kpos, nk, qpos[i]);
  __syncthreads();
  if (nvis == 0) {  // no visible key: zero output, lse -inf (as the CPU backend)
    for (int e = t; e < hd; e += kThreads) o[row + e] = 0.f;
    if (t == 0) lse[(int64_t)h * nq + i] = -INFINITY;
    return;
  }
  // Pass 1: per-thread online max and sum, then combined over the block.
  float m = -INFINITY, l = 0.f;
  for (int j = t; j < nvis; j += kThreads) {
    const float s = dot(qs, k + ((int64_t)j * Hkv + g) * hd, hd) * scale;
    if (s > m) {
      l = l * expf(m - s) + 1.f;
      m = s;
    } else {
      l += expf(s - m);
    }
  }
  const float M = block_max(m, red);
  const float L = block_sum(m == -INFINITY ? 0.f : l * expf(m - M), red);
  const float lse_i = M + logf(L);
  if (t == 0) lse[(int64_t)h * nq + i] = lse_i;
  // Pass 2: o = sum_j p_j v_j, a chunk of probabilities at a time.
  float acc[kMaxDimsPerThread] = {};
  for (int c0 = 0; c0 < nvis; c0 += kThreads) {
    const int j = c0 + t;
    p[t] = j < nvis ? expf(dot(qs, k + ((int64_t)j * Hkv + g) * hd, hd) * scale - lse_i) : 0.f;
    __syncthreads();
    const int cn = min(kThreads, nvis - c0);
    for (int r = 0; r < kMaxDimsPerThread; ++r) {
      const int e = t + r * kThreads;
      if (e >= hd) break;
      float a = acc[r];
      for (int jj = 0; jj < cn; ++jj) a += p[jj] * v[((int64_t)(c0 + jj) * Hkv + g) * hd + e];
      acc[r] = a;
    }
    __syncthreads();
  }
  for (int r = 0; r < kMaxDimsPerThread; ++r) {
    const int e = t + r * kThreads;
    if (e < hd) o[row + e] = acc[r];
  }
}

// delta[h, i] = <dout, o> of query i, head h. grid (nq, H), one warp.
__global__ void k_attn_delta(float* delta, const float* dout, const float* o, int nq, int H, int hd) {
  const int i = blockIdx.x, h = blockIdx.y;
  const int64_t row = ((int64_t)i * H + h) * hd;
  float s = 0.f;
  for (int e = threadIdx.x; e < hd; e += 32) s += dout[row + e] * o[row + e];
  s = warp_sum(s);
  if (threadIdx.x == 0) delta[(int64_t)h * nq + i] = s;
}

// dq[i, h] = sum_j ds_ij k_j, ds_ij = p_ij (dout_i . v_j - delta_i) * scale (written).
// grid (nq, H). Dynamic shared memory: q row and dout row (2 hd floats).
__global__ void k_attn_dq(float* dq, const float* dout, const float* lse, const float* delta, const float* q,
                          const float* k, const float* v, const int* qpos, const int* kpos, int nq, int nk, int H,
                          int Hkv, int hd, float scale) {
  extern __shared__ float sh[];
  float *qs = sh, *gs = sh + hd;
  __shared__ float ds[kThreads];
  const int i = blockIdx.x, h = blockIdx.y, g = h / (H / Hkv), t = threadIdx.x;
  const int64_t row = ((int64_t)i * H + h) * hd;
  for (int e = t; e < hd; e += kThreads) qs[e] = q[row + e], gs[e] = dout[row + e];
  const int nvis = pos_upper_bound(kpos, nk, qpos[i]);
  const float lse_i = lse[(int64_t)h * nq + i], d_i = delta[(int64_t)h * nq + i];
  __syncthreads();
  float acc[kMaxDimsPerThread] = {};
  for (int c0 = 0; c0 < nvis; c0 += kThreads) {
    const int j = c0 + t;
    float dsj = 0.f;
    if (j < nvis) {
      const int64_t kv = ((int64_t)j * Hkv + g) * hd;
      const float pj = expf(dot(qs, k + kv, hd) * scale - lse_i);
      dsj = pj * (dot(gs, v + kv, hd) - d_i) * scale;
    }
    ds[t] = dsj;
    __syncthreads();
    const int cn = min(kThreads, nvis - c0);
    for (int r = 0; r < kMaxDimsPerThread; ++r) {
      const int e = t + r * kThreads;
      if (e >= hd) break;
      float a = acc[r];
      for (int jj = 0; jj < cn; ++jj) a += ds[jj] * k[((int64_t)(c0 + jj) * Hkv + g) * hd + e];
      acc[r] = a;
    }
    __syncthreads();
  }
  for (int r = 0; r < kMaxDimsPerThread; ++r) {
    const int e = t + r * kThreads;
    if (e < hd) dq[row + e] = acc[r];
  }
}

// dv[j, g] += sum_{h in group g, i sees j} p_ij dout_ih; dk[j, g] += sum ds_ij q_ih.
// grid (nk, Hkv). Dynamic shared memory: k row and v row (2 hd floats).
__global__ void k_attn_dkdv(float* dk, float* dv, const float* dout, const float* lse, const float* delta,
                            const float* q, const float* k, const float* v, const int* qpos, const int* kpos, int nq,
                            int H, int Hkv, int hd, float scale) {
  extern __shared__ float sh[];
  float *ks = sh, *vs = sh + hd;
  __shared__ float ps[kThreads], ds[kThreads];
  const int j = blockIdx.x, g = blockIdx.y, group = H / Hkv, t = threadIdx.x;
  const int64_t kv = ((int64_t)j * Hkv + g) * hd;
  for (int e = t; e < hd; e += kThreads) ks[e] = k[kv + e], vs[e] = v[kv + e];
  const int i0 = pos_lower_bound(qpos, nq, kpos[j]);
  __syncthreads();
  float acck[kMaxDimsPerThread] = {}, accv[kMaxDimsPerThread] = {};
  for (int h = g * group; h < (g + 1) * group; ++h)
    for (int c0 = i0; c0 < nq; c0 += kThreads) {
      const int i = c0 + t;
      float pi = 0.f, dsi = 0.f;
      if (i < nq) {
        const int64_t row = ((int64_t)i * H + h) * hd;
        pi = expf(dot(q + row, ks, hd) * scale - lse[(int64_t)h * nq + i]);
        dsi = pi * (dot(dout + row, vs, hd) - delta[(int64_t)h * nq + i]) * scale;
      }
      ps[t] = pi;
      ds[t] = dsi;
      __syncthreads();
      const int cn = min(kThreads, nq - c0);
      for (int r = 0; r < kMaxDimsPerThread; ++r) {
        const int e = t + r * kThreads;
        if (e >= hd) break;
        float a = acck[r], b = accv[r];
        for (int ii = 0; ii < cn; ++ii) {
          const int64_t row = ((int64_t)(c0 + ii) * H + h) * hd + e;
          a += ds[ii] * q[row];
          b += ps[ii] * dout[row];
        }
        acck[r] = a;
        accv[r] = b;
      }
      __syncthreads();
    }
  for (int r = 0; r < kMaxDimsPerThread; ++r) {
    const int e = t + r * kThreads;
    if (e < hd) dk[kv + e] += acck[r], dv[kv + e] += accv[r];
  }
}

void check_shape(const AttnShape& s) {
  if (s.nq < 0 || s.nk < 0 || s.n_heads < 1 || s.n_kv_heads < 1 || s.n_heads % s.n_kv_heads || s.head_dim < 1)
    throw std::invalid_argument("attention: invalid shape");
  if (s.head_dim > kThreads * kMaxDimsPerThread)
    throw std::invalid_argument("attention: head_dim " + std::to_string(s.head_dim) + " above the CUDA kernel's " +
                                std::to_string(kThreads * kMaxDimsPerThread));
  if (s.n_heads > 65535) throw std::invalid_argument("attention: more than 65535 heads");
}

}  // namespace

void attention_forward(cudaStream_t s, float* o, float* lse, const float* q, const float* k, const float* v,
                       const int* qpos, const int* kpos, const AttnShape& sh) {
  check_shape(sh);
  if (sh.nq == 0) return;
  const float scale = 1.f / std::sqrt((float)sh.head_dim);
  k_attn_forward<<<dim3(sh.nq, sh.n_heads), kThreads, sh.head_dim * sizeof(float), s>>>(
      o, lse, q, k, v, qpos, kpos, sh.nq, sh.nk, sh.n_heads, sh.n_kv_heads, sh.head_dim, scale);
  CUDA_CHECK_LAUNCH();
}

void attention_backward(cudaStream_t s, Workspace& ws, float* dq, float* dk, float* dv, const float* dout,
                        const float* o, const float* lse, const float* q, const float* k, const float* v,
                        const int* qpos, const int* kpos, const AttnShape& sh) {
  check_shape(sh);
  if (sh.nq == 0) return;
  const float scale = 1.f / std::sqrt((float)sh.head_dim);
  float* delta = static_cast<float*>(ws.get((size_t)sh.n_heads * sh.nq * sizeof(float)));
  const size_t two_rows = 2 * (size_t)sh.head_dim * sizeof(float);
  k_attn_delta<<<dim3(sh.nq, sh.n_heads), 32, 0, s>>>(delta, dout, o, sh.nq, sh.n_heads, sh.head_dim);
  CUDA_CHECK_LAUNCH();
  k_attn_dq<<<dim3(sh.nq, sh.n_heads), kThreads, two_rows, s>>>(dq, dout, lse, delta, q, k, v, qpos, kpos, sh.nq, sh.nk,
                                                                sh.n_heads, sh.n_kv_heads, sh.head_dim, scale);
  CUDA_CHECK_LAUNCH();
  if (sh.nk == 0) return;
  k_attn_dkdv<<<dim3(sh.nk, sh.n_kv_heads), kThreads, two_rows, s>>>(
      dk, dv, dout, lse, delta, q, k, v, qpos, kpos, sh.nq, sh.n_heads, sh.n_kv_heads, sh.head_dim, scale);
  CUDA_CHECK_LAUNCH();
}

}  // namespace mor::kern::cuda
