// Elementwise kernels: bf16 casts, SwiGLU, vector helpers, AdamW, RoPE. One thread per element in
// a grid-stride loop; fp32 arithmetic with expf (not __expf), to stay within the conformance
// suite's fp32 tolerances.
#include "kernels/cuda/bf16_bits.h"
#include "kernels/cuda/device_common.cuh"
#include "kernels/cuda/kernels.h"

namespace mor::kern::cuda {

namespace {

__global__ void k_cast_to_bf16(uint16_t* dst, const float* src, int64_t n) {
  MOR_GRID_STRIDE(i, n) dst[i] = bf16_bits_rne(__float_as_uint(src[i]));
}
__global__ void k_cast_to_f32(float* dst, const uint16_t* src, int64_t n) {
  MOR_GRID_STRIDE(i, n) dst[i] = __uint_as_float((uint32_t)src[i] << 16);
}
__global__ void k_swiglu_forward(float* h, const float* g, const float* u, int64_t n) {
  MOR_GRID_STRIDE(i, n) h[i] = g[i] / (1.f + expf(-g[i])) * u[i];
}
__global__ void k_swiglu_forward_bf16(uint16_t* h, const float* g, const float* u, int64_t n) {
  MOR_GRID_STRIDE(i, n) h[i] = bf16_bits_rne(__float_as_uint(g[i] / (1.f + expf(-g[i])) * u[i]));
}
__global__ void k_swiglu_backward(float* dg, float* du, const float* dh, const float* g, const float* u, int64_t n) {
  MOR_GRID_STRIDE(i, n) {
    const float sig = 1.f / (1.f + expf(-g[i])), silu = g[i] * sig;
    const float d = dh[i];  // read before the writes: dg or du may alias dh
    du[i] = d * silu;
    dg[i] = d * u[i] * sig * (1.f + g[i] * (1.f - sig));
  }
}
__global__ void k_scale(float* x, float a, int64_t n) { MOR_GRID_STRIDE(i, n) x[i] *= a; }
__global__ void k_add(float* y, const float* x, int64_t n) { MOR_GRID_STRIDE(i, n) y[i] += x[i]; }
__global__ void k_adamw(float* param, const float* grad, float* m, float* v, int64_t n, AdamWConsts c) {
  MOR_GRID_STRIDE(i, n) {
    const float g = grad[i] * c.grad_scale;
    const float mi = c.beta1 * m[i] + (1.f - c.beta1) * g;
    const float vi = c.beta2 * v[i] + (1.f - c.beta2) * g * g;
    m[i] = mi;
    v[i] = vi;
    param[i] = param[i] * c.decay - c.step_size * mi / (sqrtf(vi) * c.inv_sqrt_bc2 + c.eps);
  }
}
// One thread per (token, head, pair j < half): the pair (j, j + half) rotates by pos * theta_j.
__global__ void k_rope(float* x, const int* pos, int64_t n_pairs, int n_heads, int half, const float* cos_t,
                       const float* sin_t, float sign) {
  MOR_GRID_STRIDE(t, n_pairs) {
    const int j = (int)(t % half);
    const int64_t row = t / half;  // token * n_heads + head
    const int64_t i = row / n_heads;
    const int64_t tab = (int64_t)pos[i] * half + j;
    const float c = cos_t[tab], s = sign * sin_t[tab];
    float* v = x + row * 2 * half;
    const float a = v[j], b = v[j + half];
    v[j] = a * c - b * s;
    v[j + half] = b * c + a * s;
  }
}

}  // namespace

void cast_to_bf16(cudaStream_t s, bf16* dst, const float* src, int64_t n) {
  const Launch1D l = launch_1d(n);
  k_cast_to_bf16<<<l.blocks, l.threads, 0, s>>>(reinterpret_cast<uint16_t*>(dst), src, n);
  CUDA_CHECK_LAUNCH();
}
void cast_to_f32(cudaStream_t s, float* dst, const bf16* src, int64_t n) {
  const Launch1D l = launch_1d(n);
  k_cast_to_f32<<<l.blocks, l.threads, 0, s>>>(dst, reinterpret_cast<const uint16_t*>(src), n);
  CUDA_CHECK_LAUNCH();
}
void swiglu_forward(cudaStream_t s, float* h, const float* g, const float* u, int64_t n) {
  const Launch1D l = launch_1d(n);
  k_swiglu_forward<<<l.blocks, l.threads, 0, s>>>(h, g, u, n);
  CUDA_CHECK_LAUNCH();
}
void swiglu_forward_bf16(cudaStream_t s, bf16* h, const float* g, const float* u, int64_t n) {
  const Launch1D l = launch_1d(n);
  k_swiglu_forward_bf16<<<l.blocks, l.threads, 0, s>>>(reinterpret_cast<uint16_t*>(h), g, u, n);
  CUDA_CHECK_LAUNCH();
}
void swiglu_backward(cudaStream_t s, float* dg, float* du, const float* dh, const float* g, const float* u, int64_t n) {
  const Launch1D l = launch_1d(n);
  k_swiglu_backward<<<l.blocks, l.threads, 0, s>>>(dg, du, dh, g, u, n);
  CUDA_CHECK_LAUNCH();
}
void scale_inplace(cudaStream_t s, float* x, float a, int64_t n) {
  const Launch1D l = launch_1d(n);
  k_scale<<<l.blocks, l.threads, 0, s>>>(x, a, n);
  CUDA_CHECK_LAUNCH();
}
void add_inplace(cudaStream_t s, float* y, const float* x, int64_t n) {
  const Launch1D l = launch_1d(n);
  k_add<<<l.blocks, l.threads, 0, s>>>(y, x, n);
  CUDA_CHECK_LAUNCH();
}
void adamw_update(cudaStream_t s, float* param, const float* grad, float* m, float* v, int64_t n,
                  const AdamWConsts& c) {
  const Launch1D l = launch_1d(n);
  k_adamw<<<l.blocks, l.threads, 0, s>>>(param, grad, m, v, n, c);
  CUDA_CHECK_LAUNCH();
}
void rope_apply(cudaStream_t s, float* x, const int* pos, int n, int n_heads, int head_dim, const float* cos_t,
                const float* sin_t, float sign) {
  const int half = head_dim / 2;
  const int64_t pairs = (int64_t)n * n_heads * half;
  const Launch1D l = launch_1d(pairs);
  k_rope<<<l.blocks, l.threads, 0, s>>>(x, pos, pairs, n_heads, half, cos_t, sin_t, sign);
  CUDA_CHECK_LAUNCH();
}

}  // namespace mor::kern::cuda
