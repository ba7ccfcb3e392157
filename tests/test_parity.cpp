// Parity with the PyTorch reference (tests/reference/mor_ref.py, float64):
// same config, same weights, same tokens -> the loss within 1e-5 relative and
// every parameter gradient within 1e-4 relative (per tensor, in the L2 norm),
// and the same routing decisions.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <string>

#include "io/ckpt/tensor_file.h"
#include "launcher/params_io.h"
#include "kernels/cpu/cpu_backend.h"
#include "model/model.h"
#include "model/rng.h"

using namespace mor;

namespace {

struct Case {
  std::string name;
  Sharing sharing;
  int n_rec, n_layers;
  RouterKind router;
  KvMode kv;
};

void write_ini(const ModelConfig& c, const std::string& path) { std::ofstream(path) << c.to_ini(); }

double rel_l2(const float* a, const std::vector<float>& ref, int64_t n) {
  double num = 0, den = 0;
  for (int64_t i = 0; i < n; ++i) {
    num += ((double)a[i] - ref[i]) * ((double)a[i] - ref[i]);
    den += (double)ref[i] * ref[i];
  }
  return std::sqrt(num) / std::max(std::sqrt(den), 1e-30);
}

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

class Parity : public ::testing::TestWithParam<Case> {};

TEST_P(Parity, LossGradientsAndRoutingMatchPyTorch) {
  const Case& k = GetParam();
  const ModelConfig c{.vocab_size = 61,
                      .d_model = 32,
                      .n_heads = 4,
                      .n_kv_heads = 2,
                      .d_ff = 48,
                      .n_layers = k.n_layers,
                      .seq_len = 16,
                      .init_std = 0.1f,
                      .sharing = k.sharing,
                      .n_recursions = k.n_rec,
                      .router = k.router,
                      .kv_mode = k.kv,
                      .ec_z_coeff = 1e-3f};  // exercise every loss term
  Model m(c, kern::cpu_backend());
  m.init(99);
  const int n_seq = 3;
  io::NamedTensor tok{"tokens", {n_seq, c.seq_len + 1}, true, {}, {}};
  Rng rng(5, 1);
  for (int i = 0; i < n_seq * (c.seq_len + 1); ++i) tok.i.push_back((int32_t)(rng.next() % c.vocab_size));

  const std::string dir = ::testing::TempDir() + "/parity_" + k.name;
  ASSERT_EQ(std::system(("mkdir -p '" + dir + "'").c_str()), 0);
  write_ini(c, dir + "/config.ini");
  auto tensors = export_params(m, m.params);
  tensors.push_back(tok);
  io::write_mort(dir + "/params.mort", tensors);
  const std::string cmd = std::string("/usr/bin/python3 ") + MOR_SOURCE_DIR + "/tests/reference/mor_ref.py --config '" +
                          dir + "/config.ini' --params '" + dir + "/params.mort' --out '" + dir + "/ref.mort' > '" +
                          dir + "/ref.log' 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << "reference failed, see " << dir << "/ref.log";
  const auto ref = io::read_mort(dir + "/ref.mort");

  m.zero_grads();
  const LossParts l = m.step(tok.i.data(), n_seq, n_seq, true);
  auto scalar = [&](const std::string& n) {
    const io::NamedTensor* t = io::find_tensor(ref, n);
    EXPECT_NE(t, nullptr) << n;
    return t ? (double)t->f[0] : 0.0;
  };
  const double ref_loss = scalar("loss");
  EXPECT_NEAR(l.total(), ref_loss, 1e-5 * std::fabs(ref_loss));
  EXPECT_NEAR(l.ce, scalar("loss.ce"), 1e-5 * std::fabs(scalar("loss.ce")));
  if (c.router == RouterKind::Expert) {
    EXPECT_NEAR(l.term("aux"), scalar("loss.aux"), 1e-5 * std::fabs(scalar("loss.aux")));
    EXPECT_NEAR(l.term("ec_z"), scalar("loss.ec_z"), 1e-5 * std::fabs(scalar("loss.ec_z")) + 1e-12);
    const auto sel = m.last_selected();
    for (int r = 0; r < c.n_recursions; ++r) {
      const io::NamedTensor* t = io::find_tensor(ref, "selected." + std::to_string(r));
      ASSERT_NE(t, nullptr);
      EXPECT_EQ(std::vector<int>(t->i.begin(), t->i.end()), sel[r]) << "recursion " << r;
    }
  }
  if (c.router == RouterKind::Token) {
    EXPECT_NEAR(l.term("bal"), scalar("loss.bal"), 1e-5 * std::fabs(scalar("loss.bal")));
    EXPECT_NEAR(l.term("z"), scalar("loss.z"), 1e-5 * std::fabs(scalar("loss.z")));
    const io::NamedTensor* t = io::find_tensor(ref, "depth");
    ASSERT_NE(t, nullptr);
    EXPECT_EQ(std::vector<int>(t->i.begin(), t->i.end()), m.last_depths());
  }
  for (const TensorInfo& ti : m.layout.tensors) {
    const io::NamedTensor* g = io::find_tensor(ref, "grad." + ti.name);
    ASSERT_NE(g, nullptr) << ti.name;
    ASSERT_EQ(g->numel(), ti.numel()) << ti.name;
    EXPECT_LE(rel_l2(m.grads.data() + ti.offset, g->f, ti.numel()), 1e-4) << "gradient of " << ti.name;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Models, Parity,
    ::testing::Values(Case{"vanilla", Sharing::MiddleCycle, 1, 5, RouterKind::None, KvMode::Recursion},
                      Case{"recursive_mc3", Sharing::MiddleCycle, 3, 8, RouterKind::None, KvMode::Recursion},
                      Case{"recursive_seq3", Sharing::MiddleSequence, 3, 8, RouterKind::None, KvMode::Recursion},
                      Case{"expert_mc3", Sharing::MiddleCycle, 3, 8, RouterKind::Expert, KvMode::Recursion},
                      Case{"expert_mc3_kvshare", Sharing::MiddleCycle, 3, 8, RouterKind::Expert, KvMode::Share},
                      Case{"token_mc3", Sharing::MiddleCycle, 3, 8, RouterKind::Token, KvMode::Recursion},
                      Case{"token_mc3_kvshare", Sharing::MiddleCycle, 3, 8, RouterKind::Token, KvMode::Share},
                      Case{"expert_cycle2", Sharing::Cycle, 2, 4, RouterKind::Expert, KvMode::Recursion}),
    [](const auto& info) { return info.param.name; });

}  // namespace
