// The seam between the engine (model/, dist/, launcher/) and the hardware. A Backend owns memory
// and execution: the engine holds Buffers the backend allocated, hands their pointers to the
// backend's operations, and moves data between host and backend only through copy_to_host /
// copy_from_host. It never dereferences a buffer itself: on a GPU backend the pointers are device
// pointers (pointer arithmetic on them is fine, reading them is not).
//
// Implementations: kernels/cpu (CpuBackend, make_cpu_backend). A CUDA backend implements the same
// class on device memory and a stream (Context); tests/test_backend_conformance.cpp checks every
// operation of any backend against a double-precision reference through this interface.
//
// Conventions: fp32 tensors (bf16 only where an operation says so), row-major; "accumulate" (+=) versus "write" (=) is stated per output,
// because gradients of shared parameters are summed over recursions. Index arrays (positions,
// row lists, token ids) are int32 buffers of the same backend.
#pragma once
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <utility>
#include <vector>

#include "kernels/dtype.h"  // DType, dtype_size, dtype_of, Context

namespace mor::kern {

struct AttnShape {
  int nq, nk, n_heads, n_kv_heads, head_dim;
  // Mixed precision (--train.precision bf16): the products (q k^T, p v and the backward's) may
  // take bf16-rounded operands with fp32 sums; softmax, the log-sum-exp and all outputs stay fp32.
  // A backend may compute them in fp32 instead (the CPU does without AVX512-BF16).
  bool bf16 = false;
};

struct AdamWParams {
  float lr, beta1, beta2, eps, weight_decay;
  int64_t step;
  float grad_scale = 1.f;  // gradient clipping folded into the update (saves a pass over the gradients)
};

class Backend;

// An owning, move-only array of T in a backend's memory. resize() keeps the capacity when
// shrinking (like std::vector) and leaves the contents undefined when it grows: every user writes
// a buffer fully (or zero()es it) before reading it.
template <class T>
class Buffer {
 public:
  Buffer() = default;
  explicit Buffer(Backend& be, int64_t n = 0) : be_(&be) { resize(n); }
  Buffer(Buffer&& o) noexcept { swap(o); }
  Buffer& operator=(Buffer&& o) noexcept {
    Buffer(std::move(o)).swap(*this);
    return *this;
  }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer() { reset(); }

  void bind(Backend& be) {
    if (!be_) be_ = &be;
  }  // a default-constructed buffer learns its backend
  void resize(int64_t n);
  void reset();  // frees the memory
  void zero();   // every element 0 (all bits zero)
  void assign_zero(int64_t n) {
    resize(n);
    zero();
  }
  // Host transfers of the first n (default: all) elements.
  void to_host(T* host, int64_t n = -1) const;
  std::vector<T> to_host_vector() const;
  void from_host(const T* host, int64_t n);  // resize(n), then the copy
  void from_host(const std::vector<T>& v) { from_host(v.data(), (int64_t)v.size()); }
  void copy_from(const T* src_on_backend, int64_t n);  // resize(n), then a copy on the backend

  T* data() { return p_; }
  const T* data() const { return p_; }
  int64_t size() const { return n_; }
  int64_t capacity() const { return cap_; }  // elements allocated
  bool empty() const { return n_ == 0; }
  Backend* backend() const { return be_; }
  void swap(Buffer& o) noexcept {
    std::swap(be_, o.be_);
    std::swap(p_, o.p_);
    std::swap(n_, o.n_);
    std::swap(cap_, o.cap_);
  }

 private:
  Backend* be_ = nullptr;
  T* p_ = nullptr;
  int64_t n_ = 0, cap_ = 0;
};

// RoPE cos/sin tables for positions 0..max_pos-1, [max_pos, head_dim/2] each, in backend memory.
// Computed on the host in double (the same bits on every backend), then copied over.
struct RopeTable {
  int head_dim = 0, max_pos = 0;
  Buffer<float> cos, sin;
  RopeTable() = default;
  RopeTable(Backend& be, int head_dim, int max_pos, double theta);
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const char* name() const = 0;

  // ---- memory -------------------------------------------------------------------
  virtual void* allocate(size_t bytes) = 0;  // throws std::bad_alloc when out of memory
  virtual void deallocate(void* p, size_t bytes) = 0;
  virtual void copy_to_host(void* host, const void* src, size_t bytes) = 0;
  virtual void copy_from_host(void* dst, const void* host, size_t bytes) = 0;
  virtual void copy(void* dst, const void* src, size_t bytes) = 0;  // both on this backend
  virtual void zero(void* p, size_t bytes) = 0;
  // The contents of [p, p + bytes) are no longer needed (a released FSDP unit): the backend may
  // give the memory back (the CPU returns whole pages to the OS). Contents are undefined afterwards.
  virtual void discard(void* p, size_t bytes) = 0;
  // True when buffer pointers are host pointers (the CPU): file I/O may then read and write them
  // in place instead of staging through copy_to_host / copy_from_host.
  virtual bool host_addressable() const = 0;

  // ---- execution ------------------------------------------------------------------
  virtual Context& context() = 0;
  virtual void synchronize() = 0;  // returns when every queued operation has finished

  // ---- GEMM and linear layers (no bias anywhere in the model) ---------------------------
  // C[M,N] = alpha * op(A) op(B) + beta * C, op = transpose if flag.
  virtual void gemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda,
                    const float* B, int ldb, float beta, float* C, int ldc) = 0;
  // y[n,out] = x[n,in] W[out,in]^T
  virtual void linear_forward(float* y, const float* x, const float* W, int n, int in, int out) = 0;
  // Two linear layers of one input (k and v, gate and up): y1 = x W1^T, y2 = x W2^T.
  virtual void linear_forward_pair(float* y1, const float* W1, int out1, float* y2, const float* W2, int out2,
                                   const float* x, int n, int in) = 0;
  // dx[n,in] (+)= dy W (accumulate if accumulate_dx); dW[out,in] += dy^T x.
  virtual void linear_backward(float* dx, float* dW, const float* dy, const float* x, const float* W, int n, int in,
                               int out, bool accumulate_dx) = 0;

  // ---- bf16 (mixed precision, --train.precision bf16) ---------------------------------------
  // The linear layers with bf16 operands, fp32 accumulation and fp32 outputs; otherwise the
  // contracts of the fp32 ones above. Everything else in the model stays fp32.
  virtual void linear_forward_bf16(float* y, const bf16* x, const bf16* W, int n, int in, int out) = 0;
  virtual void linear_forward_pair_bf16(float* y1, const bf16* W1, int out1, float* y2, const bf16* W2, int out2,
                                        const bf16* x, int n, int in) = 0;
  virtual void linear_backward_bf16(float* dx, float* dW, const bf16* dy, const bf16* x, const bf16* W, int n, int in,
                                    int out, bool accumulate_dx) = 0;
  virtual void cast_to_bf16(bf16* dst, const float* src, int64_t n) = 0;  // round to nearest even
  virtual void cast_to_f32(float* dst, const bf16* src, int64_t n) = 0;   // exact
  // Whether bf16 GEMMs run on bf16 hardware here (AVX512-BF16, AMX, tensor cores); false means
  // they are emulated, slower than fp32.
  virtual bool fast_bf16() const = 0;

  // ---- RMSNorm: y = x * rstd * w, rstd = 1/sqrt(mean(x^2)+eps) per row of d; rstd[n] saved ----
  virtual void rmsnorm_forward(float* y, float* rstd, const float* x, const float* w, int n, int d, float eps) = 0;
  // bf16 runs: y rounded to bf16 (the normalised input is only ever a GEMM operand there).
  virtual void rmsnorm_forward_bf16(bf16* y, float* rstd, const float* x, const float* w, int n, int d, float eps) = 0;
  // dx = dres + (gradient through the norm), dw[d] += ...; dres may be dx itself (accumulate) or
  // null (dx is written).
  virtual void rmsnorm_backward(float* dx, const float* dres, float* dw, const float* dy, const float* x,
                                const float* w, const float* rstd, int n, int d) = 0;

  // ---- RoPE (non-interleaved rotate_half), in place on x[n, n_heads, head_dim] ------------
  virtual void rope_forward(float* x, const int* pos, int n, int n_heads, const RopeTable& t) = 0;
  // Turns dL/d(rotated) into dL/d(unrotated) (the inverse rotation).
  virtual void rope_backward(float* dx, const int* pos, int n, int n_heads, const RopeTable& t) = 0;

  // ---- SwiGLU: h = silu(g) * u; backward writes dg = dh * u * silu'(g), du = dh * silu(g) ----
  virtual void swiglu_forward(float* h, const float* g, const float* u, int64_t n) = 0;
  virtual void swiglu_forward_bf16(bf16* h, const float* g, const float* u, int64_t n) = 0;  // h rounded to bf16
  virtual void swiglu_backward(float* dg, float* du, const float* dh, const float* g, const float* u, int64_t n) = 0;
  // The same with dg and du rounded to bf16 (they are only the bf16 GEMMs' operands); dg32/du32
  // are scratch of n floats. The default composes the operations; a backend fuses them to skip a
  // pass over both.
  virtual void swiglu_backward_bf16(bf16* dg16, bf16* du16, float* dg32, float* du32, const float* dh, const float* g,
                                    const float* u, int64_t n) {
    swiglu_backward(dg32, du32, dh, g, u, n);
    cast_to_bf16(dg16, dg32, n);
    cast_to_bf16(du16, du32, n);
  }

  // ---- causal attention over one sequence's (possibly compacted) token set ----------------
  // q[nq, H, hd], k/v[nk, Hkv, hd]; query i sees key j iff kpos[j] <= qpos[i] (both ascending).
  // GQA: query head h uses kv head h / (H / Hkv). o written; lse[H, nq] saved for backward.
  virtual void attention_forward(float* o, float* lse, const float* q, const float* k, const float* v, const int* qpos,
                                 const int* kpos, const AttnShape& s) = 0;
  // dq written; dk, dv accumulated (+=): shared keys/values collect gradient from many recursions.
  virtual void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* o, const float* lse,
                                  const float* q, const float* k, const float* v, const int* qpos, const int* kpos,
                                  const AttnShape& s) = 0;

  // ---- softmax cross-entropy over the vocabulary ---------------------------------------
  // Returns sum over rows of (logsumexp - logit[target]); logits are overwritten by
  // scale * (softmax - onehot), the gradient of scale * sum(losses).
  virtual double softmax_xent(float* logits, const int32_t* targets, int n, int V, float scale) = 0;
  // The same, with the gradient written to dlogits16 rounded to bf16 (the bf16 head's GEMM operand);
  // logits is scratch. The default composes the two operations; a backend fuses them to skip a
  // pass over the [n, V] matrix.
  virtual double softmax_xent_bf16(float* logits, bf16* dlogits16, const int32_t* targets, int n, int V, float scale) {
    const double loss = softmax_xent(logits, targets, n, V, scale);
    cast_to_bf16(dlogits16, logits, (int64_t)n * V);
    return loss;
  }

  // ---- rows: embedding, gather/scatter between token sets --------------------------------
  // out[i] = table[ids[i]] (rows of D).
  virtual void embedding_forward(float* out, const float* table, const int32_t* ids, int n, int D) = 0;
  // dtable[ids[i]] += dout[i]; ids may repeat (the sum is taken in order of i).
  virtual void embedding_backward(float* dtable, const float* dout, const int32_t* ids, int n, int D) = 0;
  // For i < n: dst[dr(i)] (= or +=) s(i) * src[sr(i)], rows of D floats, where dr(i) = dst_rows[i]
  // (i when null), sr(i) likewise, s(i) = scale[i] (1 when null). With accumulate the dst rows must
  // be distinct. Gathers, scatters, gated residual updates and their gradients are all this.
  virtual void copy_rows(float* dst, const int32_t* dst_rows, const float* src, const int32_t* src_rows,
                         const float* scale, int n, int D, bool accumulate) = 0;
  // out[i] = <a[ar(i)], b[br(i)]> over D (row lists as in copy_rows), summed in order of the columns.
  virtual void row_dots(float* out, const float* a, const int32_t* a_rows, const float* b, const int32_t* b_rows, int n,
                        int D) = 0;

  // ---- optimizer and vector helpers ------------------------------------------------------
  // AdamW with decoupled weight decay on n contiguous elements; p.weight_decay applies to all.
  virtual void adamw_update(float* param, const float* grad, float* m, float* v, int64_t n, const AdamWParams& p) = 0;
  // AdamW, then the updated parameters rounded to bf16 into param16 (the copy bf16 runs compute
  // with). The default composes the operations; a backend fuses them to skip a pass over the
  // parameters.
  virtual void adamw_update_bf16(float* param, bf16* param16, const float* grad, float* m, float* v, int64_t n,
                                 const AdamWParams& p) {
    adamw_update(param, grad, m, v, n, p);
    cast_to_bf16(param16, param, n);
  }
  virtual double sum_squares(const float* x, int64_t n) = 0;  // in double, in a fixed order
  virtual void scale_inplace(float* x, float s, int64_t n) = 0;
  virtual void add_inplace(float* y, const float* x, int64_t n) = 0;  // y += x
  // Index of the first element of x[n] that is NaN or ±inf, or -1.
  virtual int64_t first_non_finite(const float* x, int64_t n) = 0;

  // ---- selection (expert-choice routing) ------------------------------------------------
  // out_idx[0..k) = the indices of the k highest of scores[0..n), in ascending index order.
  // Order: higher score first; equal scores (-0 equals +0) the lower index first, so the selected
  // set is unique and every backend selects the same one. Scores must not be NaN (the selection
  // is then unspecified). 0 <= k <= n. The default runs kern::topk_indices_host
  // (kernels/cpu/topk.cpp) on the host, through host copies where the buffers are not
  // host-addressable; a device backend overrides it (CUDA: a stable radix sort, kernels/cuda/topk.cu).
  virtual void topk_indices(int32_t* out_idx, const float* scores, int n, int k);
};

// The host form of Backend::topk_indices on host arrays (the CPU backend's implementation).
void topk_indices_host(int32_t* out_idx, const float* scores, int n, int k);
// Throws std::invalid_argument unless 0 <= k <= n: every topk_indices checks this first.
void check_topk_args(int n, int k);

// ---- Buffer members (templates: here so every T the engine uses instantiates them) -------------
template <class T>
void Buffer<T>::resize(int64_t n) {
  if (n <= cap_) {
    n_ = n;
    return;
  }
  if (!be_) throw std::logic_error("Buffer::resize: the buffer has no backend");
  reset();
  p_ = static_cast<T*>(be_->allocate((size_t)n * sizeof(T)));
  n_ = cap_ = n;
}
template <class T>
void Buffer<T>::reset() {
  if (p_) be_->deallocate(p_, (size_t)cap_ * sizeof(T));
  p_ = nullptr;
  n_ = cap_ = 0;
}
template <class T>
void Buffer<T>::zero() {
  if (n_) be_->zero(p_, (size_t)n_ * sizeof(T));
}
template <class T>
void Buffer<T>::to_host(T* host, int64_t n) const {
  if (n < 0) n = n_;
  if (n) be_->copy_to_host(host, p_, (size_t)n * sizeof(T));
}
template <class T>
std::vector<T> Buffer<T>::to_host_vector() const {
  std::vector<T> v((size_t)n_);
  to_host(v.data());
  return v;
}
template <class T>
void Buffer<T>::from_host(const T* host, int64_t n) {
  resize(n);
  if (n) be_->copy_from_host(p_, host, (size_t)n * sizeof(T));
}
template <class T>
void Buffer<T>::copy_from(const T* src, int64_t n) {
  resize(n);
  if (n) be_->copy(p_, src, (size_t)n * sizeof(T));
}

}  // namespace mor::kern
