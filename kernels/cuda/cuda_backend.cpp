// CudaBackend: kern::Backend on one CUDA device. Memory from the stream-ordered allocator
// (cudaMallocAsync: a caching pool, so the engine's many resize()s do not hit cudaMalloc), every
// operation queued on one stream (the Context), GEMMs through cuBLAS, the rest in the kernel files
// (kernels.h). Host transfers wait for the stream: the host memory is the caller's to reuse at once.
#include "kernels/cuda/cuda_backend.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <new>
#include <string>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/host_helpers.h"
#include "kernels/cuda/kernels.h"

namespace mor::kern {

int cuda_device_count(std::string* why) {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    if (why) *why = std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e);
    (void)cudaGetLastError();  // not sticky: clear it so later calls do not report it again
    return 0;
  }
  if (n == 0 && why) *why = "the CUDA runtime reports no device";
  return n;
}

CudaDeviceInfo cuda_device_info(int device) {
  cudaDeviceProp p{};
  CUDA_CHECK(cudaGetDeviceProperties(&p, device));
  return {p.name, p.totalGlobalMem, p.major, p.minor};
}

namespace {

using cuda::Workspace;

void check_nonneg(const char* op, std::initializer_list<int64_t> sizes) {
  for (int64_t s : sizes)
    if (s < 0) throw std::invalid_argument(std::string(op) + ": negative size " + std::to_string(s));
}

class DeviceWorkspace final : public Workspace {
 public:
  explicit DeviceWorkspace(cudaStream_t s) : s_(s) {}
  ~DeviceWorkspace() override {
    if (p_) (void)cudaFreeAsync(p_, s_);  // no throwing from a destructor; the pool reclaims it
  }
  void* get(size_t bytes) override {
    if (bytes > cap_) {
      if (p_) CUDA_CHECK(cudaFreeAsync(p_, s_));  // stream order: earlier kernels finish with it first
      p_ = nullptr;
      cap_ = 0;
      const size_t want = (bytes + (1u << 20) - 1) / (1u << 20) * (1u << 20);  // whole MiB: fewer regrowths
      CUDA_CHECK(cudaMallocAsync(&p_, want, s_));
      cap_ = want;
    }
    return p_;
  }

 private:
  cudaStream_t s_;
  void* p_ = nullptr;
  size_t cap_ = 0;
};

class CudaBackend final : public Backend {
 public:
  CudaBackend(int device, const CudaOptions& options)
      : flash_attention_(options.attention == CudaOptions::Attention::Flash) {
    try {
      init(device);
    } catch (...) {
      release();  // a half-made backend gives back what it got
      throw;
    }
  }
  ~CudaBackend() override { release(); }
  const char* name() const override { return "cuda"; }

  // ---- memory ----
  void* allocate(size_t bytes) override {
    void* p = nullptr;
    const cudaError_t e = cudaMallocAsync(&p, bytes ? bytes : 1, stream_);
    if (e == cudaErrorMemoryAllocation) {
      (void)cudaGetLastError();
      throw std::bad_alloc();
    }
    CUDA_CHECK(e);
    return p;
  }
  void deallocate(void* p, size_t) override {
    if (p) CUDA_CHECK(cudaFreeAsync(p, stream_));
  }
  void copy_to_host(void* host, const void* src, size_t n) override {
    CUDA_CHECK(cudaMemcpyAsync(host, src, n, cudaMemcpyDeviceToHost, stream_));
    CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
  void copy_from_host(void* dst, const void* host, size_t n) override {
    CUDA_CHECK(cudaMemcpyAsync(dst, host, n, cudaMemcpyHostToDevice, stream_));
    CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
  // memmove semantics (as the CPU backend): overlapping ranges go through the workspace.
  void copy(void* dst, const void* src, size_t n) override {
    if (!n || dst == src) return;
    const auto d = (uintptr_t)dst, s = (uintptr_t)src;
    if (d < s + n && s < d + n) {
      void* tmp = ws_->get(n);
      CUDA_CHECK(cudaMemcpyAsync(tmp, src, n, cudaMemcpyDeviceToDevice, stream_));
      src = tmp;
    }
    CUDA_CHECK(cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToDevice, stream_));
  }
  void zero(void* p, size_t bytes) override {
    if (bytes) CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, stream_));
  }
  // The memory stays allocated: a released FSDP unit is gathered again next step, and the pool
  // would only hand the same pages back.
  void discard(void*, size_t) override {}
  bool host_addressable() const override { return false; }

  Context& context() override { return ctx_; }
  void synchronize() override { CUDA_CHECK(cudaStreamSynchronize(stream_)); }

  // ---- GEMM (gemm.cpp) ----
  void gemm(bool ta, bool tb, int M, int N, int K, float alpha, const float* A, int lda, const float* B, int ldb,
            float beta, float* C, int ldc) override;
  void linear_forward(float* y, const float* x, const float* W, int n, int in, int out) override {
    gemm(false, true, n, out, in, 1.f, x, in, W, in, 0.f, y, out);
  }
  void linear_forward_pair(float* y1, const float* W1, int out1, float* y2, const float* W2, int out2, const float* x,
                           int n, int in) override {
    linear_forward(y1, x, W1, n, in, out1);
    linear_forward(y2, x, W2, n, in, out2);
  }
  void linear_backward(float* dx, float* dW, const float* dy, const float* x, const float* W, int n, int in, int out,
                       bool accumulate_dx) override {
    gemm(false, false, n, in, out, 1.f, dy, out, W, in, accumulate_dx ? 1.f : 0.f, dx, in);
    gemm(true, false, out, in, n, 1.f, dy, out, x, in, 1.f, dW, in);
  }
  void linear_forward_bf16(float* y, const bf16* x, const bf16* W, int n, int in, int out) override {
    gemm_bf16(false, true, n, out, in, x, in, W, in, 0.f, y, out);
  }
  void linear_forward_pair_bf16(float* y1, const bf16* W1, int out1, float* y2, const bf16* W2, int out2, const bf16* x,
                                int n, int in) override {
    linear_forward_bf16(y1, x, W1, n, in, out1);
    linear_forward_bf16(y2, x, W2, n, in, out2);
  }
  void linear_backward_bf16(float* dx, float* dW, const bf16* dy, const bf16* x, const bf16* W, int n, int in, int out,
                            bool accumulate_dx) override {
    gemm_bf16(false, false, n, in, out, dy, out, W, in, accumulate_dx ? 1.f : 0.f, dx, in);
    gemm_bf16(true, false, out, in, n, dy, out, x, in, 1.f, dW, in);
  }
  void cast_to_bf16(bf16* dst, const float* src, int64_t n) override {
    check_nonneg("cast_to_bf16", {n});
    if (n) cuda::cast_to_bf16(stream_, dst, src, n);
  }
  void cast_to_f32(float* dst, const bf16* src, int64_t n) override {
    check_nonneg("cast_to_f32", {n});
    if (n) cuda::cast_to_f32(stream_, dst, src, n);
  }
  bool fast_bf16() const override { return prop_.major >= 8; }  // bf16 tensor cores from Ampere on

  // ---- model kernels ----
  void rmsnorm_forward(float* y, float* rstd, const float* x, const float* w, int n, int d, float eps) override {
    check_nonneg("rmsnorm_forward", {n, d});
    cuda::rmsnorm_forward(stream_, y, rstd, x, w, n, d, eps);
  }
  void rmsnorm_forward_bf16(bf16* y, float* rstd, const float* x, const float* w, int n, int d, float eps) override {
    check_nonneg("rmsnorm_forward_bf16", {n, d});
    cuda::rmsnorm_forward_bf16(stream_, y, rstd, x, w, n, d, eps);
  }
  void rmsnorm_backward(float* dx, const float* dres, float* dw, const float* dy, const float* x, const float* w,
                        const float* rstd, int n, int d) override {
    check_nonneg("rmsnorm_backward", {n, d});
    cuda::rmsnorm_backward(stream_, *ws_, dx, dres, dw, dy, x, w, rstd, n, d);
  }
  void rope_forward(float* x, const int* pos, int n, int n_heads, const RopeTable& t) override {
    rope(x, pos, n, n_heads, t, 1.f);
  }
  // The rotation is orthogonal: rotating by -angle maps the gradient back.
  void rope_backward(float* dx, const int* pos, int n, int n_heads, const RopeTable& t) override {
    rope(dx, pos, n, n_heads, t, -1.f);
  }
  void swiglu_forward(float* h, const float* g, const float* u, int64_t n) override {
    check_nonneg("swiglu_forward", {n});
    if (n) cuda::swiglu_forward(stream_, h, g, u, n);
  }
  void swiglu_forward_bf16(bf16* h, const float* g, const float* u, int64_t n) override {
    check_nonneg("swiglu_forward_bf16", {n});
    if (n) cuda::swiglu_forward_bf16(stream_, h, g, u, n);
  }
  void swiglu_backward(float* dg, float* du, const float* dh, const float* g, const float* u, int64_t n) override {
    check_nonneg("swiglu_backward", {n});
    if (n) cuda::swiglu_backward(stream_, dg, du, dh, g, u, n);
  }
  // The fused kernel where it was asked for and has the head_dim (64, 128); the simple one otherwise.
  // Either ignores AttnShape::bf16 (fp32 products, which the contract allows).
  bool use_flash(const AttnShape& s) const { return flash_attention_ && cuda::flash_supports(s.head_dim); }
  void attention_forward(float* o, float* lse, const float* q, const float* k, const float* v, const int* qpos,
                         const int* kpos, const AttnShape& s) override {
    if (use_flash(s))
      cuda::attention_forward_flash(stream_, o, lse, q, k, v, qpos, kpos, s);
    else
      cuda::attention_forward(stream_, o, lse, q, k, v, qpos, kpos, s);
  }
  void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* o, const float* lse,
                          const float* q, const float* k, const float* v, const int* qpos, const int* kpos,
                          const AttnShape& s) override {
    if (use_flash(s))
      cuda::attention_backward_flash(stream_, *ws_, dq, dk, dv, dout, o, lse, q, k, v, qpos, kpos, s);
    else
      cuda::attention_backward(stream_, *ws_, dq, dk, dv, dout, o, lse, q, k, v, qpos, kpos, s);
  }
  double softmax_xent(float* logits, const int32_t* targets, int n, int V, float scale) override {
    check_nonneg("softmax_xent", {n, V});
    if (n && !V) throw std::invalid_argument("softmax_xent: empty vocabulary");
    return cuda::softmax_xent(stream_, *ws_, logits, targets, n, V, scale);
  }
  void embedding_forward(float* out, const float* table, const int32_t* ids, int n, int D) override {
    check_nonneg("embedding_forward", {n, D});
    cuda::embedding_forward(stream_, out, table, ids, n, D);
  }
  void embedding_backward(float* dtable, const float* dout, const int32_t* ids, int n, int D) override {
    check_nonneg("embedding_backward", {n, D});
    cuda::embedding_backward(stream_, *ws_, dtable, dout, ids, n, D);
  }
  void copy_rows(float* dst, const int32_t* dst_rows, const float* src, const int32_t* src_rows, const float* scale,
                 int n, int D, bool accumulate) override {
    check_nonneg("copy_rows", {n, D});
    cuda::copy_rows(stream_, dst, dst_rows, src, src_rows, scale, n, D, accumulate);
  }
  void row_dots(float* out, const float* a, const int32_t* a_rows, const float* b, const int32_t* b_rows, int n,
                int D) override {
    check_nonneg("row_dots", {n, D});
    cuda::row_dots(stream_, out, a, a_rows, b, b_rows, n, D);
  }

  // ---- optimizer and vector helpers ----
  void adamw_update(float* param, const float* grad, float* m, float* v, int64_t n, const AdamWParams& p) override {
    check_nonneg("adamw_update", {n});
    if (!n) return;
    // The same host-side constants as the CPU backend (kernels/cpu/ops.cpp).
    const float bc1 = 1.f - (float)std::pow((double)p.beta1, (double)p.step);
    const float bc2 = 1.f - (float)std::pow((double)p.beta2, (double)p.step);
    const cuda::AdamWConsts c{
        p.beta1, p.beta2, p.eps, 1.f - p.lr * p.weight_decay, p.lr / bc1, 1.f / std::sqrt(bc2), p.grad_scale};
    cuda::adamw_update(stream_, param, grad, m, v, n, c);
  }
  double sum_squares(const float* x, int64_t n) override {
    check_nonneg("sum_squares", {n});
    return cuda::sum_squares(stream_, *ws_, x, n);
  }
  void scale_inplace(float* x, float s, int64_t n) override {
    check_nonneg("scale_inplace", {n});
    if (n) cuda::scale_inplace(stream_, x, s, n);
  }
  void add_inplace(float* y, const float* x, int64_t n) override {
    check_nonneg("add_inplace", {n});
    if (n) cuda::add_inplace(stream_, y, x, n);
  }
  int64_t first_non_finite(const float* x, int64_t n) override {
    check_nonneg("first_non_finite", {n});
    return cuda::first_non_finite(stream_, *ws_, x, n);
  }
  void topk_indices(int32_t* out_idx, const float* scores, int n, int k) override {
    check_topk_args(n, k);
    cuda::topk_indices(stream_, *ws_, out_idx, scores, n, k);
  }

 private:
  void init(int device) {
    CUDA_CHECK(cudaSetDevice(device));
    CUDA_CHECK(cudaGetDeviceProperties(&prop_, device));
    CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    // Keep freed memory in the pool (the default releases it at every synchronisation).
    cudaMemPool_t pool;
    CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, device));
    uint64_t keep = UINT64_MAX;
    CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep));
    CUBLAS_CHECK(cublasCreate(&blas_));
    CUBLAS_CHECK(cublasSetStream(blas_, stream_));
    // Default math: fp32 GEMMs stay IEEE fp32 (no TF32); bf16 ones use the tensor cores.
    CUBLAS_CHECK(cublasSetMathMode(blas_, CUBLAS_DEFAULT_MATH));
    ws_ = std::make_unique<DeviceWorkspace>(stream_);
    ctx_.stream = stream_;
  }
  // No throwing here (destructor, failed constructor): errors at teardown change nothing.
  void release() noexcept {
    ws_.reset();
    if (stream_) (void)cudaStreamSynchronize(stream_);
    if (blas_) (void)cublasDestroy(blas_);
    if (stream_) (void)cudaStreamDestroy(stream_);
    blas_ = nullptr;
    stream_ = nullptr;
  }
  // Row-major C[M,N] = alpha op(A) op(B) + beta C is column-major C^T = op(B)^T op(A)^T: cuBLAS
  // gets the operands swapped, with the same transpose flags.
  void gemm_bf16(bool ta, bool tb, int M, int N, int K, const bf16* A, int lda, const bf16* B, int ldb, float beta,
                 float* C, int ldc);
  void rope(float* x, const int* pos, int n, int n_heads, const RopeTable& t, float sign) {
    check_nonneg("rope", {n, n_heads});
    if (t.cos.backend() != this || t.sin.backend() != this)
      throw std::invalid_argument("rope: the RopeTable was made on another backend");
    if (t.head_dim < 2 || t.head_dim % 2) throw std::invalid_argument("rope: head_dim must be even");
    if (n && n_heads) cuda::rope_apply(stream_, x, pos, n, n_heads, t.head_dim, t.cos.data(), t.sin.data(), sign);
  }

  const bool flash_attention_;
  cudaDeviceProp prop_{};
  cudaStream_t stream_ = nullptr;
  cublasHandle_t blas_ = nullptr;
  std::unique_ptr<DeviceWorkspace> ws_;
  Context ctx_;
};

void check_gemm(const char* op, int M, int N, int K, int lda, int ldb, int ldc) {
  check_nonneg(op, {M, N, K});
  if (lda < 1 || ldb < 1 || ldc < std::max(1, N))
    throw std::invalid_argument(std::string(op) + ": leading dimension below the row length");
}

void CudaBackend::gemm(bool ta, bool tb, int M, int N, int K, float alpha, const float* A, int lda, const float* B,
                       int ldb, float beta, float* C, int ldc) {
  check_gemm("gemm", M, N, K, lda, ldb, ldc);
  if (!M || !N) return;
  // CUBLAS_COMPUTE_32F: fp32 inputs, fp32 accumulation, no TF32 down-conversion.
  CUBLAS_CHECK(cublasGemmEx(blas_, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K, &alpha, B,
                            CUDA_R_32F, ldb, A, CUDA_R_32F, lda, &beta, C, CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F,
                            CUBLAS_GEMM_DEFAULT));
}

void CudaBackend::gemm_bf16(bool ta, bool tb, int M, int N, int K, const bf16* A, int lda, const bf16* B, int ldb,
                            float beta, float* C, int ldc) {
  check_gemm("gemm_bf16", M, N, K, lda, ldb, ldc);
  if (!M || !N) return;
  const float alpha = 1.f;
  // bf16 A and B, fp32 accumulation and fp32 C (CUBLAS_COMPUTE_32F): the tensor-core path.
  CUBLAS_CHECK(cublasGemmEx(blas_, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K, &alpha, B,
                            CUDA_R_16BF, ldb, A, CUDA_R_16BF, lda, &beta, C, CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F,
                            CUBLAS_GEMM_DEFAULT));
}

}  // namespace

std::unique_ptr<Backend> make_cuda_backend(int device, const CudaOptions& options) {
  std::string why;
  const int n = cuda_device_count(&why);
  if (n == 0) throw std::runtime_error("no CUDA device: " + why);
  if (device < 0 || device >= n)
    throw std::runtime_error("CUDA device " + std::to_string(device) + " does not exist (" + std::to_string(n) +
                             " visible)");
  return std::make_unique<CudaBackend>(device, options);
}

}  // namespace mor::kern
