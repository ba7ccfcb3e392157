// Mixed precision (Model::bf16, --train.precision bf16) on the whole model: the loss and every
// gradient of tiny models against the fp32 model (bf16 operands change results by about 2^-8
// relative per product: tolerances below), bitwise repeatability, bitwise equality with
// activation recomputation, and that the bf16 copies of the weights follow parameter updates.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/cpu_backend.h"
#include "model/model.h"
#include "model/optimizer.h"
#include "tests/model_combos.h"

using namespace mor;

namespace {

using combos::Combo;

ModelConfig config(const Combo& c) {
  return combos::tiny_config(
      c, {.vocab_size = 61, .d_model = 64, .n_heads = 4, .n_kv_heads = 2, .d_ff = 96, .seq_len = 16, .init_std = 0.1f});
}

std::string name(const ::testing::TestParamInfo<Combo>& i) { return combos::combo_name(i.param); }

std::vector<int32_t> tokens(const ModelConfig& c, int n_seq, unsigned seed) {
  std::mt19937 g(seed);
  std::vector<int32_t> tok((size_t)n_seq * (c.seq_len + 1));
  for (auto& t : tok) t = (int32_t)(g() % c.vocab_size);
  return tok;
}

double norm(const std::vector<float>& v, size_t a, size_t b) {
  double s = 0;
  for (size_t i = a; i < b; ++i) s += (double)v[i] * v[i];
  return std::sqrt(s);
}

class Precision : public ::testing::TestWithParam<Combo> {};

// bf16 against fp32, same parameters and tokens: the cross-entropy within 1e-2 relative, each
// tensor's gradient within 5e-2 relative (L2) of fp32's, the whole gradient within 2e-2. (Measured
// on these configs: 1e-4 to 3e-4 for the loss, 0.9e-2 to 1.1e-2 for the whole gradient: every GEMM
// operand rounded to bf16 is off by up to 2^-9 relative, and the gradients pass through many GEMMs.)
// A routing decision that bf16 flips (a token whose two best depths score within bf16's rounding)
// sends that token down another path: no longer a precision effect. So the test takes the first
// token seed whose decisions agree (on the configs here, seed 11 or one of the next few).
TEST_P(Precision, Bf16LossAndGradientsMatchFp32) {
  const ModelConfig cfg = config(GetParam());
  Model f32(cfg, kern::cpu_backend()), b16(cfg, kern::cpu_backend());
  f32.init(5);
  b16.init(5);
  b16.bf16 = true;
  const int n_seq = 3;
  LossParts a, b;
  unsigned seed = 11;
  for (; seed < 31; ++seed) {
    const std::vector<int32_t> tok = tokens(cfg, n_seq, seed);
    f32.zero_grads();
    b16.zero_grads();
    a = f32.step(tok.data(), n_seq, n_seq, true);
    b = b16.step(tok.data(), n_seq, n_seq, true);
    if (f32.last_selected() == b16.last_selected() && f32.last_depths() == b16.last_depths()) break;
  }
  ASSERT_LT(seed, 31u) << "bf16 flipped a routing decision for every token seed tried";
  EXPECT_NEAR(b.ce, a.ce, 1e-2 * a.ce);
  const std::vector<float> ga = f32.grads.to_host_vector(), gb = b16.grads.to_host_vector();
  std::vector<float> diff(ga.size());
  for (size_t i = 0; i < ga.size(); ++i) diff[i] = gb[i] - ga[i];
  for (const TensorInfo& t : f32.layout.tensors) {
    const size_t s = (size_t)t.offset, e = s + (size_t)t.numel();
    const double ref = norm(ga, s, e);
    if (ref == 0) continue;  // e.g. a router's weights with no selected token
    EXPECT_LT(norm(diff, s, e) / ref, 5e-2) << t.name;
  }
  const double rel = norm(diff, 0, diff.size()) / norm(ga, 0, ga.size());
  EXPECT_LT(rel, 2e-2);
  std::printf("token seed %u: |ce_bf16 - ce_fp32| / ce_fp32 = %.2e, |g_bf16 - g_fp32| / |g_fp32| = %.2e\n", seed,
              std::fabs(b.ce - a.ce) / a.ce, rel);
}

// Same seed and inputs: bitwise the same losses and gradients; with recomputation too.
TEST_P(Precision, Bf16IsRepeatableAndRecomputeIsBitIdentical) {
  const ModelConfig cfg = config(GetParam());
  Model a(cfg, kern::cpu_backend()), b(cfg, kern::cpu_backend());
  a.init(5);
  b.init(5);
  a.bf16 = b.bf16 = true;
  b.recompute = true;
  const std::vector<int32_t> tok = tokens(cfg, 2, 12);
  for (int step = 0; step < 2; ++step) {
    a.zero_grads();
    b.zero_grads();
    const LossParts la = a.step(tok.data(), 2, 2, true), lb = b.step(tok.data(), 2, 2, true);
    EXPECT_EQ(la.ce, lb.ce);
    const std::vector<float> ga = a.grads.to_host_vector(), gb = b.grads.to_host_vector();
    EXPECT_EQ(std::memcmp(ga.data(), gb.data(), ga.size() * sizeof(float)), 0) << "step " << step;
  }
}

// The bf16 weight copies are rounded again after the parameters change between steps: a model
// whose parameters were changed in place gives bitwise the results of a fresh model built with them.
TEST_P(Precision, Bf16CopiesFollowParameterUpdates) {
  const ModelConfig cfg = config(GetParam());
  Model used(cfg, kern::cpu_backend()), fresh(cfg, kern::cpu_backend());
  used.init(5);
  used.bf16 = fresh.bf16 = true;
  const std::vector<int32_t> tok = tokens(cfg, 2, 13);
  used.step(tok.data(), 2, 2, false);  // rounds every matrix once
  std::vector<float> p = used.params.to_host_vector();
  for (auto& x : p) x *= 1.5f;  // what an optimizer step does: new values in place
  used.params.from_host(p);
  fresh.params.from_host(p);
  used.zero_grads();
  fresh.zero_grads();
  const LossParts lu = used.step(tok.data(), 2, 2, true), lf = fresh.step(tok.data(), 2, 2, true);
  EXPECT_EQ(lu.ce, lf.ce);
  const std::vector<float> gu = used.grads.to_host_vector(), gf = fresh.grads.to_host_vector();
  EXPECT_EQ(std::memcmp(gu.data(), gf.data(), gu.size() * sizeof(float)), 0);
}

// AdamW writing the bf16 copy as it updates (one process, what `train` does) gives bitwise the
// training of rounding the parameters again at the next forward: losses, gradients and parameters
// over three steps. And a copy so written is used once only: parameters changed afterwards, by
// anything else, are rounded again.
TEST_P(Precision, Bf16CopyWrittenByTheOptimizerEqualsRoundingAgain) {
  const ModelConfig cfg = config(GetParam());
  Model fused(cfg, kern::cpu_backend()), plain(cfg, kern::cpu_backend());
  fused.init(5);
  plain.init(5);
  fused.bf16 = plain.bf16 = true;
  OptimConfig oc;
  oc.weight_decay = 0.1;
  const int64_t n = fused.layout.total;
  AdamW fo(oc, kern::cpu_backend(), n, std::vector<uint8_t>(n, 1)),
      po(oc, kern::cpu_backend(), n, std::vector<uint8_t>(n, 1));
  for (int step = 0; step < 3; ++step) {
    const std::vector<int32_t> tok = tokens(cfg, 2, 20 + step);
    fused.zero_grads();
    plain.zero_grads();
    const LossParts lf = fused.step(tok.data(), 2, 2, true), lp = plain.step(tok.data(), 2, 2, true);
    EXPECT_EQ(lf.ce, lp.ce) << "step " << step;
    kern::bf16* p16 = fused.bf16_copy_for_update();
    ASSERT_NE(p16, nullptr);
    fo.update(fused.params.data(), fused.grads.data(), 1e-2, 1.f, p16);
    fused.bf16_copy_written();
    po.update(plain.params.data(), plain.grads.data(), 1e-2, 1.f);
  }
  const std::vector<float> pf = fused.params.to_host_vector(), pp = plain.params.to_host_vector();
  EXPECT_EQ(std::memcmp(pf.data(), pp.data(), pf.size() * sizeof(float)), 0);
  // The written copy is consumed by the next forward; change the parameters after that and the
  // following forward must round them again (as a fresh model does).
  const std::vector<int32_t> tok = tokens(cfg, 2, 30);
  fused.step(tok.data(), 2, 2, false);
  std::vector<float> p = fused.params.to_host_vector();
  for (auto& x : p) x *= 0.75f;
  fused.params.from_host(p);
  Model fresh(cfg, kern::cpu_backend());
  fresh.bf16 = true;
  fresh.params.from_host(p);
  EXPECT_EQ(fused.step(tok.data(), 2, 2, false).ce, fresh.step(tok.data(), 2, 2, false).ce);
  // fp32 models have no copy to write.
  Model f32(cfg, kern::cpu_backend());
  EXPECT_EQ(f32.bf16_copy_for_update(), nullptr);
}

INSTANTIATE_TEST_SUITE_P(Variants, Precision,
                         ::testing::Values(Combo{Sharing::Cycle, RouterKind::None, KvMode::Recursion},
                                           Combo{Sharing::MiddleCycle, RouterKind::Expert, KvMode::Recursion},
                                           Combo{Sharing::MiddleCycle, RouterKind::Expert, KvMode::Share},
                                           Combo{Sharing::MiddleCycle, RouterKind::Token, KvMode::Recursion}),
                         name);

}  // namespace
