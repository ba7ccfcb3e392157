// Activation recomputation (Model::recompute, --train.recompute layer): every loss term and every
// gradient bit for bit those of keeping all activations, for every sharing strategy, router and KV
// mode, over two steps (the second reuses the buffers); and less activation memory held.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/cpu_backend.h"
#include "model/model.h"
#include "tests/model_combos.h"

using namespace mor;

namespace {

using combos::Combo;

ModelConfig config(const Combo& c) {
  return combos::tiny_config(c, {.vocab_size = 61, .d_model = 32, .n_heads = 4, .n_kv_heads = 2, .d_ff = 48,
                                  .seq_len = 16, .init_std = 0.2f});
}

std::string name(const ::testing::TestParamInfo<Combo>& i) { return combos::combo_name(i.param); }

class Recompute : public ::testing::TestWithParam<Combo> {};

TEST_P(Recompute, LossesAndGradientsAreBitIdentical) {
  const ModelConfig cfg = config(GetParam());
  Model keep(cfg, kern::cpu_backend()), again(cfg, kern::cpu_backend());
  keep.init(5);
  again.init(5);
  again.recompute = true;
  const int n_seq = 3;
  std::mt19937 g(11);
  for (int step = 0; step < 2; ++step) {
    std::vector<int32_t> tok((size_t)n_seq * (cfg.seq_len + 1));
    for (auto& t : tok) t = (int32_t)(g() % cfg.vocab_size);
    keep.zero_grads();
    again.zero_grads();
    const LossParts a = keep.step(tok.data(), n_seq, n_seq, true), b = again.step(tok.data(), n_seq, n_seq, true);
    EXPECT_EQ(a.ce, b.ce) << "step " << step;
    ASSERT_EQ(a.terms.size(), b.terms.size());
    for (size_t i = 0; i < a.terms.size(); ++i) EXPECT_EQ(a.terms[i].value, b.terms[i].value) << a.terms[i].name;
    const std::vector<float> ga = keep.grads.to_host_vector(), gb = again.grads.to_host_vector();
    ASSERT_EQ(ga.size(), gb.size());
    EXPECT_EQ(std::memcmp(ga.data(), gb.data(), ga.size() * sizeof(float)), 0) << "gradients differ at step " << step;
    EXPECT_EQ(keep.last_selected(), again.last_selected());
    EXPECT_EQ(keep.last_depths(), again.last_depths());
  }
  EXPECT_LT(again.activation_bytes(), keep.activation_bytes());
}

INSTANTIATE_TEST_SUITE_P(AllVariants, Recompute,
                         ::testing::Values(Combo{Sharing::Cycle, RouterKind::None, KvMode::Recursion},
                                           Combo{Sharing::Cycle, RouterKind::None, KvMode::Share},
                                           Combo{Sharing::Sequence, RouterKind::None, KvMode::Recursion},
                                           Combo{Sharing::MiddleCycle, RouterKind::Expert, KvMode::Recursion},
                                           Combo{Sharing::MiddleCycle, RouterKind::Expert, KvMode::Share},
                                           Combo{Sharing::MiddleCycle, RouterKind::Token, KvMode::Recursion},
                                           Combo{Sharing::MiddleCycle, RouterKind::Token, KvMode::Share},
                                           Combo{Sharing::MiddleSequence, RouterKind::None, KvMode::Recursion}),
                         name);

}  // namespace
