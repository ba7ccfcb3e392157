#include "model/optimizer.h"

#include <cmath>
#include <sstream>
#include <stdexcept>

namespace mor {

Schedule parse_schedule(const std::string& s) {
  if (s == "cosine") return Schedule::Cosine;
  if (s == "wsd" || s == "trapezoid") return Schedule::WSD;
  if (s == "constant") return Schedule::Constant;
  throw ConfigError("optim.schedule", "unknown value '" + s + "' (cosine, wsd, constant)");
}
const char* to_string(Schedule s) { return s == Schedule::Cosine ? "cosine" : s == Schedule::WSD ? "wsd" : "constant"; }

void OptimConfig::validate() const {
  if (!(lr > 0) || !std::isfinite(lr)) throw ConfigError("optim.lr", "must be a finite number > 0");
  if (min_lr_ratio < 0 || min_lr_ratio > 1) throw ConfigError("optim.min_lr_ratio", "must be in [0, 1]");
  if (warmup_steps < 0) throw ConfigError("optim.warmup_steps", "must be >= 0");
  if (decay_frac < 0 || decay_frac > 1) throw ConfigError("optim.decay_frac", "must be in [0, 1]");
  if (beta1 < 0 || beta1 >= 1) throw ConfigError("optim.beta1", "must be in [0, 1)");
  if (beta2 < 0 || beta2 >= 1) throw ConfigError("optim.beta2", "must be in [0, 1)");
  if (!std::isfinite(min_lr_ratio + decay_frac + beta1 + beta2 + eps + weight_decay + grad_clip))
    throw ConfigError("optim", "every optimizer setting must be a finite number (inf or nan given)");
  if (!(eps > 0)) throw ConfigError("optim.eps", "must be > 0");
  if (weight_decay < 0) throw ConfigError("optim.weight_decay", "must be >= 0");
  if (grad_clip < 0) throw ConfigError("optim.grad_clip", "must be >= 0 (0 = off)");
}

double lr_at(const OptimConfig& o, int64_t step) {
  if (step < o.warmup_steps) return o.lr * double(step + 1) / double(o.warmup_steps);
  const double min_lr = o.lr * o.min_lr_ratio;
  switch (o.schedule) {
    case Schedule::Constant:
      return o.lr;
    case Schedule::Cosine: {
      const double span = std::max<int64_t>(1, o.total_steps - o.warmup_steps);
      const double t = std::min(1.0, double(step - o.warmup_steps) / span);
      return min_lr + 0.5 * (o.lr - min_lr) * (1.0 + std::cos(M_PI * t));
    }
    case Schedule::WSD: {
      const int64_t decay_steps = (int64_t)std::llround(o.decay_frac * o.total_steps);
      const int64_t decay_start = o.total_steps - decay_steps;
      if (step < decay_start || decay_steps == 0) return o.lr;
      const double t = std::min(1.0, double(step - decay_start + 1) / decay_steps);
      return o.lr + (min_lr - o.lr) * t;  // linear to min_lr at the last step
    }
  }
  return o.lr;
}

std::vector<uint8_t> decay_mask(const ParamLayout& lay, const std::string& no_decay, int64_t begin, int64_t end) {
  std::vector<std::string> pats;
  std::stringstream ss(no_decay);
  for (std::string p; std::getline(ss, p, ',');)
    if (!p.empty()) pats.push_back(p);
  std::vector<uint8_t> mask(end - begin, 0);
  for (const auto& t : lay.tensors) {
    bool decay = t.decay;
    for (const auto& p : pats)
      if (t.name.find(p) != std::string::npos) decay = false;
    const int64_t a = std::max(begin, t.offset), b = std::min(end, t.offset + t.numel());
    for (int64_t i = a; i < b; ++i) mask[i - begin] = decay;
  }
  return mask;
}

AdamW::AdamW(const OptimConfig& o, kern::Backend& be, int64_t n, std::vector<uint8_t> decay)
    : m(be, n), v(be, n), o_(o), be_(be) {
  m.zero();
  v.zero();
  if ((int64_t)decay.size() != n)
    throw std::invalid_argument("AdamW: decay mask size differs from the parameter count");
  for (int64_t i = 0; i < n;) {
    int64_t j = i;
    while (j < n && decay[j] == decay[i]) ++j;
    runs_.push_back({i, j, decay[i] != 0});
    i = j;
  }
}

void AdamW::update(float* params, const float* grads, double lr, float grad_scale, kern::bf16* params16) {
  ++steps_done;
  for (const Run& r : runs_) {
    kern::AdamWParams p{
        (float)lr,  (float)o_.beta1, (float)o_.beta2, (float)o_.eps, r.decay ? (float)o_.weight_decay : 0.f,
        steps_done, grad_scale};
    if (params16)
      be_.adamw_update_bf16(params + r.begin, params16 + r.begin, grads + r.begin, m.data() + r.begin,
                            v.data() + r.begin, r.end - r.begin, p);
    else
      be_.adamw_update(params + r.begin, grads + r.begin, m.data() + r.begin, v.data() + r.begin, r.end - r.begin, p);
  }
}

}  // namespace mor
