// Backend::topk_indices on the host: the selection expert-choice routing made inline until it
// became a backend operation (model/router_expert.cpp), kept exactly: a partial sort of the
// indices by (score descending, index ascending), then the k chosen indices sorted ascending.
#include <algorithm>
#include <numeric>
#include <vector>

#include "kernels/backend.h"

namespace mor::kern {

void topk_indices_host(int32_t* out_idx, const float* scores, int n, int k) {
  check_topk_args(n, k);
  if (k == 0) return;
  std::vector<int32_t> order((size_t)n);
  std::iota(order.begin(), order.end(), 0);
  std::partial_sort(order.begin(), order.begin() + k, order.end(),
                    [&](int32_t a, int32_t c) { return scores[a] > scores[c] || (scores[a] == scores[c] && a < c); });
  std::sort(order.begin(), order.begin() + k);
  std::copy(order.begin(), order.begin() + k, out_idx);
}

}  // namespace mor::kern
