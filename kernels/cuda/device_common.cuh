// Device helpers shared by the kernel files (internal to kernels/cuda).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/host_helpers.h"

namespace mor::kern::cuda {

// Grid-stride loop index over [0, n) in int64 (n may exceed 2^31).
#define MOR_GRID_STRIDE(i, n)                                                                                     \
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, mor_stride_ = (int64_t)gridDim.x * blockDim.x; \
       i < (n); i += mor_stride_)

template <class T>
__device__ inline T warp_sum(T v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  return v;
}
__device__ inline float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_down_sync(0xffffffffu, v, o));
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024) in a fixed order: the same bits on
// every run. Every thread gets the result. `red` is shared scratch of 32 elements; the call
// synchronises the block, so it may be reused right after.
template <class T>
__device__ inline T block_sum(T v, T* red) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();  // red may still be read from an earlier call
  if (lane == 0) red[warp] = v;
  __syncthreads();
  T t = lane < nw ? red[lane] : T(0);
  if (warp == 0) t = warp_sum(t);
  if (threadIdx.x == 0) red[0] = t;
  __syncthreads();
  return red[0];
}
__device__ inline float block_max(float v, float* red) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) red[warp] = v;
  __syncthreads();
  float t = lane < nw ? red[lane] : -INFINITY;
  if (warp == 0) t = warp_max(t);
  if (threadIdx.x == 0) red[0] = t;
  __syncthreads();
  return red[0];
}

inline dim3 grid_of(const Launch1D& l) { return dim3(l.blocks); }

}  // namespace mor::kern::cuda
