// RouterStats, the numbers behind `mor-dist eval --router-stats` (docs/MODEL.md "Router
// statistics"): the per-position counts of the last recursion's selections that the dead-token
// ratio is computed from, accumulated over micro-batches; and the collapsed router the ratio is
// meant to expose (all scores equal: every window selects the same positions).
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <vector>

#include "kernels/cpu/cpu_backend.h"
#include "model/model.h"
#include "tests/model_combos.h"

using namespace mor;

namespace {

ModelConfig expert_config() {
  return combos::tiny_config(
      {Sharing::MiddleCycle, RouterKind::Expert, KvMode::Recursion},
      {.vocab_size = 61, .d_model = 32, .n_heads = 4, .n_kv_heads = 2, .d_ff = 48, .seq_len = 16, .init_std = 0.2f});
}

std::vector<int32_t> random_windows(int n_seq, const ModelConfig& cfg, std::mt19937& g) {
  std::vector<int32_t> tok((size_t)n_seq * (cfg.seq_len + 1));
  for (auto& t : tok) t = (int32_t)(g() % cfg.vocab_size);
  return tok;
}

TEST(RouterStats, LastRecursionSelectionsAreCountedPerPosition) {
  const ModelConfig cfg = expert_config();
  Model m(cfg, kern::cpu_backend());
  m.init(3);
  m.stats.reset(cfg.n_recursions + 1);
  std::vector<int64_t> want(cfg.seq_len, 0);
  std::mt19937 g(7);
  const int n_seq = 3;
  for (int mb = 0; mb < 4; ++mb) {
    const std::vector<int32_t> tok = random_windows(n_seq, cfg, g);
    m.step(tok.data(), n_seq, n_seq, false);
    const std::vector<int> last = m.last_selected().back();
    ASSERT_EQ((int)last.size(), n_seq * cfg.expert_k(cfg.n_recursions - 1));
    for (int p : last) ++want.at(p);
  }
  EXPECT_EQ(m.stats.last_selected_at_pos, want);
  // Random tokens and a random router: the selections move between windows.
  EXPECT_GT(std::count_if(want.begin(), want.end(), [](int64_t n) { return n > 0; }),
            cfg.expert_k(cfg.n_recursions - 1));
  m.stats.reset(cfg.n_recursions + 1);
  EXPECT_TRUE(m.stats.last_selected_at_pos.empty());
}

TEST(RouterStats, CollapsedRouterLeavesAllButTheLastCapacityDead) {
  const ModelConfig cfg = expert_config();
  Model m(cfg, kern::cpu_backend());
  m.init(3);
  // Zero router weights: every score ties, the top-k keeps the earliest candidates, so every
  // window selects positions 0..k-1 at the last recursion and the rest are never selected.
  std::vector<float> p = m.params.to_host_vector();
  std::fill_n(p.begin() + m.layout.routers, (size_t)cfg.n_recursions * cfg.d_model, 0.f);
  m.params.from_host(p);
  m.stats.reset(cfg.n_recursions + 1);
  std::mt19937 g(9);
  for (int mb = 0; mb < 3; ++mb) {
    const std::vector<int32_t> tok = random_windows(2, cfg, g);
    m.step(tok.data(), 2, 2, false);
  }
  const std::vector<int64_t>& at = m.stats.last_selected_at_pos;
  const int k = cfg.expert_k(cfg.n_recursions - 1);
  ASSERT_EQ((int)at.size(), cfg.seq_len);
  for (int t = 0; t < cfg.seq_len; ++t) EXPECT_EQ(at[t], t < k ? 6 : 0) << "position " << t;
}

}  // namespace
