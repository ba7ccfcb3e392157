// Checkpoint I/O through a backend whose memory the host cannot read in place (a GPU's): the save
// and resume path of launcher/train.cpp (dist::HostStagedState around dist::whole_tensors) and
// eval's parameter load (load_checkpoint_params into a Buffer), run on the CPU with a test backend
// whose buffers hold every byte XOR-scrambled, so that any read or write that skips
// copy_to_host / copy_from_host sees or leaves garbage.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <random>
#include <stdexcept>

#include "dist/communicator.h"
#include "dist/host_staging.h"
#include "dist/sharded_params.h"
#include "io/ckpt/checkpoint.h"
#include "kernels/cpu/cpu_backend.h"
#include "launcher/params_io.h"
#include "model/model.h"
#include "model/optimizer.h"

namespace fs = std::filesystem;
using namespace mor;

namespace {

// Host memory, stored scrambled; memory operations only (the model's kernels are not for it).
class ScrambledBackend final : public kern::Backend {
 public:
  static constexpr unsigned char kKey = 0xA5;
  const char* name() const override { return "scrambled"; }
  void* allocate(size_t bytes) override { return cpu_.allocate(bytes); }
  void deallocate(void* p, size_t bytes) override { cpu_.deallocate(p, bytes); }
  void copy_to_host(void* host, const void* src, size_t n) override { xor_copy(host, src, n); }
  void copy_from_host(void* dst, const void* host, size_t n) override { xor_copy(dst, host, n); }
  void copy(void* dst, const void* src, size_t n) override { std::memmove(dst, src, n); }
  void zero(void* p, size_t bytes) override { std::memset(p, kKey, bytes); }
  void discard(void*, size_t) override {}
  bool host_addressable() const override { return false; }
  kern::Context& context() override { return ctx_; }
  void synchronize() override {}

  // clang-format off
#define MOR_NO_COMPUTE override { throw std::logic_error("ScrambledBackend: memory operations only"); }
  void gemm(bool, bool, int, int, int, float, const float*, int, const float*, int, float, float*, int) MOR_NO_COMPUTE
  void linear_forward(float*, const float*, const float*, int, int, int) MOR_NO_COMPUTE
  void linear_forward_pair(float*, const float*, int, float*, const float*, int, const float*, int, int) MOR_NO_COMPUTE
  void linear_backward(float*, float*, const float*, const float*, const float*, int, int, int, bool) MOR_NO_COMPUTE
  void linear_forward_bf16(float*, const kern::bf16*, const kern::bf16*, int, int, int) MOR_NO_COMPUTE
  void linear_forward_pair_bf16(float*, const kern::bf16*, int, float*, const kern::bf16*, int, const kern::bf16*, int,
                                int) MOR_NO_COMPUTE
  void linear_backward_bf16(float*, float*, const kern::bf16*, const kern::bf16*, const kern::bf16*, int, int, int,
                            bool) MOR_NO_COMPUTE
  void cast_to_bf16(kern::bf16*, const float*, int64_t) MOR_NO_COMPUTE
  void cast_to_f32(float*, const kern::bf16*, int64_t) MOR_NO_COMPUTE
  bool fast_bf16() const override { return false; }
  void rmsnorm_forward(float*, float*, const float*, const float*, int, int, float) MOR_NO_COMPUTE
  void rmsnorm_forward_bf16(kern::bf16*, float*, const float*, const float*, int, int, float) MOR_NO_COMPUTE
  void rmsnorm_backward(float*, const float*, float*, const float*, const float*, const float*, const float*, int,
                        int) MOR_NO_COMPUTE
  void rope_forward(float*, const int*, int, int, const kern::RopeTable&) MOR_NO_COMPUTE
  void rope_backward(float*, const int*, int, int, const kern::RopeTable&) MOR_NO_COMPUTE
  void swiglu_forward(float*, const float*, const float*, int64_t) MOR_NO_COMPUTE
  void swiglu_forward_bf16(kern::bf16*, const float*, const float*, int64_t) MOR_NO_COMPUTE
  void swiglu_backward(float*, float*, const float*, const float*, const float*, int64_t) MOR_NO_COMPUTE
  void attention_forward(float*, float*, const float*, const float*, const float*, const int*, const int*,
                         const kern::AttnShape&) MOR_NO_COMPUTE
  void attention_backward(float*, float*, float*, const float*, const float*, const float*, const float*, const float*,
                          const float*, const int*, const int*, const kern::AttnShape&) MOR_NO_COMPUTE
  double softmax_xent(float*, const int32_t*, int, int, float) MOR_NO_COMPUTE
  void embedding_forward(float*, const float*, const int32_t*, int, int) MOR_NO_COMPUTE
  void embedding_backward(float*, const float*, const int32_t*, int, int) MOR_NO_COMPUTE
  void copy_rows(float*, const int32_t*, const float*, const int32_t*, const float*, int, int, bool) MOR_NO_COMPUTE
  void row_dots(float*, const float*, const int32_t*, const float*, const int32_t*, int, int) MOR_NO_COMPUTE
  void adamw_update(float*, const float*, float*, float*, int64_t, const kern::AdamWParams&) MOR_NO_COMPUTE
  double sum_squares(const float*, int64_t) MOR_NO_COMPUTE
  void scale_inplace(float*, float, int64_t) MOR_NO_COMPUTE
  void add_inplace(float*, const float*, int64_t) MOR_NO_COMPUTE
  int64_t first_non_finite(const float*, int64_t) MOR_NO_COMPUTE
#undef MOR_NO_COMPUTE
      // clang-format on

      private : static void xor_copy(void* dst, const void* src, size_t n) {
    auto* d = static_cast<unsigned char*>(dst);
    const auto* s = static_cast<const unsigned char*>(src);
    for (size_t i = 0; i < n; ++i) d[i] = s[i] ^ kKey;
  }
  kern::Backend& cpu_ = kern::cpu_backend();
  kern::Context ctx_;
};

struct Tmp {
  std::string dir;
  Tmp() {
    char t[] = "/tmp/mor_staging_test_XXXXXX";
    dir = mkdtemp(t);
  }
  ~Tmp() { fs::remove_all(dir); }
};

ModelConfig tiny() {
  ModelConfig c;
  c.vocab_size = 37;
  c.d_model = 12;
  c.n_heads = 2;
  c.n_kv_heads = 1;
  c.d_ff = 19;
  c.n_layers = 5;
  c.seq_len = 8;
  c.n_recursions = 3;
  c.router = RouterKind::Expert;
  return c;
}

std::vector<float> random_vec(size_t n, unsigned seed) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(0.f, 1.f);
  std::vector<float> v(n);
  for (float& x : v) x = d(g);
  return v;
}

struct Trainee {  // a model and its optimizer on one backend, as train.cpp holds them
  Model m;
  AdamW opt;
  Trainee(kern::Backend& be, uint64_t seed)
      : m(tiny(), be),
        opt(OptimConfig{}, be, m.layout.total, decay_mask(m.layout, OptimConfig{}.no_decay, 0, m.layout.total)) {
    m.init(seed);
    opt.m.from_host(random_vec((size_t)m.layout.total, (unsigned)seed + 1));
    opt.v.from_host(random_vec((size_t)m.layout.total, (unsigned)seed + 2));
  }
};

ckpt::TrainState state_of(const Model& m) {
  ckpt::TrainState st;
  st.step = 3;
  st.adam_steps = 3;
  st.seed = 1;
  st.model_config = m.cfg.to_ini();
  st.run_config = "test";
  return st;
}

bool bitwise_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

TEST(HostStaging, CheckpointSaveAndResumeThroughANonHostAddressableBackendAreBitwise) {
  ScrambledBackend be;
  Tmp tmp;
  Trainee a(be, 3);
  auto comm = dist::make_single_process_comm();
  dist::HostStagedState out(be, dist::whole_tensors(a.m, a.opt));
  ASSERT_TRUE(out.staged());
  out.pull();
  const std::string dir = ckpt::save(tmp.dir, state_of(a.m), out.view(), *comm, 2, false);

  Trainee b(be, 99);  // other contents, overwritten by the resume
  ASSERT_FALSE(bitwise_equal(a.m.params.to_host_vector(), b.m.params.to_host_vector()));
  dist::HostStagedState in(be, dist::whole_tensors(b.m, b.opt));
  const ckpt::Index idx = ckpt::read_index(dir);
  ASSERT_TRUE(ckpt::load_own_file(idx, in.view(), 0, 1, false));
  EXPECT_TRUE(ckpt::first_non_finite(in.view()).empty());
  in.push();
  EXPECT_TRUE(bitwise_equal(a.m.params.to_host_vector(), b.m.params.to_host_vector()));
  EXPECT_TRUE(bitwise_equal(a.opt.m.to_host_vector(), b.opt.m.to_host_vector()));
  EXPECT_TRUE(bitwise_equal(a.opt.v.to_host_vector(), b.opt.v.to_host_vector()));

  // The file holds the values, not the backend's bytes: the same checkpoint read straight into
  // host memory (as on the CPU) gives them, and so does eval's load into a scrambled arena.
  std::vector<float> host((size_t)a.m.layout.total);
  load_checkpoint_params(dir, idx, a.m.layout, host.data());
  EXPECT_TRUE(bitwise_equal(host, a.m.params.to_host_vector()));
  Trainee c(be, 7);
  load_checkpoint_params(dir, idx, c.m.layout, c.m.params);
  EXPECT_TRUE(bitwise_equal(c.m.params.to_host_vector(), a.m.params.to_host_vector()));
}

TEST(HostStaging, OnTheCpuTheViewIsTheStateItself) {
  Model m(tiny(), kern::cpu_backend());
  AdamW opt(OptimConfig{}, kern::cpu_backend(), m.layout.total,
            decay_mask(m.layout, OptimConfig{}.no_decay, 0, m.layout.total));
  const dist::LocalState st = dist::whole_tensors(m, opt);
  dist::HostStagedState s(kern::cpu_backend(), st);
  EXPECT_FALSE(s.staged());
  ASSERT_EQ(s.view().tensors.size(), st.tensors.size());
  EXPECT_EQ(s.view().tensors[0].data, st.tensors[0].data);  // no copies
}

}  // namespace
