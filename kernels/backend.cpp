#include "kernels/backend.h"

#include <cmath>

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

}  // namespace mor::kern
