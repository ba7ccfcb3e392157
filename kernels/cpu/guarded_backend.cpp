#include "kernels/cpu/guarded_backend.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <new>
#include <stdexcept>
#include <string>

#include "kernels/cpu/cpu_backend.h"

namespace mor::kern {

namespace {

class GuardedBackend final : public Backend {
 public:
  GuardedBackend() {
    base_ = static_cast<char*>(mmap(nullptr, kReserve, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0));
    if (base_ == MAP_FAILED) throw std::runtime_error("GuardedBackend: cannot reserve address space");
    free_[0] = kReserve;
  }
  ~GuardedBackend() override { munmap(base_, kReserve); }
  const char* name() const override { return "cpu-guarded"; }

  // First fit in one reserved range, so that opening and closing every buffer is one mprotect of
  // [base, high water) each (per-buffer calls made a tiny model's step take seconds).
  void* allocate(size_t bytes) override {
    const size_t n = round_up(bytes);
    for (auto it = free_.begin(); it != free_.end(); ++it)
      if (it->second >= n) {
        const size_t off = it->first, len = it->second;
        free_.erase(it);
        if (len > n) free_[off + n] = len - n;
        used_[off] = n;
        high_ = std::max(high_, off + n);
        return base_ + off;
      }
    throw std::bad_alloc();
  }
  void deallocate(void* p, size_t) override {
    auto it = used_.find((size_t)(static_cast<char*>(p) - base_));
    if (it == used_.end()) throw std::logic_error("GuardedBackend::deallocate: not one of its buffers");
    size_t off = it->first, len = it->second;
    used_.erase(it);
    madvise(base_ + off, len, MADV_DONTNEED);  // the pages go back; advice only
    auto next = free_.lower_bound(off);        // coalesce with the free neighbours
    if (next != free_.end() && next->first == off + len) {
      len += next->second;
      next = free_.erase(next);
    }
    if (next != free_.begin()) {
      auto prev = std::prev(next);
      if (prev->first + prev->second == off) {
        off = prev->first;
        len += prev->second;
        free_.erase(prev);
      }
    }
    free_[off] = len;
  }
  void copy_to_host(void* host, const void* src, size_t n) override {
    Open o(*this);
    std::memcpy(host, src, n);
  }
  void copy_from_host(void* dst, const void* host, size_t n) override {
    Open o(*this);
    std::memcpy(dst, host, n);
  }
  void copy(void* dst, const void* src, size_t n) override {
    Open o(*this);
    cpu_.copy(dst, src, n);
  }
  void zero(void* p, size_t bytes) override {
    Open o(*this);
    cpu_.zero(p, bytes);
  }
  void discard(void*, size_t) override {}  // contents stay (allowed: they become undefined)
  bool host_addressable() const override { return false; }
  Context& context() override { return ctx_; }
  void synchronize() override {}

  // Each operation: open every buffer, run the CPU backend's, close them (also when it throws).
  template <class F>
  auto guarded(F f) {
    Open open(*this);
    return f(cpu_);
  }
  void gemm(bool ta, bool tb, int M, int N, int K, float alpha, const float* A, int lda, const float* B, int ldb,
            float beta, float* C, int ldc) override {
    guarded([&](Backend& c) { c.gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc); });
  }
  void linear_forward(float* y, const float* x, const float* W, int n, int in, int out) override {
    guarded([&](Backend& c) { c.linear_forward(y, x, W, n, in, out); });
  }
  void linear_forward_pair(float* y1, const float* W1, int out1, float* y2, const float* W2, int out2, const float* x,
                           int n, int in) override {
    guarded([&](Backend& c) { c.linear_forward_pair(y1, W1, out1, y2, W2, out2, x, n, in); });
  }
  void linear_backward(float* dx, float* dW, const float* dy, const float* x, const float* W, int n, int in, int out,
                       bool acc) override {
    guarded([&](Backend& c) { c.linear_backward(dx, dW, dy, x, W, n, in, out, acc); });
  }
  void linear_forward_bf16(float* y, const bf16* x, const bf16* W, int n, int in, int out) override {
    guarded([&](Backend& c) { c.linear_forward_bf16(y, x, W, n, in, out); });
  }
  void linear_forward_pair_bf16(float* y1, const bf16* W1, int out1, float* y2, const bf16* W2, int out2, const bf16* x,
                                int n, int in) override {
    guarded([&](Backend& c) { c.linear_forward_pair_bf16(y1, W1, out1, y2, W2, out2, x, n, in); });
  }
  void linear_backward_bf16(float* dx, float* dW, const bf16* dy, const bf16* x, const bf16* W, int n, int in, int out,
                            bool acc) override {
    guarded([&](Backend& c) { c.linear_backward_bf16(dx, dW, dy, x, W, n, in, out, acc); });
  }
  void cast_to_bf16(bf16* dst, const float* src, int64_t n) override {
    guarded([&](Backend& c) { c.cast_to_bf16(dst, src, n); });
  }
  void cast_to_f32(float* dst, const bf16* src, int64_t n) override {
    guarded([&](Backend& c) { c.cast_to_f32(dst, src, n); });
  }
  bool fast_bf16() const override { return cpu_.fast_bf16(); }
  void rmsnorm_forward(float* y, float* rstd, const float* x, const float* w, int n, int d, float eps) override {
    guarded([&](Backend& c) { c.rmsnorm_forward(y, rstd, x, w, n, d, eps); });
  }
  void rmsnorm_forward_bf16(bf16* y, float* rstd, const float* x, const float* w, int n, int d, float eps) override {
    guarded([&](Backend& c) { c.rmsnorm_forward_bf16(y, rstd, x, w, n, d, eps); });
  }
  void rmsnorm_backward(float* dx, const float* dres, float* dw, const float* dy, const float* x, const float* w,
                        const float* rstd, int n, int d) override {
    guarded([&](Backend& c) { c.rmsnorm_backward(dx, dres, dw, dy, x, w, rstd, n, d); });
  }
  void rope_forward(float* x, const int* pos, int n, int h, const RopeTable& t) override {
    guarded([&](Backend& c) { c.rope_forward(x, pos, n, h, t); });
  }
  void rope_backward(float* dx, const int* pos, int n, int h, const RopeTable& t) override {
    guarded([&](Backend& c) { c.rope_backward(dx, pos, n, h, t); });
  }
  void swiglu_forward(float* h, const float* g, const float* u, int64_t n) override {
    guarded([&](Backend& c) { c.swiglu_forward(h, g, u, n); });
  }
  void swiglu_forward_bf16(bf16* h, const float* g, const float* u, int64_t n) override {
    guarded([&](Backend& c) { c.swiglu_forward_bf16(h, g, u, n); });
  }
  void swiglu_backward(float* dg, float* du, const float* dh, const float* g, const float* u, int64_t n) override {
    guarded([&](Backend& c) { c.swiglu_backward(dg, du, dh, g, u, n); });
  }
  void attention_forward(float* o, float* lse, const float* q, const float* k, const float* v, const int* qpos,
                         const int* kpos, const AttnShape& s) override {
    guarded([&](Backend& c) { c.attention_forward(o, lse, q, k, v, qpos, kpos, s); });
  }
  void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* o, const float* lse,
                          const float* q, const float* k, const float* v, const int* qpos, const int* kpos,
                          const AttnShape& s) override {
    guarded([&](Backend& c) { c.attention_backward(dq, dk, dv, dout, o, lse, q, k, v, qpos, kpos, s); });
  }
  double softmax_xent(float* logits, const int32_t* targets, int n, int V, float scale) override {
    return guarded([&](Backend& c) { return c.softmax_xent(logits, targets, n, V, scale); });
  }
  double softmax_xent_bf16(float* logits, bf16* dlogits16, const int32_t* targets, int n, int V, float scale) override {
    return guarded([&](Backend& c) { return c.softmax_xent_bf16(logits, dlogits16, targets, n, V, scale); });
  }
  void embedding_forward(float* out, const float* table, const int32_t* ids, int n, int D) override {
    guarded([&](Backend& c) { c.embedding_forward(out, table, ids, n, D); });
  }
  void embedding_backward(float* dtable, const float* dout, const int32_t* ids, int n, int D) override {
    guarded([&](Backend& c) { c.embedding_backward(dtable, dout, ids, n, D); });
  }
  void copy_rows(float* dst, const int32_t* dr, const float* src, const int32_t* sr, const float* scale, int n, int D,
                 bool acc) override {
    guarded([&](Backend& c) { c.copy_rows(dst, dr, src, sr, scale, n, D, acc); });
  }
  void row_dots(float* out, const float* a, const int32_t* ar, const float* b, const int32_t* br, int n,
                int D) override {
    guarded([&](Backend& c) { c.row_dots(out, a, ar, b, br, n, D); });
  }
  void adamw_update(float* param, const float* grad, float* m, float* v, int64_t n, const AdamWParams& p) override {
    guarded([&](Backend& c) { c.adamw_update(param, grad, m, v, n, p); });
  }
  double sum_squares(const float* x, int64_t n) override {
    return guarded([&](Backend& c) { return c.sum_squares(x, n); });
  }
  void scale_inplace(float* x, float s, int64_t n) override {
    guarded([&](Backend& c) { c.scale_inplace(x, s, n); });
  }
  void add_inplace(float* y, const float* x, int64_t n) override {
    guarded([&](Backend& c) { c.add_inplace(y, x, n); });
  }
  int64_t first_non_finite(const float* x, int64_t n) override {
    return guarded([&](Backend& c) { return c.first_non_finite(x, n); });
  }

 private:
  // Opens every buffer for the lifetime of the object (one operation).
  struct Open {
    GuardedBackend& b;
    explicit Open(GuardedBackend& be) : b(be) { b.protect(PROT_READ | PROT_WRITE); }
    ~Open() { b.protect(PROT_NONE); }
  };
  // Cannot fail for our own mapping; if it did, the guard would mean nothing: stop loudly.
  void protect(int prot) noexcept {
    if (high_ && mprotect(base_, high_, prot) != 0) {
      std::fprintf(stderr, "GuardedBackend: mprotect failed: %s\n", std::strerror(errno));
      std::abort();
    }
  }
  static size_t round_up(size_t bytes) {
    static const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    return (std::max<size_t>(bytes, 1) + page - 1) / page * page;
  }

  static constexpr size_t kReserve = size_t{1} << 38;  // 256 GiB of address space, no memory
  Backend& cpu_ = cpu_backend();
  char* base_ = nullptr;
  size_t high_ = 0;                       // end of the highest allocation ever made
  std::map<size_t, size_t> free_, used_;  // offset -> length
  Context ctx_;
};

}  // namespace

std::unique_ptr<Backend> make_guarded_cpu_backend() { return std::make_unique<GuardedBackend>(); }

}  // namespace mor::kern
