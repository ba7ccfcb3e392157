// The engine on a backend whose memory the host cannot touch (kern::make_guarded_cpu_backend:
// the CPU kernels on pages kept PROT_NONE between operations): a read or write of a buffer that
// bypasses the backend, as would be wrong on a GPU, faults. Steps of every router and KV mode, in
// fp32 and bf16, then AdamW updates, give bitwise the CPU backend's losses, gradients and
// parameters (the same kernels run on both).
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/guarded_backend.h"
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

std::vector<int32_t> tokens(const ModelConfig& c, int n_seq, unsigned seed) {
  std::mt19937 g(seed);
  std::vector<int32_t> tok((size_t)n_seq * (c.seq_len + 1));
  for (auto& t : tok) t = (int32_t)(g() % c.vocab_size);
  return tok;
}

bool bitwise_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// The guard itself: touching a buffer outside an operation faults; through the backend it works.
TEST(GuardedBackend, HostAccessToABufferFaultsAndTheBackendsCopiesWork) {
  std::unique_ptr<kern::Backend> be = kern::make_guarded_cpu_backend();
  kern::Buffer<float> b(*be);
  b.from_host(std::vector<float>{1.f, 2.f, 3.f});
  EXPECT_EQ(b.to_host_vector(), (std::vector<float>{1.f, 2.f, 3.f}));
  EXPECT_DEATH({ (void)*(volatile float*)b.data(); }, "");
  EXPECT_DEATH({ *(volatile float*)(b.data() + 2) = 0.f; }, "");
}

struct Case {
  Combo combo;
  bool bf16;
};
void PrintTo(const Case& c, std::ostream* os) { *os << combos::combo_name(c.combo) << (c.bf16 ? "_bf16" : "_fp32"); }

class DeviceSeam : public ::testing::TestWithParam<Case> {};

TEST_P(DeviceSeam, GuardedBackendGivesTheCpuBackendsBitsAndTheEngineNeverTouchesItsMemory) {
  const ModelConfig cfg = config(GetParam().combo);
  std::unique_ptr<kern::Backend> guarded = kern::make_guarded_cpu_backend();
  ASSERT_FALSE(guarded->host_addressable());
  Model cpu(cfg, kern::cpu_backend()), dev(cfg, *guarded);
  cpu.init(5);
  dev.init(5);
  cpu.bf16 = dev.bf16 = GetParam().bf16;
  OptimConfig oc;
  const auto mask = decay_mask(cpu.layout, oc.no_decay, 0, cpu.layout.total);
  AdamW oa(oc, kern::cpu_backend(), cpu.layout.total, mask), ob(oc, *guarded, dev.layout.total, mask);
  for (int step = 0; step < 3; ++step) {
    const std::vector<int32_t> tok = tokens(cfg, 3, 20 + step);
    cpu.zero_grads();
    dev.zero_grads();
    const LossParts a = cpu.step(tok.data(), 3, 3, true), b = dev.step(tok.data(), 3, 3, true);
    ASSERT_EQ(a.total(), b.total()) << "step " << step;
    ASSERT_TRUE(bitwise_equal(cpu.grads.to_host_vector(), dev.grads.to_host_vector())) << "step " << step;
    const float clip = 0.5f;  // the launcher's clipping scale goes through the same call
    oa.update(cpu.params.data(), cpu.grads.data(), 1e-3, clip);
    ob.update(dev.params.data(), dev.grads.data(), 1e-3, clip);
    ASSERT_TRUE(bitwise_equal(cpu.params.to_host_vector(), dev.params.to_host_vector())) << "step " << step;
  }
  // Evaluation (no backward) too.
  const std::vector<int32_t> tok = tokens(cfg, 2, 99);
  EXPECT_EQ(cpu.step(tok.data(), 2, 2, false).total(), dev.step(tok.data(), 2, 2, false).total());
}

std::vector<Case> cases() {
  std::vector<Case> v;
  for (bool bf16 : {false, true}) {
    v.push_back({{Sharing::MiddleCycle, RouterKind::Expert, KvMode::Recursion}, bf16});
    v.push_back({{Sharing::MiddleCycle, RouterKind::Token, KvMode::Share}, bf16});
    v.push_back({{Sharing::Cycle, RouterKind::None, KvMode::Recursion}, bf16});
  }
  v.push_back({{Sharing::Cycle, RouterKind::Expert, KvMode::Share}, false});
  return v;
}

INSTANTIATE_TEST_SUITE_P(Combos, DeviceSeam, ::testing::ValuesIn(cases()), [](const ::testing::TestParamInfo<Case>& i) {
  return combos::combo_name(i.param.combo) + (i.param.bf16 ? "_bf16" : "_fp32");
});

}  // namespace
