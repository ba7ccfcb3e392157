// Causal attention for one sequence over a (possibly compacted) token set.
// head_dim a multiple of 16 on an AVX-512 build takes the register-tiled path of
// attention_tiles.cpp (no BLAS calls); this file is the general path.
// Per head: S = q k^T / sqrt(hd) with one BLAS call, masked softmax over the
// visible prefix (keys with kpos <= qpos; positions ascend so it is a prefix),
// O = P v. Only the log-sum-exp is kept; backward recomputes P (flash-style),
// so memory stays O(n) per head instead of O(n^2) per layer visit.
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/attention_tiles.h"
#include "kernels/cpu/vec_math.h"
#include "kernels/cpu/cpu_kernels.h"

namespace mor::kern::cpu {

using detail::kQB;
using detail::thread_buffer;
using detail::visible_counts;

void attention_forward(float* o, float* lse, const float* q, const float* k, const float* v, const int* qpos,
                       const int* kpos, const AttnShape& s) {
  const int nq = s.nq, nk = s.nk, H = s.n_heads, Hkv = s.n_kv_heads, hd = s.head_dim;
  if (s.bf16 && detail::tiles_bf16_supported(hd))
    return detail::attention_forward_tiles_bf16(o, lse, q, k, v, qpos, kpos, s);
  if (detail::tiles_supported(hd)) return detail::attention_forward_tiles(o, lse, q, k, v, qpos, kpos, s);
  const int group = H / Hkv, nblk = (nq + kQB - 1) / kQB;
  const float scale = 1.f / std::sqrt((float)hd);
  const std::vector<int> vis = visible_counts(qpos, kpos, nq, nk);
#pragma omp parallel
  {
    std::vector<float>& P = thread_buffer(0, (size_t)kQB * nk);
#pragma omp for schedule(dynamic, 1)
    for (int task = 0; task < H * nblk; ++task) {
      const int h = task / nblk, i0 = (task % nblk) * kQB, i1 = std::min(nq, i0 + kQB), g = h / group;
      const int kn = vis[i1 - 1];  // keys any query of the block can see
      float* oh = o + (int64_t)i0 * H * hd + (int64_t)h * hd;
      if (kn == 0) {
        for (int i = i0; i < i1; ++i) {
          std::fill(oh + (int64_t)(i - i0) * H * hd, oh + (int64_t)(i - i0) * H * hd + hd, 0.f);
          lse[(int64_t)h * nq + i] = -INFINITY;
        }
        continue;
      }
      const float* qh = q + (int64_t)i0 * H * hd + (int64_t)h * hd;
      const float* kg = k + (int64_t)g * hd;
      const float* vg = v + (int64_t)g * hd;
      gemm(false, true, i1 - i0, kn, hd, scale, qh, H * hd, kg, Hkv * hd, 0.f, P.data(), kn);
      for (int i = i0; i < i1; ++i) {
        float* p = P.data() + (int64_t)(i - i0) * kn;
        const int n = vis[i];
        float mx = -INFINITY;
        for (int j = 0; j < n; ++j) mx = p[j] > mx ? p[j] : mx;
#pragma omp simd
        for (int j = 0; j < n; ++j) p[j] = fast_exp(p[j] - mx);
        const float sum = sum_row(p, n);
        const float inv = n > 0 ? 1.f / sum : 0.f;
        for (int j = 0; j < n; ++j) p[j] *= inv;
        for (int j = n; j < kn; ++j) p[j] = 0.f;
        lse[(int64_t)h * nq + i] = n > 0 ? mx + std::log(sum) : -INFINITY;
      }
      gemm(false, false, i1 - i0, hd, kn, 1.f, P.data(), kn, vg, Hkv * hd, 0.f, oh, H * hd);
    }
  }
}

void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* o, const float* lse,
                        const float* q, const float* k, const float* v, const int* qpos, const int* kpos,
                        const AttnShape& s) {
  const int nq = s.nq, nk = s.nk, H = s.n_heads, Hkv = s.n_kv_heads, hd = s.head_dim;
  if (s.bf16 && detail::tiles_bf16_supported(hd))
    return detail::attention_backward_tiles_bf16(dq, dk, dv, dout, o, lse, q, k, v, qpos, kpos, s);
  if (detail::tiles_supported(hd))
    return detail::attention_backward_tiles(dq, dk, dv, dout, o, lse, q, k, v, qpos, kpos, s);
  const int group = H / Hkv;
  const float scale = 1.f / std::sqrt((float)hd);
  const std::vector<int> vis = visible_counts(qpos, kpos, nq, nk);
  // Per-query-head dk/dv, reduced over each kv group in head order afterwards:
  // no races, and the same bits whatever the thread count.
  std::vector<float>& dk_h = thread_buffer(2, (size_t)H * nk * hd);
  std::vector<float>& dv_h = thread_buffer(3, (size_t)H * nk * hd);
#pragma omp parallel
  {
    std::vector<float>& P = thread_buffer(0, (size_t)kQB * nk);
    std::vector<float>& dP = thread_buffer(1, (size_t)kQB * nk);
#pragma omp for schedule(dynamic, 1)
    for (int h = 0; h < H; ++h) {
      const int g = h / group;
      const float* kg = k + (int64_t)g * hd;
      const float* vg = v + (int64_t)g * hd;
      float* dkh = dk_h.data() + (size_t)h * nk * hd;
      float* dvh = dv_h.data() + (size_t)h * nk * hd;
      std::fill(dkh, dkh + (size_t)nk * hd, 0.f);
      std::fill(dvh, dvh + (size_t)nk * hd, 0.f);
      for (int i0 = 0; i0 < nq; i0 += kQB) {  // blocks in order: a fixed summation order
        const int i1 = std::min(nq, i0 + kQB), m = i1 - i0, kn = vis[i1 - 1];
        const float* qh = q + (int64_t)i0 * H * hd + (int64_t)h * hd;
        const float* doh = dout + (int64_t)i0 * H * hd + (int64_t)h * hd;
        const float* oh = o + (int64_t)i0 * H * hd + (int64_t)h * hd;
        float* dqh = dq + (int64_t)i0 * H * hd + (int64_t)h * hd;
        if (kn == 0) {
          for (int i = 0; i < m; ++i) std::fill(dqh + (int64_t)i * H * hd, dqh + (int64_t)i * H * hd + hd, 0.f);
          continue;
        }
        gemm(false, true, m, kn, hd, scale, qh, H * hd, kg, Hkv * hd, 0.f, P.data(), kn);
        for (int i = 0; i < m; ++i) {
          float* p = P.data() + (int64_t)i * kn;
          const float l = lse[(int64_t)h * nq + i0 + i];
          const int n = vis[i0 + i];
#pragma omp simd
          for (int j = 0; j < n; ++j) p[j] = fast_exp(p[j] - l);
          for (int j = n; j < kn; ++j) p[j] = 0.f;
        }
        // dV += P^T dO ; dP = dO V^T
        gemm(true, false, kn, hd, m, 1.f, P.data(), kn, doh, H * hd, 1.f, dvh, hd);
        gemm(false, true, m, kn, hd, 1.f, doh, H * hd, vg, Hkv * hd, 0.f, dP.data(), kn);
        // dS = P * (dP - rowdot(dO, O)) * scale
        for (int i = 0; i < m; ++i) {
          const float* di = doh + (int64_t)i * H * hd;
          const float* oi = oh + (int64_t)i * H * hd;
          float D = 0.f;
          for (int t = 0; t < hd; ++t) D += di[t] * oi[t];
          float* p = P.data() + (int64_t)i * kn;
          const float* dp = dP.data() + (int64_t)i * kn;
          for (int j = 0; j < vis[i0 + i]; ++j) p[j] = p[j] * (dp[j] - D) * scale;
        }
        gemm(false, false, m, hd, kn, 1.f, P.data(), kn, kg, Hkv * hd, 0.f, dqh, H * hd);
        gemm(true, false, kn, hd, m, 1.f, P.data(), kn, qh, H * hd, 1.f, dkh, hd);
      }
    }
#pragma omp for schedule(static)
    for (int j = 0; j < nk; ++j)
      for (int g = 0; g < Hkv; ++g) {
        float* dkj = dk + ((int64_t)j * Hkv + g) * hd;
        float* dvj = dv + ((int64_t)j * Hkv + g) * hd;
        for (int h = g * group; h < (g + 1) * group; ++h) {
          const float* a = dk_h.data() + ((size_t)h * nk + j) * hd;
          const float* b = dv_h.data() + ((size_t)h * nk + j) * hd;
          for (int t = 0; t < hd; ++t) {
            dkj[t] += a[t];
            dvj[t] += b[t];
          }
        }
      }
  }
}

}  // namespace mor::kern::cpu
