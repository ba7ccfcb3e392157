// Causal attention for one sequence over a (possibly compacted) token set.
// Per head: S = q k^T / sqrt(hd) with one BLAS call, masked softmax over the
// visible prefix (keys with kpos <= qpos; positions ascend so it is a prefix),
// O = P v. Only the log-sum-exp is kept; backward recomputes P (flash-style),
// so memory stays O(n) per head instead of O(n^2) per layer visit.
#include <cmath>
#include <vector>

#include "kernels/kernels.h"

namespace mor::kern {

namespace {
// Number of keys visible to each query: upper bound of qpos[i] in kpos.
std::vector<int> visible_counts(const int* qpos, const int* kpos, int nq, int nk) {
  std::vector<int> vis(nq);
  int j = 0;
  for (int i = 0; i < nq; ++i) {
    while (j < nk && kpos[j] <= qpos[i]) ++j;
    vis[i] = j;
  }
  return vis;
}
// Per-thread scratch that lives across calls: a fresh multi-MB vector per call
// would be mmap'ed, page-faulted and unmapped every layer visit.
std::vector<float>& thread_buffer(int slot, size_t n) {
  static thread_local std::vector<float> bufs[4];
  if (bufs[slot].size() < n) bufs[slot].resize(n);
  return bufs[slot];
}
}  // namespace

void attention_forward(float* o, float* lse, const float* q, const float* k, const float* v,
                       const int* qpos, const int* kpos, const AttnShape& s) {
  const int nq = s.nq, nk = s.nk, H = s.n_heads, Hkv = s.n_kv_heads, hd = s.head_dim;
  const int group = H / Hkv;
  const float scale = 1.f / std::sqrt((float)hd);
  const std::vector<int> vis = visible_counts(qpos, kpos, nq, nk);
#pragma omp parallel
  {
    std::vector<float>& P = thread_buffer(0, (size_t)nq * nk);
#pragma omp for schedule(dynamic, 1)
    for (int h = 0; h < H; ++h) {
      const int g = h / group;
      const float* qh = q + (int64_t)h * hd;
      const float* kg = k + (int64_t)g * hd;
      const float* vg = v + (int64_t)g * hd;
      gemm(false, true, nq, nk, hd, scale, qh, H * hd, kg, Hkv * hd, 0.f, P.data(), nk);
      for (int i = 0; i < nq; ++i) {
        float* p = P.data() + (int64_t)i * nk;
        const int n = vis[i];
        float mx = -INFINITY;
        for (int j = 0; j < n; ++j) mx = p[j] > mx ? p[j] : mx;
        float sum = 0.f;
        for (int j = 0; j < n; ++j) {
          p[j] = std::exp(p[j] - mx);
          sum += p[j];
        }
        const float inv = n > 0 ? 1.f / sum : 0.f;
        for (int j = 0; j < n; ++j) p[j] *= inv;
        for (int j = n; j < nk; ++j) p[j] = 0.f;
        lse[(int64_t)h * nq + i] = n > 0 ? mx + std::log(sum) : -INFINITY;
      }
      gemm(false, false, nq, hd, nk, 1.f, P.data(), nk, vg, Hkv * hd, 0.f, o + (int64_t)h * hd, H * hd);
    }
  }
}

void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* o,
                        const float* lse, const float* q, const float* k, const float* v,
                        const int* qpos, const int* kpos, const AttnShape& s) {
  const int nq = s.nq, nk = s.nk, H = s.n_heads, Hkv = s.n_kv_heads, hd = s.head_dim;
  const int group = H / Hkv;
  const float scale = 1.f / std::sqrt((float)hd);
  const std::vector<int> vis = visible_counts(qpos, kpos, nq, nk);
  // Per-query-head dk/dv, reduced over each kv group in head order afterwards:
  // no races, and the same bits whatever the thread count.
  std::vector<float>& dk_h = thread_buffer(2, (size_t)H * nk * hd);
  std::vector<float>& dv_h = thread_buffer(3, (size_t)H * nk * hd);
#pragma omp parallel
  {
    std::vector<float>& P = thread_buffer(0, (size_t)nq * nk);
    std::vector<float>& dP = thread_buffer(1, (size_t)nq * nk);
#pragma omp for schedule(dynamic, 1)
    for (int h = 0; h < H; ++h) {
      const int g = h / group;
      const float* qh = q + (int64_t)h * hd;
      const float* kg = k + (int64_t)g * hd;
      const float* vg = v + (int64_t)g * hd;
      const float* doh = dout + (int64_t)h * hd;
      const float* oh = o + (int64_t)h * hd;
      gemm(false, true, nq, nk, hd, scale, qh, H * hd, kg, Hkv * hd, 0.f, P.data(), nk);
      for (int i = 0; i < nq; ++i) {
        float* p = P.data() + (int64_t)i * nk;
        const float l = lse[(int64_t)h * nq + i];
        for (int j = 0; j < vis[i]; ++j) p[j] = std::exp(p[j] - l);
        for (int j = vis[i]; j < nk; ++j) p[j] = 0.f;
      }
      // dV_h = P^T dO ; dP = dO V^T
      gemm(true, false, nk, hd, nq, 1.f, P.data(), nk, doh, H * hd, 0.f, dv_h.data() + (size_t)h * nk * hd, hd);
      gemm(false, true, nq, nk, hd, 1.f, doh, H * hd, vg, Hkv * hd, 0.f, dP.data(), nk);
      // dS = P * (dP - rowdot(dO, O)) * scale
      for (int i = 0; i < nq; ++i) {
        const float* di = doh + (int64_t)i * H * hd;
        const float* oi = oh + (int64_t)i * H * hd;
        float D = 0.f;
        for (int t = 0; t < hd; ++t) D += di[t] * oi[t];
        float* p = P.data() + (int64_t)i * nk;
        const float* dp = dP.data() + (int64_t)i * nk;
        for (int j = 0; j < vis[i]; ++j) p[j] = p[j] * (dp[j] - D) * scale;
      }
      gemm(false, false, nq, hd, nk, 1.f, P.data(), nk, kg, Hkv * hd, 0.f, dq + (int64_t)h * hd, H * hd);
      gemm(true, false, nk, hd, nq, 1.f, P.data(), nk, qh, H * hd, 0.f, dk_h.data() + (size_t)h * nk * hd, hd);
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

}  // namespace mor::kern
