// A lower bound on the memory a training run allocates, from the config alone, checked against
// what the machine has before anything large is allocated: an impossible size (seq_len 1e9,
// d_model 2^20) then fails with what and how much instead of std::bad_alloc minutes later.
#pragma once
#include <cstdint>
#include <string>

#include "model/config.h"

namespace mor {

struct MemoryEstimate {
  double params = 0;       // parameters, gradients and both AdamW moments on this rank (fp32)
  double activations = 0;  // kept for backward: at least 4 [micro * T, D] per layer pass (1 with recompute)
  double logits = 0;       // one [T, V] logits chunk and its gradient
  double total() const { return params + activations + logits; }
  std::string breakdown() const;  // "params+grads+adam 1.2 GB, activations 3.4 GB, logits 0.5 GB"
};

// What a run of `micro` sequences per micro-batch on `world` ranks allocates at least (recompute:
// --train.recompute layer keeps one [micro * T, D] input per layer pass).
MemoryEstimate estimate_training_memory(const ModelConfig& c, int micro, int world, bool recompute = false);

// Bytes this process could still get: MemAvailable + SwapFree from /proc/meminfo, capped by the
// cgroup limit and RLIMIT_AS where set; a negative value when unknown.
double available_memory_bytes();

// Throws std::runtime_error naming the sizes when the lower bound exceeds what is available.
void check_training_memory(const ModelConfig& c, int micro, int world, bool recompute = false);

}  // namespace mor
