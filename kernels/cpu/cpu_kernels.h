// The CPU implementation of the backend operations (kernels/backend.h says what each computes):
// OpenMP loops, OpenBLAS and oneDNN GEMMs, on host pointers. CpuBackend (kernels/cpu/cpu_backend.cpp)
// forwards to these; tests/test_kernels.cpp checks them directly, including the CPU-only choices
// below (thread count, GEMM library).
#pragma once
#include <cstdint>
#include <vector>

#include "kernels/backend.h"

namespace mor::kern::cpu {

using kern::AdamWParams;
using kern::AttnShape;
using kern::bf16;
using kern::RopeTable;

// ---- threads ---------------------------------------------------------------
// Sets the OpenMP (and OpenBLAS) thread count; 0 = all cores.
void set_num_threads(int n);
int num_threads();

// ---- GEMM ------------------------------------------------------------------
// Which library runs the GEMMs (process-wide; set before training):
//   Mixed    oneDNN for forward (x W^T) and input-gradient (dy W) GEMMs, OpenBLAS for
//            weight gradients (dy^T x): the fastest measured here (kernels/cpu/gemm.cpp)
//   OpenBLAS every GEMM on OpenBLAS
enum class GemmLib { Mixed, OpenBLAS };
void set_gemm_lib(GemmLib lib);
GemmLib gemm_lib();

// C[M,N] = alpha * op(A) op(B) + beta * C, row-major, op = transpose if flag.
void gemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda, const float* B,
          int ldb, float beta, float* C, int ldc);

// Linear layer y[n,out] = x[n,in] W[out,in]^T (no bias anywhere in the model).
void linear_forward(float* y, const float* x, const float* W, int n, int in, int out);
// Two linear layers of one input (k and v, gate and up): y1 = x W1^T, y2 = x W2^T, run side by side.
void linear_forward_pair(float* y1, const float* W1, int out1, float* y2, const float* W2, int out2, const float* x,
                         int n, int in);
// dx[n,in] (+)= dy W  (accumulate if accumulate_dx) ; dW[out,in] += dy^T x.
void linear_backward(float* dx, float* dW, const float* dy, const float* x, const float* W, int n, int in, int out,
                     bool accumulate_dx);

// ---- bf16 (Backend's bf16 operations) ----------------------------------------------
void cast_to_bf16(bf16* dst, const float* src, int64_t n);  // round to nearest even
void cast_to_f32(float* dst, const bf16* src, int64_t n);   // exact
void linear_forward_bf16(float* y, const bf16* x, const bf16* W, int n, int in, int out);
void linear_forward_pair_bf16(float* y1, const bf16* W1, int out1, float* y2, const bf16* W2, int out2, const bf16* x,
                              int n, int in);
void linear_backward_bf16(float* dx, float* dW, const bf16* dy, const bf16* x, const bf16* W, int n, int in, int out,
                          bool accumulate_dx);
// The CPU has bf16 dot-product instructions (AVX512-BF16 or AMX-BF16); without them oneDNN
// emulates bf16 GEMMs, slower than fp32.
bool fast_bf16();

// ---- RMSNorm ----------------------------------------------------------------
// y = x * rstd * w with rstd = 1/sqrt(mean(x^2)+eps), per row of d; rstd[n] saved.
void rmsnorm_forward(float* y, float* rstd, const float* x, const float* w, int n, int d, float eps);
void rmsnorm_forward_bf16(bf16* y, float* rstd, const float* x, const float* w, int n, int d, float eps);
// dx[n,d] = dres + (gradient through the norm), dw[d] += ...; dres may be dx itself (accumulate)
// or null (dx is written). A separate dres is the residual branch's gradient: no copy first.
void rmsnorm_backward(float* dx, const float* dres, float* dw, const float* dy, const float* x, const float* w,
                      const float* rstd, int n, int d);

// ---- RoPE (non-interleaved rotate_half) --------------------------------------
// In place on x[n, n_heads, head_dim]; pos[n] absolute positions.
void rope_forward(float* x, const int* pos, int n, int n_heads, const RopeTable& t);
// In place: turns dL/d(rotated) into dL/d(unrotated) (the inverse rotation).
void rope_backward(float* dx, const int* pos, int n, int n_heads, const RopeTable& t);

// ---- SwiGLU -------------------------------------------------------------------
// h = silu(g) * u, elementwise over n values.
void swiglu_forward(float* h, const float* g, const float* u, int64_t n);
void swiglu_forward_bf16(bf16* h, const float* g, const float* u, int64_t n);
// dg = dh * u * silu'(g), du = dh * silu(g) (both written).
void swiglu_backward(float* dg, float* du, const float* dh, const float* g, const float* u, int64_t n);
void swiglu_backward_bf16(bf16* dg, bf16* du, const float* dh, const float* g, const float* u, int64_t n);

// ---- Causal attention over one sequence's (possibly compacted) token set ------
// q[nq, H, hd], k/v[nk, Hkv, hd]; query i sees key j iff kpos[j] <= qpos[i]; both
// position lists ascending. GQA: query head h uses kv head h / (H / Hkv).
// o[nq, H, hd] written; lse[H, nq] (log-sum-exp of the scaled scores) saved for backward.
void attention_forward(float* o, float* lse, const float* q, const float* k, const float* v, const int* qpos,
                       const int* kpos, const AttnShape& s);
// dq written; dk, dv accumulated (+=) — shared keys/values collect gradient from many recursions.
void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* o, const float* lse,
                        const float* q, const float* k, const float* v, const int* qpos, const int* kpos,
                        const AttnShape& s);

// ---- Softmax cross-entropy over the vocabulary ---------------------------------
// For each row of logits[n, V]: loss_i = logsumexp - logit[target]. Returns the
// sum of losses; logits are overwritten by scale * (softmax - onehot), i.e. the
// gradient of scale * sum(losses).
double softmax_xent(float* logits, const int32_t* targets, int n, int V, float scale);
double softmax_xent_bf16(float* logits, bf16* dlogits16, const int32_t* targets, int n, int V, float scale);

// ---- AdamW on a contiguous shard ----------------------------------------------
// Decoupled weight decay on every element; the caller passes weight_decay = 0 for excluded tensors.
void adamw_update(float* param, const float* grad, float* m, float* v, int64_t n, const AdamWParams& p);
void adamw_update_bf16(float* param, bf16* param16, const float* grad, float* m, float* v, int64_t n,
                       const AdamWParams& p);

// ---- Small helpers ---------------------------------------------------------------
double sum_squares(const float* x, int64_t n);  // in double, fixed reduction order
void scale_inplace(float* x, float s, int64_t n);
void add_inplace(float* y, const float* x, int64_t n);  // y += x
int64_t first_non_finite(const float* x, int64_t n);

// ---- Rows (Backend::embedding_*, copy_rows, row_dots) --------------------------------
void embedding_forward(float* out, const float* table, const int32_t* ids, int n, int D);
void embedding_backward(float* dtable, const float* dout, const int32_t* ids, int n, int D);
void copy_rows(float* dst, const int32_t* dst_rows, const float* src, const int32_t* src_rows, const float* scale,
               int n, int D, bool accumulate);
void row_dots(float* out, const float* a, const int32_t* a_rows, const float* b, const int32_t* b_rows, int n, int D);

}  // namespace mor::kern::cpu
