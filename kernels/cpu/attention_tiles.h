// Internal to kernels/cpu: what attention.cpp and attention_tiles.cpp share.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/vec_math.h"

namespace mor::kern::detail {

// Number of keys visible to each query: upper bound of qpos[i] in kpos.
inline std::vector<int> visible_counts(const int* qpos, const int* kpos, int nq, int nk) {
  std::vector<int> vis(nq);
  int j = 0;
  for (int i = 0; i < nq; ++i) {
    while (j < nk && kpos[j] <= qpos[i]) ++j;
    vis[i] = j;
  }
  return vis;
}

// Per-thread scratch that lives across calls: a fresh multi-MB vector per call
// would be mmap'ed, page-faulted and unmapped every layer visit. Slots: 0 p and 1 dp
// (each thread's own), 2 dk and 3 dv per head, 4 keys and 5 values transposed (the
// calling thread's, shared with its team for the call).
// The bf16 path (attention_tiles_bf16.cpp) adds slots 6 and up for its packed operands.
constexpr int kThreadBuffers = 12;
inline std::vector<float>& thread_buffer(int slot, size_t n) {
  static thread_local std::vector<float> bufs[kThreadBuffers];
  if (bufs[slot].size() < n) bufs[slot].resize(n);
  return bufs[slot];
}

// Queries are processed in blocks of kQB: a block only touches keys up to the
// last one its final query can see, so the masked upper triangle of a causal
// set costs (almost) nothing.
constexpr int kQB = 64;

inline int round_up(int n, int to) { return (n + to - 1) / to * to; }

// first[j] for keys j < kn: the first of queries [0, m) whose visible count (vis, non-decreasing)
// exceeds j.
inline void first_queries(std::vector<int>& first, const int* vis, int m, int kn) {
  first.resize(kn);
  int i = 0;
  for (int j = 0; j < kn; ++j) {
    while (i < m && vis[i] <= j) ++i;
    first[j] = i;
  }
}

// What both directions derive from the shape: strides of q/o (ldq) and k/v (ldkv), key count
// padded for the 32-wide score tiles (nkp), and each query's number of visible keys.
struct Setup {
  int nq, nk, H, Hkv, hd, group, nblk, nkp;
  int64_t ldq, ldkv;
  float scale;
  std::vector<int> vis;
  Setup(const AttnShape& s, const int* qpos, const int* kpos)
      : nq(s.nq), nk(s.nk), H(s.n_heads), Hkv(s.n_kv_heads), hd(s.head_dim), group(H / Hkv), nblk((nq + kQB - 1) / kQB),
        nkp(round_up(std::max(nk, 1), 32)), ldq((int64_t)H * hd), ldkv((int64_t)Hkv * hd),
        scale(1.f / std::sqrt((float)hd)), vis(visible_counts(qpos, kpos, nq, nk)) {}
};

// The backward's split of each head's query blocks into two parts of about equal work (a causal
// block's work grows with the keys it sees): 2H tasks, so two threads are not left with 5 heads
// against 4. Returns the first block of the second part.
inline int balanced_split(const Setup& st) {
  double total = 0, acc = 0;
  for (int b = 0; b < st.nblk; ++b) total += (double)st.vis[std::min(st.nq, (b + 1) * kQB) - 1];
  int split = 0;
  for (; split < st.nblk && acc < total / 2; ++split) acc += st.vis[std::min(st.nq, (split + 1) * kQB) - 1];
  return split;
}

// dk, dv (+)= the per-(head, part) gradients of the backward's tasks t (head t / parts), each
// over its first filled[t] keys, summed per kv group in task order: no races, and the same bits
// whatever the thread count. Call inside a parallel region (a worksharing loop over keys).
inline void sum_head_parts(float* dk, float* dv, const float* dk_t, const float* dv_t, const int* filled, int parts,
                           const Setup& st) {
  const int nk = st.nk, Hkv = st.Hkv, hd = st.hd, group = st.group;
#pragma omp for schedule(static)
  for (int j = 0; j < nk; ++j)
    for (int g = 0; g < Hkv; ++g) {
      float* dkj = dk + ((int64_t)j * Hkv + g) * hd;
      float* dvj = dv + ((int64_t)j * Hkv + g) * hd;
      for (int t = g * group * parts; t < (g + 1) * group * parts; ++t) {
        if (j >= filled[t]) continue;
        const float* a = dk_t + ((int64_t)t * nk + j) * hd;
        const float* b = dv_t + ((int64_t)t * nk + j) * hd;
#pragma omp simd
        for (int c = 0; c < hd; ++c) {
          dkj[c] += a[c];
          dvj[c] += b[c];
        }
      }
    }
}

// The row-wise steps between the products, on a block's m score rows P[i][0, kn32) (row i sees
// vis[i] keys; kn = the block's largest). softmax_rows: scores -> probabilities, zeros up to kn,
// lse[i] saved. recompute_p: the backward's probabilities from the saved lse. ds_rows: P (holding
// p) -> ds = p * (dp - rowdot(do, o)) * scale.
inline void softmax_rows(float* P, float* lse, int m, int kn, int kn32, const int* vis, float scale) {
  for (int i = 0; i < m; ++i) {
    float* p = P + (int64_t)i * kn32;
    const int n = vis[i];
    const float mx = max_row(p, n);
#pragma omp simd
    for (int j = 0; j < n; ++j) p[j] = fast_exp((p[j] - mx) * scale);
    const float sum = sum_row(p, n);
    const float inv = n > 0 ? 1.f / sum : 0.f;
#pragma omp simd
    for (int j = 0; j < n; ++j) p[j] *= inv;
    std::fill(p + n, p + kn, 0.f);
    lse[i] = n > 0 ? mx * scale + std::log(sum) : -INFINITY;
  }
}
inline void recompute_p(float* P, const float* lse, int m, int kn, int kn32, const int* vis, float scale) {
  for (int i = 0; i < m; ++i) {
    float* p = P + (int64_t)i * kn32;
    const float l = lse[i];
    const int n = vis[i];
#pragma omp simd
    for (int j = 0; j < n; ++j) p[j] = fast_exp(p[j] * scale - l);
    std::fill(p + n, p + kn, 0.f);
  }
}
inline void ds_rows(float* P, const float* dP, const float* dout, const float* o, int64_t ldq, int m, int kn32,
                    const int* vis, int hd, float scale) {
  for (int i = 0; i < m; ++i) {
    const float* di = dout + i * ldq;
    const float* oi = o + i * ldq;
    float D = 0.f;
#pragma omp simd reduction(+ : D)
    for (int c = 0; c < hd; ++c) D += di[c] * oi[c];
    float* p = P + (int64_t)i * kn32;
    const float* dp = dP + (int64_t)i * kn32;
    const int n = vis[i];
#pragma omp simd
    for (int j = 0; j < n; ++j) p[j] = p[j] * (dp[j] - D) * scale;
  }
}

// The register-tiled path (attention_tiles.cpp): built with AVX-512 and head_dim a multiple of 16.
bool tiles_supported(int head_dim);
void attention_forward_tiles(float* o, float* lse, const float* q, const float* k, const float* v, const int* qpos,
                             const int* kpos, const AttnShape& s);
void attention_backward_tiles(float* dq, float* dk, float* dv, const float* dout, const float* o, const float* lse,
                              const float* q, const float* k, const float* v, const int* qpos, const int* kpos,
                              const AttnShape& s);

// The bf16-product path (attention_tiles_bf16.cpp, AttnShape::bf16): built with AVX512-BF16 and
// head_dim a multiple of 16.
bool tiles_bf16_supported(int head_dim);
void attention_forward_tiles_bf16(float* o, float* lse, const float* q, const float* k, const float* v, const int* qpos,
                                  const int* kpos, const AttnShape& s);
void attention_backward_tiles_bf16(float* dq, float* dk, float* dv, const float* dout, const float* o, const float* lse,
                                   const float* q, const float* k, const float* v, const int* qpos, const int* kpos,
                                   const AttnShape& s);

}  // namespace mor::kern::detail
