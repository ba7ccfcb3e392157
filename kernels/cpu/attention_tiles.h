// Internal to kernels/cpu: what attention.cpp and attention_tiles.cpp share.
#pragma once

#include <cstddef>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"

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
inline std::vector<float>& thread_buffer(int slot, size_t n) {
  static thread_local std::vector<float> bufs[6];
  if (bufs[slot].size() < n) bufs[slot].resize(n);
  return bufs[slot];
}

// Queries are processed in blocks of kQB: a block only touches keys up to the
// last one its final query can see, so the masked upper triangle of a causal
// set costs (almost) nothing.
constexpr int kQB = 64;

// The register-tiled path (attention_tiles.cpp): built with AVX-512 and head_dim a multiple of 16.
bool tiles_supported(int head_dim);
void attention_forward_tiles(float* o, float* lse, const float* q, const float* k, const float* v, const int* qpos,
                             const int* kpos, const AttnShape& s);
void attention_backward_tiles(float* dq, float* dk, float* dv, const float* dout, const float* o, const float* lse,
                              const float* q, const float* k, const float* v, const int* qpos, const int* kpos,
                              const AttnShape& s);

}  // namespace mor::kern::detail
