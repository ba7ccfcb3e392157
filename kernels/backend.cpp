#include "kernels/backend.h"

#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

namespace mor::kern {

RopeTable::RopeTable(Backend& be, int hd, int mp, double theta)
    : head_dim(hd), max_pos(mp), cos(be, (int64_t)mp * (hd / 2)), sin(be, (int64_t)mp * (hd / 2)) {
  const int half = hd / 2;
  std::vector<float> c((size_t)mp * half), s((size_t)mp * half);
  for (int p = 0; p < mp; ++p)
    for (int i = 0; i < half; ++i) {
      const double inv_freq = std::pow(theta, -2.0 * i / hd);
      const double a = p * inv_freq;
      c[(size_t)p * half + i] = (float)std::cos(a);
      s[(size_t)p * half + i] = (float)std::sin(a);
    }
  cos.from_host(c);
  sin.from_host(s);
}

void check_topk_args(int n, int k) {
  if (n < 0 || k < 0 || k > n)
    throw std::invalid_argument("topk_indices: need 0 <= k <= n, got n=" + std::to_string(n) +
                                " k=" + std::to_string(k));
}

void Backend::topk_indices(int32_t* out_idx, const float* scores, int n, int k) {
  check_topk_args(n, k);
  if (k == 0) return;
  if (host_addressable()) return topk_indices_host(out_idx, scores, n, k);
  std::vector<float> s((size_t)n);
  std::vector<int32_t> idx((size_t)k);
  if (n) copy_to_host(s.data(), scores, (size_t)n * sizeof(float));
  topk_indices_host(idx.data(), s.data(), n, k);
  if (k) copy_from_host(out_idx, idx.data(), (size_t)k * sizeof(int32_t));
}

}  // namespace mor::kern
