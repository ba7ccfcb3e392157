// Whole-model gradient check by finite differences, for every combination of
// sharing strategy x router x KV mode that the config allows. For each
// parameter tensor, the analytic gradient's projection on a random direction
// must match a central difference of the loss (routing held fixed: the check
// retries with a smaller step if the perturbation flips a routing decision).
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "kernels/cpu/cpu_backend.h"
#include "model/model.h"
#include "model/rng.h"
#include "tests/model_combos.h"

using namespace mor;

namespace {

using combos::Combo;

ModelConfig tiny(const Combo& c) {
  // init_std large enough that routing and attention are far from uniform
  return combos::tiny_config(
      c, {.vocab_size = 17, .d_model = 8, .n_heads = 2, .n_kv_heads = 1, .d_ff = 12, .seq_len = 7, .init_std = 0.3f});
}

std::string name(const Combo& c) { return combos::combo_name(c, true); }

struct Routing {
  std::vector<std::vector<int>> sel;
  std::vector<int> depth;
  bool operator==(const Routing& o) const { return sel == o.sel && depth == o.depth; }
};

double loss_at(Model& m, const std::vector<int32_t>& tok, int n_seq, Routing* r) {
  LossParts l = m.step(tok.data(), n_seq, n_seq, false);
  if (r) {
    r->sel = m.cfg.router == RouterKind::Expert ? m.last_selected() : std::vector<std::vector<int>>{};
    r->depth = m.cfg.router == RouterKind::Token ? m.last_depths() : std::vector<int>{};
  }
  return l.total();
}

// gtest prints parameters in test listings; keep them readable.

class ModelGrad : public ::testing::TestWithParam<Combo> {};

TEST_P(ModelGrad, MatchesFiniteDifferences) {
  const ModelConfig cfg = tiny(GetParam());
  Model m(cfg, kern::cpu_backend());
  m.init(1234);
  const int n_seq = 2, T = cfg.seq_len;
  std::vector<int32_t> tok(n_seq * (T + 1));
  Rng rng(7, 0);
  for (auto& t : tok) t = (int32_t)(rng.next() % cfg.vocab_size);

  m.zero_grads();
  m.step(tok.data(), n_seq, n_seq, true);
  const std::vector<float> grad = m.grads.to_host_vector();
  Routing base;
  loss_at(m, tok, n_seq, &base);

  int checked = 0;
  for (const TensorInfo& t : m.layout.tensors) {
    // Unused by construction: k/v projections of shared layers are still used at recursion 0.
    std::vector<float> dir(t.numel());
    double an = 0, nrm = 0;
    for (int64_t i = 0; i < t.numel(); ++i) {
      dir[i] = (float)rng.normal();
      nrm += (double)dir[i] * dir[i];
    }
    nrm = std::sqrt(nrm);
    for (int64_t i = 0; i < t.numel(); ++i) {
      dir[i] /= (float)nrm;
      an += (double)dir[i] * grad[t.offset + i];
    }
    bool done = false;
    for (double h = 1e-2; h >= 1e-3 && !done; h /= 2) {
      float* const P = m.params.data();  // CPU backend: host memory
      std::vector<float> saved(P + t.offset, P + t.offset + t.numel());
      Routing rp, rm;
      for (int64_t i = 0; i < t.numel(); ++i) P[t.offset + i] = saved[i] + (float)h * dir[i];
      const double lp = loss_at(m, tok, n_seq, &rp);
      for (int64_t i = 0; i < t.numel(); ++i) P[t.offset + i] = saved[i] - (float)h * dir[i];
      const double lm = loss_at(m, tok, n_seq, &rm);
      std::copy(saved.begin(), saved.end(), P + t.offset);
      if (!(rp == base) || !(rm == base)) continue;  // a routing decision flipped: smaller step
      const double fd = (lp - lm) / (2 * h);
      EXPECT_NEAR(fd, an, 1e-2 * std::fabs(an) + 2e-4) << t.name << " h=" << h;
      done = true;
      ++checked;
    }
  }
  EXPECT_GE(checked, (int)m.layout.tensors.size() - 1) << "too many tensors skipped for routing flips";
}

INSTANTIATE_TEST_SUITE_P(AllCombos, ModelGrad, ::testing::ValuesIn(combos::valid_combos()),
                         [](const auto& info) { return name(info.param); });

}  // namespace
