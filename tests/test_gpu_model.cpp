// The whole model on the CUDA backend against the CPU backend (label gpu; Skipped without a GPU,
// tests/gpu_test_main.cpp): one forward/backward of tiny models for each router and KV mode, and
// 20 AdamW steps of the expert and token routers, fp32 and bf16. Written and compiled without a
// GPU; the tolerances are stated up front, not yet measured:
//   fp32: the cross-entropy within 1e-5 relative, each tensor's gradient within 1e-3 relative (L2):
//         both backends compute in fp32 and differ only in summation orders;
//   bf16 on the GPU vs fp32 on the CPU: test_precision's CPU bounds (ce 1e-2, per-tensor gradient
//         5e-2, whole gradient 2e-2), the rounding of every GEMM operand being the same bits on both.
//   20 steps: each step's loss within 1e-4 (fp32) / 2e-2 (bf16) relative of the CPU's.
// A routing decision that the backends take differently (two scores within rounding) sends a token
// down another path: the tests use the first token seed whose decisions agree, as test_precision.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/cuda_backend.h"
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

std::unique_ptr<kern::Backend> gpu() {
  const char* d = std::getenv("MOR_CUDA_DEVICE");
  return kern::make_cuda_backend(d ? std::atoi(d) : 0);
}

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

// Relative L2 difference of each tensor's gradient and of the whole gradient.
void expect_grads_close(const Model& ref, const Model& got, double per_tensor, double whole) {
  const std::vector<float> ga = ref.grads.to_host_vector(), gb = got.grads.to_host_vector();
  ASSERT_EQ(ga.size(), gb.size());
  std::vector<float> diff(ga.size());
  for (size_t i = 0; i < ga.size(); ++i) diff[i] = gb[i] - ga[i];
  for (const TensorInfo& t : ref.layout.tensors) {
    const size_t s = (size_t)t.offset, e = s + (size_t)t.numel();
    const double r = norm(ga, s, e);
    if (r == 0) continue;  // e.g. a router's weights with no selected token
    EXPECT_LT(norm(diff, s, e) / r, per_tensor) << t.name;
  }
  EXPECT_LT(norm(diff, 0, diff.size()) / norm(ga, 0, ga.size()), whole);
}

class GpuModel : public ::testing::TestWithParam<Combo> {};

void one_step(const Combo& c, bool bf16) {
  const ModelConfig cfg = config(c);
  std::unique_ptr<kern::Backend> be = gpu();
  Model cpu(cfg, kern::cpu_backend()), dev(cfg, *be);
  cpu.init(5);
  dev.init(5);
  dev.bf16 = bf16;
  const int n_seq = 3;
  LossParts a, b;
  unsigned seed = 11;
  for (; seed < 31; ++seed) {
    const std::vector<int32_t> tok = tokens(cfg, n_seq, seed);
    cpu.zero_grads();
    dev.zero_grads();
    a = cpu.step(tok.data(), n_seq, n_seq, true);
    b = dev.step(tok.data(), n_seq, n_seq, true);
    if (cpu.last_selected() == dev.last_selected() && cpu.last_depths() == dev.last_depths()) break;
  }
  ASSERT_LT(seed, 31u) << "the backends took different routing decisions for every token seed tried";
  EXPECT_NEAR(b.ce, a.ce, (bf16 ? 1e-2 : 1e-5) * a.ce);
  expect_grads_close(cpu, dev, bf16 ? 5e-2 : 1e-3, bf16 ? 2e-2 : 1e-3);
  std::printf("%s %s, token seed %u: |ce_gpu - ce_cpu| / ce_cpu = %.2e\n", combos::combo_name(c).c_str(),
              bf16 ? "bf16" : "fp32", seed, std::fabs(b.ce - a.ce) / a.ce);
}

TEST_P(GpuModel, Fp32LossAndGradientsMatchTheCpu) { one_step(GetParam(), false); }
TEST_P(GpuModel, Bf16LossAndGradientsMatchTheCpuFp32) { one_step(GetParam(), true); }

INSTANTIATE_TEST_SUITE_P(Combos, GpuModel,
                         ::testing::Values(Combo{Sharing::MiddleCycle, RouterKind::Expert, KvMode::Recursion},
                                           Combo{Sharing::MiddleCycle, RouterKind::Expert, KvMode::Share},
                                           Combo{Sharing::MiddleCycle, RouterKind::Token, KvMode::Recursion},
                                           Combo{Sharing::MiddleCycle, RouterKind::Token, KvMode::Share},
                                           Combo{Sharing::Cycle, RouterKind::None, KvMode::Recursion}),
                         [](const ::testing::TestParamInfo<Combo>& i) { return combos::combo_name(i.param); });

// 20 optimizer steps (AdamW, clipping off) on both backends from the same start and batches.
void train_20(RouterKind router, bool bf16) {
  const ModelConfig cfg = config({Sharing::MiddleCycle, router, KvMode::Recursion});
  std::unique_ptr<kern::Backend> be = gpu();
  Model cpu(cfg, kern::cpu_backend()), dev(cfg, *be);
  cpu.init(7);
  dev.init(7);
  dev.bf16 = bf16;
  OptimConfig oc;
  const auto mask = decay_mask(cpu.layout, oc.no_decay, 0, cpu.layout.total);
  AdamW oa(oc, kern::cpu_backend(), cpu.layout.total, mask), ob(oc, *be, dev.layout.total, mask);
  const int n_seq = 4;
  for (int step = 0; step < 20; ++step) {
    const std::vector<int32_t> tok = tokens(cfg, n_seq, 100 + step);
    cpu.zero_grads();
    dev.zero_grads();
    const double la = cpu.step(tok.data(), n_seq, n_seq, true).total();
    const double lb = dev.step(tok.data(), n_seq, n_seq, true).total();
    EXPECT_NEAR(lb, la, (bf16 ? 2e-2 : 1e-4) * std::fabs(la)) << "step " << step + 1;
    oa.update(cpu.params.data(), cpu.grads.data(), 1e-3);
    ob.update(dev.params.data(), dev.grads.data(), 1e-3);
    if (step == 19) std::printf("step 20: loss cpu %.6f, gpu %.6f (%s)\n", la, lb, bf16 ? "bf16" : "fp32");
  }
}

TEST(GpuTraining, TwentyStepsExpertRouterFp32) { train_20(RouterKind::Expert, false); }
TEST(GpuTraining, TwentyStepsTokenRouterFp32) { train_20(RouterKind::Token, false); }
TEST(GpuTraining, TwentyStepsExpertRouterBf16) { train_20(RouterKind::Expert, true); }
TEST(GpuTraining, TwentyStepsTokenRouterBf16) { train_20(RouterKind::Token, true); }

}  // namespace
