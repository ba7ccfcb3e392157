// CpuBackend: the Backend interface on host memory, forwarding each operation to the CPU kernels.
#include "kernels/cpu/cpu_backend.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>

#include "kernels/cpu/cpu_kernels.h"

namespace mor::kern {

namespace {

class CpuBackend final : public Backend {
 public:
  const char* name() const override { return "cpu"; }

  // 64-byte aligned (one cache line, one AVX-512 vector).
  void* allocate(size_t bytes) override {
    void* p = std::aligned_alloc(64, std::max<size_t>(64, (bytes + 63) / 64 * 64));
    if (!p) throw std::bad_alloc();
    return p;
  }
  void deallocate(void* p, size_t) override { std::free(p); }
  void copy_to_host(void* host, const void* src, size_t n) override { std::memcpy(host, src, n); }
  void copy_from_host(void* dst, const void* host, size_t n) override { std::memcpy(dst, host, n); }
  void copy(void* dst, const void* src, size_t n) override { std::memmove(dst, src, n); }
  // Large buffers (540 MB of gradients for the 135M model) are zeroed on all threads: one thread
  // cannot fill the memory bus.
  void zero(void* p, size_t bytes) override {
    char* c = static_cast<char*>(p);
    const int64_t blk = 4 << 20, n = (int64_t)bytes;
#pragma omp parallel for schedule(static) if (n >= 2 * blk)
    for (int64_t b = 0; b < n; b += blk) std::memset(c + b, 0, (size_t)std::min(blk, n - b));
  }
  // Hands the whole pages inside the range back to the OS. MADV_FREE, not MADV_DONTNEED: the kernel
  // reclaims them only under memory pressure, so a unit gathered again into pages not yet reclaimed
  // costs no page faults (measured: DONTNEED made a 2-rank step fault ~37 MB back in, ~26 % of its
  // time in a VM).
  void discard(void* p, size_t bytes) override {
    static const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    const uintptr_t a = ((uintptr_t)p + page - 1) / page * page, b = ((uintptr_t)p + bytes) / page * page;
    if (b > a) madvise((void*)a, b - a, MADV_FREE);  // advice only: a failure changes nothing
  }
  bool host_addressable() const override { return true; }

  Context& context() override { return ctx_; }
  void synchronize() override {}

  void gemm(bool ta, bool tb, int M, int N, int K, float alpha, const float* A, int lda, const float* B, int ldb,
            float beta, float* C, int ldc) override {
    cpu::gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  }
  void linear_forward(float* y, const float* x, const float* W, int n, int in, int out) override {
    cpu::linear_forward(y, x, W, n, in, out);
  }
  void linear_forward_pair(float* y1, const float* W1, int out1, float* y2, const float* W2, int out2, const float* x,
                           int n, int in) override {
    cpu::linear_forward_pair(y1, W1, out1, y2, W2, out2, x, n, in);
  }
  void linear_backward(float* dx, float* dW, const float* dy, const float* x, const float* W, int n, int in, int out,
                       bool accumulate_dx) override {
    cpu::linear_backward(dx, dW, dy, x, W, n, in, out, accumulate_dx);
  }
  void linear_forward_bf16(float* y, const bf16* x, const bf16* W, int n, int in, int out) override {
    cpu::linear_forward_bf16(y, x, W, n, in, out);
  }
  void linear_forward_pair_bf16(float* y1, const bf16* W1, int out1, float* y2, const bf16* W2, int out2, const bf16* x,
                                int n, int in) override {
    cpu::linear_forward_pair_bf16(y1, W1, out1, y2, W2, out2, x, n, in);
  }
  void linear_backward_bf16(float* dx, float* dW, const bf16* dy, const bf16* x, const bf16* W, int n, int in, int out,
                            bool accumulate_dx) override {
    cpu::linear_backward_bf16(dx, dW, dy, x, W, n, in, out, accumulate_dx);
  }
  void cast_to_bf16(bf16* dst, const float* src, int64_t n) override { cpu::cast_to_bf16(dst, src, n); }
  void cast_to_f32(float* dst, const bf16* src, int64_t n) override { cpu::cast_to_f32(dst, src, n); }
  bool fast_bf16() const override {
    static const bool fast = cpu::fast_bf16();
    return fast;
  }
  void rmsnorm_forward(float* y, float* rstd, const float* x, const float* w, int n, int d, float eps) override {
    cpu::rmsnorm_forward(y, rstd, x, w, n, d, eps);
  }
  void rmsnorm_forward_bf16(bf16* y, float* rstd, const float* x, const float* w, int n, int d, float eps) override {
    cpu::rmsnorm_forward_bf16(y, rstd, x, w, n, d, eps);
  }
  void rmsnorm_backward(float* dx, const float* dres, float* dw, const float* dy, const float* x, const float* w,
                        const float* rstd, int n, int d) override {
    cpu::rmsnorm_backward(dx, dres, dw, dy, x, w, rstd, n, d);
  }
  void rope_forward(float* x, const int* pos, int n, int n_heads, const RopeTable& t) override {
    cpu::rope_forward(x, pos, n, n_heads, t);
  }
  void rope_backward(float* dx, const int* pos, int n, int n_heads, const RopeTable& t) override {
    cpu::rope_backward(dx, pos, n, n_heads, t);
  }
  void swiglu_forward(float* h, const float* g, const float* u, int64_t n) override { cpu::swiglu_forward(h, g, u, n); }
  void swiglu_forward_bf16(bf16* h, const float* g, const float* u, int64_t n) override {
    cpu::swiglu_forward_bf16(h, g, u, n);
  }
  void swiglu_backward(float* dg, float* du, const float* dh, const float* g, const float* u, int64_t n) override {
    cpu::swiglu_backward(dg, du, dh, g, u, n);
  }
  void swiglu_backward_bf16(bf16* dg16, bf16* du16, float*, float*, const float* dh, const float* g, const float* u,
                            int64_t n) override {
    cpu::swiglu_backward_bf16(dg16, du16, dh, g, u, n);
  }
  void attention_forward(float* o, float* lse, const float* q, const float* k, const float* v, const int* qpos,
                         const int* kpos, const AttnShape& s) override {
    cpu::attention_forward(o, lse, q, k, v, qpos, kpos, s);
  }
  void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* o, const float* lse,
                          const float* q, const float* k, const float* v, const int* qpos, const int* kpos,
                          const AttnShape& s) override {
    cpu::attention_backward(dq, dk, dv, dout, o, lse, q, k, v, qpos, kpos, s);
  }
  double softmax_xent(float* logits, const int32_t* targets, int n, int V, float scale) override {
    return cpu::softmax_xent(logits, targets, n, V, scale);
  }
  double softmax_xent_bf16(float* logits, bf16* dlogits16, const int32_t* targets, int n, int V, float scale) override {
    return cpu::softmax_xent_bf16(logits, dlogits16, targets, n, V, scale);
  }
  void embedding_forward(float* out, const float* table, const int32_t* ids, int n, int D) override {
    cpu::embedding_forward(out, table, ids, n, D);
  }
  void embedding_backward(float* dtable, const float* dout, const int32_t* ids, int n, int D) override {
    cpu::embedding_backward(dtable, dout, ids, n, D);
  }
  void copy_rows(float* dst, const int32_t* dst_rows, const float* src, const int32_t* src_rows, const float* scale,
                 int n, int D, bool accumulate) override {
    cpu::copy_rows(dst, dst_rows, src, src_rows, scale, n, D, accumulate);
  }
  void row_dots(float* out, const float* a, const int32_t* a_rows, const float* b, const int32_t* b_rows, int n,
                int D) override {
    cpu::row_dots(out, a, a_rows, b, b_rows, n, D);
  }
  void adamw_update(float* param, const float* grad, float* m, float* v, int64_t n, const AdamWParams& p) override {
    cpu::adamw_update(param, grad, m, v, n, p);
  }
  void adamw_update_bf16(float* param, bf16* param16, const float* grad, float* m, float* v, int64_t n,
                         const AdamWParams& p) override {
    cpu::adamw_update_bf16(param, param16, grad, m, v, n, p);
  }
  double sum_squares(const float* x, int64_t n) override { return cpu::sum_squares(x, n); }
  void scale_inplace(float* x, float s, int64_t n) override { cpu::scale_inplace(x, s, n); }
  void add_inplace(float* y, const float* x, int64_t n) override { cpu::add_inplace(y, x, n); }
  int64_t first_non_finite(const float* x, int64_t n) override { return cpu::first_non_finite(x, n); }

 private:
  Context ctx_;
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend() { return std::make_unique<CpuBackend>(); }

Backend& cpu_backend() {
  static CpuBackend be;
  return be;
}

}  // namespace mor::kern
