#include "model/sampling.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <stdexcept>
#include <vector>

namespace mor {

void check_sampling(const SamplingOptions& o) {
  if (!(o.temperature >= 0.f) || !std::isfinite(o.temperature))
    throw std::invalid_argument("temperature must be >= 0 and finite (0 = greedy)");
  if (o.top_k < 0) throw std::invalid_argument("top-k must be >= 0 (0 = no limit)");
  if (!(o.top_p > 0.f && o.top_p <= 1.f)) throw std::invalid_argument("top-p must be in (0, 1] (1 = no limit)");
  if (o.n_allowed < 0) throw std::invalid_argument("n_allowed must be >= 0");
}

int32_t sample_token(const float* logits, int V, const SamplingOptions& o, Rng& rng) {
  const int n = o.n_allowed > 0 ? std::min(o.n_allowed, V) : V;
  if (o.temperature == 0.f) return (int32_t)(std::max_element(logits, logits + n) - logits);  // first maximum
  // The kept tokens, most likely first (ties: lower id first).
  const int keep = o.top_k > 0 ? std::min(o.top_k, n) : n;
  std::vector<int32_t> ids(n);
  std::iota(ids.begin(), ids.end(), 0);
  auto more_likely = [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
  std::partial_sort(ids.begin(), ids.begin() + keep, ids.end(), more_likely);
  ids.resize(keep);
  std::vector<double> p(keep);
  const double mx = logits[ids[0]];
  double total = 0;
  for (int i = 0; i < keep; ++i) total += (p[i] = std::exp(((double)logits[ids[i]] - mx) / o.temperature));
  int m = keep;  // nucleus: the shortest prefix whose probability reaches top_p
  if (o.top_p < 1.f) {
    double cum = 0;
    for (int i = 0; i < keep; ++i) {
      cum += p[i];
      if (cum >= o.top_p * total) {
        m = i + 1;
        break;
      }
    }
    total = std::accumulate(p.begin(), p.begin() + m, 0.0);
  }
  const double u = rng.uniform() * total;
  double cum = 0;
  for (int i = 0; i < m; ++i) {
    cum += p[i];
    if (u < cum) return ids[i];
  }
  return ids[m - 1];  // u within rounding of the total
}

}  // namespace mor
