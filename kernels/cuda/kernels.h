// The CUDA kernels' host-side launchers (internal to kernels/cuda): CudaBackend (cuda_backend.cpp)
// validates sizes and calls these; each enqueues its kernels on `s` and checks the launch. The
// contracts are kern::Backend's (kernels/backend.h). Files by concept: elementwise.cu, norm.cu,
// rows.cu, attention.cu, attention_flash.cu, topk.cu, reduce.cu.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "kernels/backend.h"

namespace mor::kern::cuda {

// Device scratch memory owned by the backend, reused by every operation on its one stream (stream
// order makes reuse safe). get() returns at least `bytes`, 256-byte aligned; valid until the next get().
class Workspace {
 public:
  virtual ~Workspace() = default;
  virtual void* get(size_t bytes) = 0;
};

// elementwise.cu
void cast_to_bf16(cudaStream_t s, bf16* dst, const float* src, int64_t n);
void cast_to_f32(cudaStream_t s, float* dst, const bf16* src, int64_t n);
void swiglu_forward(cudaStream_t s, float* h, const float* g, const float* u, int64_t n);
void swiglu_forward_bf16(cudaStream_t s, bf16* h, const float* g, const float* u, int64_t n);
void swiglu_backward(cudaStream_t s, float* dg, float* du, const float* dh, const float* g, const float* u, int64_t n);
void scale_inplace(cudaStream_t s, float* x, float a, int64_t n);
void add_inplace(cudaStream_t s, float* y, const float* x, int64_t n);
// Bias corrections and the decay factor precomputed on the host (in double, as the CPU does).
struct AdamWConsts {
  float beta1, beta2, eps, decay, step_size, inv_sqrt_bc2, grad_scale;
};
void adamw_update(cudaStream_t s, float* param, const float* grad, float* m, float* v, int64_t n, const AdamWConsts& c);
void rope_apply(cudaStream_t s, float* x, const int* pos, int n, int n_heads, int head_dim, const float* cos_t,
                const float* sin_t, float sign);

// norm.cu
void rmsnorm_forward(cudaStream_t s, float* y, float* rstd, const float* x, const float* w, int n, int d, float eps);
void rmsnorm_forward_bf16(cudaStream_t s, bf16* y, float* rstd, const float* x, const float* w, int n, int d,
                          float eps);
void rmsnorm_backward(cudaStream_t s, Workspace& ws, float* dx, const float* dres, float* dw, const float* dy,
                      const float* x, const float* w, const float* rstd, int n, int d);

// rows.cu
void embedding_forward(cudaStream_t s, float* out, const float* table, const int32_t* ids, int n, int D);
void embedding_backward(cudaStream_t s, Workspace& ws, float* dtable, const float* dout, const int32_t* ids, int n,
                        int D);
void copy_rows(cudaStream_t s, float* dst, const int32_t* dst_rows, const float* src, const int32_t* src_rows,
               const float* scale, int n, int D, bool accumulate);
void row_dots(cudaStream_t s, float* out, const float* a, const int32_t* a_rows, const float* b, const int32_t* b_rows,
              int n, int D);

// attention.cu
void attention_forward(cudaStream_t s, float* o, float* lse, const float* q, const float* k, const float* v,
                       const int* qpos, const int* kpos, const AttnShape& sh);
void attention_backward(cudaStream_t s, Workspace& ws, float* dq, float* dk, float* dv, const float* dout,
                        const float* o, const float* lse, const float* q, const float* k, const float* v,
                        const int* qpos, const int* kpos, const AttnShape& sh);

// attention_flash.cu: the same contract, fused FlashAttention-2-style tiles, head_dim 64 and 128 only
// (flash_supports; throws std::invalid_argument otherwise).
void attention_forward_flash(cudaStream_t s, float* o, float* lse, const float* q, const float* k, const float* v,
                             const int* qpos, const int* kpos, const AttnShape& sh);
void attention_backward_flash(cudaStream_t s, Workspace& ws, float* dq, float* dk, float* dv, const float* dout,
                              const float* o, const float* lse, const float* q, const float* k, const float* v,
                              const int* qpos, const int* kpos, const AttnShape& sh);

// topk.cu: Backend::topk_indices (0 <= k <= n checked by the caller).
void topk_indices(cudaStream_t s, Workspace& ws, int32_t* out_idx, const float* scores, int n, int k);

// reduce.cu: these return host values, so they wait for the stream.
double softmax_xent(cudaStream_t s, Workspace& ws, float* logits, const int32_t* targets, int n, int V, float scale);
double sum_squares(cudaStream_t s, Workspace& ws, const float* x, int64_t n);
int64_t first_non_finite(cudaStream_t s, Workspace& ws, const float* x, int64_t n);

}  // namespace mor::kern::cuda
