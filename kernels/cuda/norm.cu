// RMSNorm forward and backward: one block per row for the row reductions; dw (a sum over rows) in
// two fixed passes (per chunk of rows, then over the chunks in order) so that it is deterministic.
#include "kernels/cuda/bf16_bits.h"
#include "kernels/cuda/device_common.cuh"
#include "kernels/cuda/kernels.h"

namespace mor::kern::cuda {

namespace {

constexpr int kDwRows = 64;  // rows per partial of dw

// Out: float, or uint16_t for bf16 bits (rounded from the same fp32 value).
__device__ inline void put(float* y, float v) { *y = v; }
__device__ inline void put(uint16_t* y, float v) { *y = bf16_bits_rne(__float_as_uint(v)); }

template <class Out>
__global__ void k_rmsnorm_forward(Out* y, float* rstd, const float* x, const float* w, int d, float eps) {
  __shared__ float red[32];
  const int64_t i = blockIdx.x;
  const float* xi = x + i * d;
  float ss = 0.f;
  for (int j = threadIdx.x; j < d; j += blockDim.x) ss += xi[j] * xi[j];
  ss = block_sum(ss, red);
  const float r = 1.f / sqrtf(ss / d + eps);
  if (threadIdx.x == 0) rstd[i] = r;
  Out* yi = y + i * d;
  for (int j = threadIdx.x; j < d; j += blockDim.x) put(yi + j, xi[j] * r * w[j]);
}

// dx = dres + r*w*dy - r^3/d * x * sum(w*dy*x). dres may alias dx: each element is read before
// the same thread writes it.
__global__ void k_rmsnorm_backward_dx(float* dx, const float* dres, const float* dy, const float* x, const float* w,
                                      const float* rstd, int d) {
  __shared__ float red[32];
  const int64_t i = blockIdx.x;
  const float *xi = x + i * d, *gi = dy + i * d;
  float dot = 0.f;
  for (int j = threadIdx.x; j < d; j += blockDim.x) dot += w[j] * gi[j] * xi[j];
  dot = block_sum(dot, red);
  const float r = rstd[i], c = r * r * r * dot / d;
  float* dxi = dx + i * d;
  const float* ri = dres ? dres + i * d : nullptr;
  for (int j = threadIdx.x; j < d; j += blockDim.x) {
    const float g = r * w[j] * gi[j] - c * xi[j];
    dxi[j] = ri ? ri[j] + g : g;
  }
}

// part[c][j] = sum over rows of chunk c (in order) of dy*x*r; one thread per column.
__global__ void k_rmsnorm_dw_partial(float* part, const float* dy, const float* x, const float* rstd, int n, int d) {
  const int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= d) return;
  const int c = blockIdx.y, i0 = c * kDwRows, i1 = min(n, i0 + kDwRows);
  float acc = 0.f;
  for (int i = i0; i < i1; ++i) acc += dy[(int64_t)i * d + j] * x[(int64_t)i * d + j] * rstd[i];
  part[(int64_t)c * d + j] = acc;
}
__global__ void k_rmsnorm_dw_sum(float* dw, const float* part, int chunks, int d) {
  const int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= d) return;
  float acc = 0.f;
  for (int c = 0; c < chunks; ++c) acc += part[(int64_t)c * d + j];
  dw[j] += acc;
}

}  // namespace

void rmsnorm_forward(cudaStream_t s, float* y, float* rstd, const float* x, const float* w, int n, int d, float eps) {
  if (n == 0) return;
  k_rmsnorm_forward<<<n, row_block_threads(d, 256), 0, s>>>(y, rstd, x, w, d, eps);
  CUDA_CHECK_LAUNCH();
}
void rmsnorm_forward_bf16(cudaStream_t s, bf16* y, float* rstd, const float* x, const float* w, int n, int d,
                          float eps) {
  if (n == 0) return;
  k_rmsnorm_forward<<<n, row_block_threads(d, 256), 0, s>>>(reinterpret_cast<uint16_t*>(y), rstd, x, w, d, eps);
  CUDA_CHECK_LAUNCH();
}

void rmsnorm_backward(cudaStream_t s, Workspace& ws, float* dx, const float* dres, float* dw, const float* dy,
                      const float* x, const float* w, const float* rstd, int n, int d) {
  if (n == 0 || d == 0) return;
  // dw first: dx may be written over dres, but dw reads only dy, x and rstd.
  const int chunks = (n + kDwRows - 1) / kDwRows;
  if (chunks > 65535) throw std::invalid_argument("rmsnorm_backward: too many rows (" + std::to_string(n) + ")");
  float* part = static_cast<float*>(ws.get((size_t)chunks * d * sizeof(float)));
  const int t = 128, colblocks = (d + t - 1) / t;
  k_rmsnorm_dw_partial<<<dim3(colblocks, chunks), t, 0, s>>>(part, dy, x, rstd, n, d);
  CUDA_CHECK_LAUNCH();
  k_rmsnorm_dw_sum<<<colblocks, t, 0, s>>>(dw, part, chunks, d);
  CUDA_CHECK_LAUNCH();
  k_rmsnorm_backward_dx<<<n, row_block_threads(d, 256), 0, s>>>(dx, dres, dy, x, w, rstd, d);
  CUDA_CHECK_LAUNCH();
}

}  // namespace mor::kern::cuda
