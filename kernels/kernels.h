// The numeric primitives of mor-dist: one interface, one implementation per
// backend (kernels/cpu now; kernels/cuda implements the same signatures on
// device pointers). Everything is fp32, row-major, plain pointers: the caller
// owns all memory. "Accumulate" (+=) versus "write" (=) is stated per output,
// because gradients of shared parameters are summed over recursions.
#pragma once
#include <cstdint>
#include <vector>

namespace mor::kern {

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
void gemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha,
          const float* A, int lda, const float* B, int ldb, float beta,
          float* C, int ldc);

// Linear layer y[n,out] = x[n,in] W[out,in]^T (no bias anywhere in the model).
void linear_forward(float* y, const float* x, const float* W, int n, int in, int out);
// Two linear layers of one input (k and v, gate and up): y1 = x W1^T, y2 = x W2^T, run side by side.
void linear_forward_pair(float* y1, const float* W1, int out1, float* y2, const float* W2, int out2,
                         const float* x, int n, int in);
// dx[n,in] (+)= dy W  (accumulate if accumulate_dx) ; dW[out,in] += dy^T x.
void linear_backward(float* dx, float* dW, const float* dy, const float* x,
                     const float* W, int n, int in, int out, bool accumulate_dx);

// ---- RMSNorm ----------------------------------------------------------------
// y = x * rstd * w with rstd = 1/sqrt(mean(x^2)+eps), per row of d; rstd[n] saved.
void rmsnorm_forward(float* y, float* rstd, const float* x, const float* w, int n, int d, float eps);
// dx[n,d] = dres + (gradient through the norm), dw[d] += ...; dres may be dx itself (accumulate)
// or null (dx is written). A separate dres is the residual branch's gradient: no copy first.
void rmsnorm_backward(float* dx, const float* dres, float* dw, const float* dy, const float* x,
                      const float* w, const float* rstd, int n, int d);

// ---- RoPE (non-interleaved rotate_half) --------------------------------------
// cos/sin table for positions 0..max_pos-1, [max_pos, head_dim/2] each.
struct RopeTable {
  int head_dim = 0, max_pos = 0;
  std::vector<float> cos, sin;
  RopeTable() = default;
  RopeTable(int head_dim, int max_pos, double theta);
};
// In place on x[n, n_heads, head_dim]; pos[n] absolute positions.
void rope_forward(float* x, const int* pos, int n, int n_heads, const RopeTable& t);
// In place: turns dL/d(rotated) into dL/d(unrotated) (the inverse rotation).
void rope_backward(float* dx, const int* pos, int n, int n_heads, const RopeTable& t);

// ---- SwiGLU -------------------------------------------------------------------
// h = silu(g) * u, elementwise over n values.
void swiglu_forward(float* h, const float* g, const float* u, int64_t n);
// dg = dh * u * silu'(g), du = dh * silu(g) (both written).
void swiglu_backward(float* dg, float* du, const float* dh, const float* g, const float* u, int64_t n);

// ---- Causal attention over one sequence's (possibly compacted) token set ------
// q[nq, H, hd], k/v[nk, Hkv, hd]; query i sees key j iff kpos[j] <= qpos[i]; both
// position lists ascending. GQA: query head h uses kv head h / (H / Hkv).
// o[nq, H, hd] written; lse[H, nq] (log-sum-exp of the scaled scores) saved for backward.
struct AttnShape { int nq, nk, n_heads, n_kv_heads, head_dim; };
void attention_forward(float* o, float* lse, const float* q, const float* k, const float* v,
                       const int* qpos, const int* kpos, const AttnShape& s);
// dq written; dk, dv accumulated (+=) — shared keys/values collect gradient from many recursions.
void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* o,
                        const float* lse, const float* q, const float* k, const float* v,
                        const int* qpos, const int* kpos, const AttnShape& s);

// ---- Softmax cross-entropy over the vocabulary ---------------------------------
// For each row of logits[n, V]: loss_i = logsumexp - logit[target]. Returns the
// sum of losses; logits are overwritten by scale * (softmax - onehot), i.e. the
// gradient of scale * sum(losses).
double softmax_xent(float* logits, const int32_t* targets, int n, int V, float scale);

// ---- AdamW on a contiguous shard ----------------------------------------------
struct AdamWParams {
  float lr, beta1, beta2, eps, weight_decay;
  int64_t step;
  float grad_scale = 1.f;  // gradient clipping folded into the update (saves a pass over the gradients)
};
// Decoupled weight decay applied where decay_mask is null or 1 (per element block
// is handled by the caller: pass weight_decay = 0 for excluded tensors).
void adamw_update(float* param, const float* grad, float* m, float* v, int64_t n, const AdamWParams& p);

// ---- Small helpers ---------------------------------------------------------------
double sum_squares(const float* x, int64_t n);       // in double, fixed reduction order
void scale_inplace(float* x, float s, int64_t n);
void add_inplace(float* y, const float* x, int64_t n);  // y += x

}  // namespace mor::kern
