#include "launcher/memory_check.h"

#include <sys/resource.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "model/params.h"

namespace mor {

namespace {
std::string gb(double b) {
  char s[32];
  std::snprintf(s, sizeof s, b >= 1e9 ? "%.1f GB" : "%.0f MB", b >= 1e9 ? b / 1e9 : b / 1e6);
  return s;
}
double meminfo_kb(const std::string& key) {
  std::ifstream f("/proc/meminfo");
  for (std::string k; f >> k;) {
    double v = 0;
    f >> v;
    if (k == key + ":") return v;
    f.ignore(64, '\n');
  }
  return -1;
}
double read_number(const char* path) {
  std::ifstream f(path);
  double v = -1;
  if (!(f >> v)) return -1;  // also "max" (no limit)
  return v;
}
}  // namespace

std::string MemoryEstimate::breakdown() const {
  return "params+grads+adam " + gb(params) + ", activations " + gb(activations) + ", logits " + gb(logits);
}

MemoryEstimate estimate_training_memory(const ModelConfig& c, int micro, int world, bool recompute) {
  // All in double: the products of absurd configs must not overflow before they are compared.
  MemoryEstimate e;
  const double P = (double)analytic_param_count(c), tokens = (double)micro * c.seq_len;
  const double passes = (double)c.n_layers;  // each unrolled layer (shared ones once per recursion)
  e.params = 16.0 * P / world;
  e.activations = (recompute ? 1.0 : 4.0) * 4.0 * tokens * c.d_model * passes;
  e.logits = 2.0 * 4.0 * (double)c.seq_len * c.vocab_size;
  return e;
}

double available_memory_bytes() {
  const double avail = meminfo_kb("MemAvailable"), swap = meminfo_kb("SwapFree");
  if (avail < 0) return -1;
  double b = 1024.0 * (avail + (swap > 0 ? swap : 0));
  if (const double cg = read_number("/sys/fs/cgroup/memory.max"); cg > 0) {
    const double used = read_number("/sys/fs/cgroup/memory.current");
    b = std::min(b, cg - (used > 0 ? used : 0));
  }
  rlimit r;
  if (getrlimit(RLIMIT_AS, &r) == 0 && r.rlim_cur != RLIM_INFINITY) b = std::min(b, (double)r.rlim_cur);
  return b;
}

void check_training_memory(const ModelConfig& c, int micro, int world, bool recompute) {
  const MemoryEstimate e = estimate_training_memory(c, micro, world, recompute);
  const double avail = available_memory_bytes();
  if (avail > 0 && e.total() > avail)
    throw std::runtime_error(
        "this configuration needs at least " + gb(e.total()) + " per rank (" + e.breakdown() + ") but " + gb(avail) +
        " are available: reduce model.seq_len, model.d_model, model.vocab_size or train.micro_batch, "
        "use --train.recompute layer, or use more ranks");
}

}  // namespace mor
