// AdamW with decoupled weight decay, global-norm clipping and the LR schedules
// (warmup + cosine, warmup-stable-decay "trapezoid"). The optimizer works on a
// contiguous range [begin, end) of the parameter arena, so a rank holding one
// shard of every tensor runs the same code on its slice.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "model/params.h"

namespace mor {

enum class Schedule { Cosine, WSD, Constant };
Schedule parse_schedule(const std::string& s);
const char* to_string(Schedule s);

struct OptimConfig {
  double lr = 3e-3;           // peak
  double min_lr_ratio = 0.0;  // end of decay, as a fraction of lr
  Schedule schedule = Schedule::WSD;
  int64_t warmup_steps = 0;  // linear from lr/warmup to lr
  double decay_frac = 0.2;   // WSD: last fraction of the steps decays linearly
  int64_t total_steps = 1000;
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8, weight_decay = 0.1;
  double grad_clip = 1.0;  // global norm; 0 = off
  // Comma-separated name substrings excluded from weight decay (norm weights
  // are always excluded), e.g. "embed_tokens,router".
  std::string no_decay;
  void validate() const;
};

// Learning rate before the update of step `step` (0-based).
double lr_at(const OptimConfig& o, int64_t step);

// Per-element weight-decay flag for an arena range, from the tensor table.
std::vector<uint8_t> decay_mask(const ParamLayout& lay, const std::string& no_decay, int64_t begin, int64_t end);

class AdamW {
 public:
  // n elements of the backend's memory; decay: the per-element weight-decay flag (host).
  AdamW(const OptimConfig& o, kern::Backend& be, int64_t n, std::vector<uint8_t> decay);
  // params/grads point at the same range (backend memory) the optimizer was made for; the
  // gradient is multiplied by grad_scale (global-norm clipping) on the fly. params16, when given
  // (same range, bf16), receives the updated parameters rounded to bf16 in the same pass.
  void update(float* params, const float* grads, double lr, float grad_scale = 1.f, kern::bf16* params16 = nullptr);
  int64_t steps_done = 0;
  kern::Buffer<float> m, v;  // first and second moments

  // The optimizer's state arrays by name (same layout as the parameters it updates): what a
  // checkpoint stores besides the parameters.
  struct StateGroup {
    const char* name;
    kern::Buffer<float>* data;
  };
  std::vector<StateGroup> state_groups() { return {{"exp_avg", &m}, {"exp_avg_sq", &v}}; }

 private:
  struct Run {  // elements [begin, end) share one weight-decay flag
    int64_t begin, end;
    bool decay;
  };
  OptimConfig o_;
  kern::Backend& be_;
  std::vector<Run> runs_;  // from the per-element mask, once: a step then never scans it
};

// Scale for clipping the global gradient norm to max_norm (1 when below or off).
inline float clip_scale(double norm, double max_norm) {
  return (max_norm > 0 && norm > max_norm) ? (float)(max_norm / (norm + 1e-6)) : 1.f;
}

}  // namespace mor
