#include "model/kv_cache.h"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace mor {

KvCache::KvCache(kern::Backend& be, const ModelConfig& c)
    : be_(be), kvd_(c.n_kv_heads * c.head_dim()), n_layers_(c.n_layers), visits_(c.n_layers) {
  for (KvRows& r : visits_) {
    r.k.bind(be);
    r.v.bind(be);
    r.pos.bind(be);
  }
}

// Grows a buffer to `cap` rows of `width`, keeping its first `keep` rows (Buffer::resize does not
// keep the contents when it grows).
template <class T>
static void grow(kern::Backend& be, kern::Buffer<T>& b, int64_t keep, int64_t cap, int64_t width) {
  kern::Buffer<T> bigger(be, cap * width);
  if (keep) be.copy(bigger.data(), b.data(), (size_t)(keep * width) * sizeof(T));
  b.swap(bigger);
}

void KvCache::append(int visit, const float* k, const float* v, const int32_t* pos, int n) {
  if (visit < 0 || visit >= n_layers_) throw std::logic_error("KvCache::append: no visit " + std::to_string(visit));
  if (n <= 0) return;
  KvRows& r = visits_[visit];
  const int64_t need = (int64_t)r.n + n;
  if (need > r.pos.size()) {
    const int64_t cap = std::max<int64_t>({need, 2 * r.pos.size(), 16});
    grow(be_, r.k, r.n, cap, kvd_);
    grow(be_, r.v, r.n, cap, kvd_);
    grow(be_, r.pos, r.n, cap, 1);
  }
  be_.copy(r.k.data() + (int64_t)r.n * kvd_, k, (size_t)n * kvd_ * sizeof(float));
  be_.copy(r.v.data() + (int64_t)r.n * kvd_, v, (size_t)n * kvd_ * sizeof(float));
  be_.copy(r.pos.data() + r.n, pos, (size_t)n * sizeof(int32_t));
  r.n += n;
}

void KvCache::clear() {
  for (KvRows& r : visits_) r.n = 0;
}

int64_t KvCache::rows_held() const {
  int64_t n = 0;
  for (const KvRows& r : visits_) n += r.n;
  return n;
}

int64_t KvCache::bytes() const { return rows_held() * (2 * (int64_t)kvd_ * (int64_t)sizeof(float) + 4); }

int64_t KvCache::vanilla_bytes(int64_t tokens) const {
  return tokens * n_layers_ * 2 * (int64_t)kvd_ * (int64_t)sizeof(float);
}

}  // namespace mor
