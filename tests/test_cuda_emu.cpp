// The fused attention kernels' own source (kernels/cuda/attention_flash.cu) run on the CPU under
// an emulation of CUDA's thread model (tests/cuda_emu/cuda_runtime.h: threads, block barriers,
// warp shuffles, shared memory filled with NaN, launch limits), against the CPU backend. This
// checks what can go wrong in the source without a GPU: indexing, tiles and their padding, the
// causal masks and tile skipping, the online softmax, the backward passes, the launch shapes and
// shared-memory sizes, and that every output element is written (outputs start as NaN). It runs
// no GPU: it says nothing about the hardware's memory model, timing or compiler; the gpu-labelled
// conformance suite (gpu_conformance) is the test on a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/host_helpers.h"
#include "kernels/cuda/kernels.h"  // with tests/cuda_emu first on the include path: the emulated runtime

namespace mor::kern::cuda::emu {  // tests/cuda_emu/emulate_cu.py's rewrite of attention_flash.cu
void attention_forward_flash(cudaStream_t s, float* o, float* lse, const float* q, const float* k, const float* v,
                             const int* qpos, const int* kpos, const AttnShape& sh);
void attention_backward_flash(cudaStream_t s, Workspace& ws, float* dq, float* dk, float* dv, const float* dout,
                              const float* o, const float* lse, const float* q, const float* k, const float* v,
                              const int* qpos, const int* kpos, const AttnShape& sh);
}  // namespace mor::kern::cuda::emu

namespace {

using mor::kern::AttnShape;
using V = std::vector<float>;
namespace emu = mor::kern::cuda::emu;

struct HostWorkspace final : mor::kern::cuda::Workspace {
  std::vector<float> buf;
  void* get(size_t bytes) override {
    if (buf.size() * 4 < bytes) buf.assign((bytes + 3) / 4, std::numeric_limits<float>::quiet_NaN());
    return buf.data();
  }
};

V rand_vec(size_t n, unsigned seed) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(0.f, 1.f);
  V v(n);
  for (auto& x : v) x = d(g);
  return v;
}

struct Case {
  std::string name;
  std::vector<int32_t> qp, kp;
  int H, Hkv;
};
// As in the conformance suite, smaller (the emulation runs 256 threads per block): several query
// and key tiles with partial last ones, GQA, gapped positions, queries that see no key.
std::vector<Case> cases() {
  std::mt19937 g(3);
  auto subset = [&](int from, int to, double keep) {
    std::bernoulli_distribution b(keep);
    std::vector<int32_t> v;
    for (int p = from; p < to; ++p)
      if (b(g)) v.push_back(p);
    return v;
  };
  std::vector<int32_t> all(150);
  for (int p = 0; p < 150; ++p) all[p] = p;
  const std::vector<int32_t> sel = subset(0, 200, 0.4);
  return {{"kv-share gqa2", subset(0, 150, 0.5), all, 2, 1},
          {"recursion gqa3", sel, sel, 3, 1},
          {"late keys", subset(0, 150, 0.6), subset(20, 150, 0.5), 1, 1},
          {"one query", {5}, {0, 1, 2, 3, 4, 5, 6, 7}, 2, 2}};
}

// |got - want| <= 1e-4 |want| + 1e-5 max|want| (the conformance suite's bound); infinities equal.
void expect_close(const V& want, const V& got, const std::string& what) {
  ASSERT_EQ(want.size(), got.size());
  double mx = 0;
  for (float w : want)
    if (std::isfinite(w)) mx = std::max(mx, (double)std::fabs(w));
  for (size_t i = 0; i < want.size(); ++i) {
    if (std::isinf(want[i])) {
      ASSERT_EQ(got[i], want[i]) << what << "[" << i << "]";
      continue;
    }
    ASSERT_LE(std::fabs((double)got[i] - want[i]), 1e-4 * std::fabs(want[i]) + 1e-5 * mx)
        << what << "[" << i << "] = " << got[i] << ", want " << want[i];
  }
}

TEST(CudaEmulation, FlashAttentionKernelsMatchTheCpuBackend) {
  std::unique_ptr<mor::kern::Backend> cpu = mor::kern::make_cpu_backend();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (int hd : {64, 128})
    for (const Case& c : cases()) {
      const AttnShape s{(int)c.qp.size(), (int)c.kp.size(), c.H, c.Hkv, hd};
      const size_t nqe = (size_t)s.nq * c.H * hd, nke = (size_t)s.nk * c.Hkv * hd, nl = (size_t)c.H * s.nq;
      const V Q = rand_vec(nqe, 1 + hd), K = rand_vec(nke, 2 + hd), Vv = rand_vec(nke, 3 + hd), G = rand_vec(nqe, 4),
              DK0 = rand_vec(nke, 5), DV0 = rand_vec(nke, 6);
      // The CPU backend (host memory: its pointers are these vectors').
      V o(nqe), lse(nl), dq(nqe), dk = DK0, dv = DV0;
      cpu->attention_forward(o.data(), lse.data(), Q.data(), K.data(), Vv.data(), c.qp.data(), c.kp.data(), s);
      cpu->attention_backward(dq.data(), dk.data(), dv.data(), G.data(), o.data(), lse.data(), Q.data(), K.data(),
                              Vv.data(), c.qp.data(), c.kp.data(), s);
      // The emulated kernels; outputs that must be written start as NaN.
      auto run = [&] {
        V eo(nqe, nan), el(nl, nan), edq(nqe, nan), edk = DK0, edv = DV0;
        HostWorkspace ws;
        emu::attention_forward_flash(nullptr, eo.data(), el.data(), Q.data(), K.data(), Vv.data(), c.qp.data(),
                                     c.kp.data(), s);
        emu::attention_backward_flash(nullptr, ws, edq.data(), edk.data(), edv.data(), G.data(), eo.data(), el.data(),
                                      Q.data(), K.data(), Vv.data(), c.qp.data(), c.kp.data(), s);
        return std::vector<V>{eo, el, edq, edk, edv};
      };
      const int64_t blocks0 = cuda_emu::g_blocks;
      const std::vector<V> got = run();
      const std::string what = "hd=" + std::to_string(hd) + " " + c.name + " (nq " + std::to_string(s.nq) + ", nk " +
                               std::to_string(s.nk) + ")";
      const V* want[] = {&o, &lse, &dq, &dk, &dv};
      const char* names[] = {" o", " lse", " dq", " dk", " dv"};
      for (int t = 0; t < 5; ++t) expect_close(*want[t], got[t], what + names[t]);
      // Forward, dq: query tiles x heads; dk/dv: key tiles x kv heads; delta: 8 rows a block.
      using namespace mor::kern::cuda;
      const int64_t want_blocks = ceil_div(s.nq, flash_tile(FlashPass::Forward, hd).bq) * c.H +
                                  ceil_div(s.nq, flash_tile(FlashPass::Dq, hd).bq) * c.H +
                                  ceil_div(s.nk, flash_tile(FlashPass::DkDv, hd).bk) * c.Hkv +
                                  ceil_div((int64_t)s.nq * c.H, kFlashThreads / 32);
      EXPECT_EQ(cuda_emu::g_blocks - blocks0, want_blocks) << what;
      const std::vector<V> again = run();
      for (int t = 0; t < 5; ++t)
        EXPECT_EQ(std::memcmp(got[t].data(), again[t].data(), got[t].size() * 4), 0) << what << names[t];
    }
}

TEST(CudaEmulation, FlashAttentionEmptySetsLaunchNothingOrWriteZeros) {
  const int hd = 64;
  const V Q = rand_vec(3 * 2 * hd, 9);
  const std::vector<int32_t> qp = {0, 4, 9};
  V o(Q.size(), 1.f), lse(2 * 3, 1.f), dq(Q.size(), 1.f);
  HostWorkspace ws;
  const int64_t launches = cuda_emu::g_launches;
  // No keys: zero output, lse -inf, zero dq; no dk/dv launch.
  const AttnShape s{3, 0, 2, 1, hd};
  emu::attention_forward_flash(nullptr, o.data(), lse.data(), Q.data(), nullptr, nullptr, qp.data(), nullptr, s);
  emu::attention_backward_flash(nullptr, ws, dq.data(), nullptr, nullptr, Q.data(), o.data(), lse.data(), Q.data(),
                                nullptr, nullptr, qp.data(), nullptr, s);
  EXPECT_EQ(cuda_emu::g_launches - launches, 3);  // forward, delta, dq
  for (float x : o) EXPECT_EQ(x, 0.f);
  for (float x : lse) EXPECT_EQ(x, -std::numeric_limits<float>::infinity());
  for (float x : dq) EXPECT_EQ(x, 0.f);
  // No queries: nothing at all.
  const AttnShape e{0, 3, 2, 1, hd};
  emu::attention_forward_flash(nullptr, nullptr, nullptr, nullptr, Q.data(), Q.data(), nullptr, qp.data(), e);
  emu::attention_backward_flash(nullptr, ws, nullptr, o.data(), o.data(), nullptr, nullptr, nullptr, nullptr, Q.data(),
                                Q.data(), nullptr, qp.data(), e);
  EXPECT_EQ(cuda_emu::g_launches - launches, 3);
  EXPECT_THROW(emu::attention_forward_flash(nullptr, o.data(), lse.data(), Q.data(), Q.data(), Q.data(), qp.data(),
                                            qp.data(), AttnShape{3, 3, 2, 1, 96}),
               std::invalid_argument);
}

}  // namespace
