// Reductions whose results go to the host: softmax cross-entropy (the loss), sum_squares (the
// gradient norm) and first_non_finite. All deterministic: fixed block shapes, fixed summation
// orders, no floating-point atomics (first_non_finite's atomicMin is order-independent).
#include <climits>
#include <vector>

#include "kernels/cuda/device_common.cuh"
#include "kernels/cuda/kernels.h"

namespace mor::kern::cuda {

namespace {

// One block per row: max, sum of exp (fp32, as the CPU), the row's loss in double, then the
// gradient scale * (softmax - onehot) written over the logits.
__global__ void k_softmax_xent(float* logits, const int32_t* targets, double* row_loss, int V, float scale) {
  __shared__ float red[32];
  const int64_t i = blockIdx.x;
  float* l = logits + i * V;
  const int tgt = targets[i];
  float mx = -INFINITY;
  for (int j = threadIdx.x; j < V; j += blockDim.x) mx = fmaxf(mx, l[j]);
  mx = block_max(mx, red);
  float sum = 0.f;
  for (int j = threadIdx.x; j < V; j += blockDim.x) sum += expf(l[j] - mx);
  sum = block_sum(sum, red);
  const float target_logit = l[tgt];
  __syncthreads();  // every thread has read l[tgt] before any overwrites it
  if (threadIdx.x == 0) row_loss[i] = log((double)sum) + mx - target_logit;
  const float inv = scale / sum;
  for (int j = threadIdx.x; j < V; j += blockDim.x) l[j] = expf(l[j] - mx) * inv - (j == tgt ? scale : 0.f);
}

// Pass 1: block b sums the squares of its fixed chunk (threads stride the chunk, then a fixed tree).
__global__ void k_sumsq_partial(double* part, const float* x, int64_t n, int64_t chunk) {
  __shared__ double red[32];
  const int64_t b0 = (int64_t)blockIdx.x * chunk, b1 = min(n, b0 + chunk);
  double acc = 0;
  for (int64_t i = b0 + threadIdx.x; i < b1; i += blockDim.x) acc += (double)x[i] * x[i];
  acc = block_sum(acc, red);
  if (threadIdx.x == 0) part[blockIdx.x] = acc;
}
// Pass 2: one block over the partials.
__global__ void k_sum_partials(double* out, const double* part, int64_t m) {
  __shared__ double red[32];
  double acc = 0;
  for (int64_t i = threadIdx.x; i < m; i += blockDim.x) acc += part[i];
  acc = block_sum(acc, red);
  if (threadIdx.x == 0) *out = acc;
}

__global__ void k_first_non_finite(unsigned long long* first, const float* x, int64_t n) {
  MOR_GRID_STRIDE(i, n) {
    if (!isfinite(x[i])) atomicMin(first, (unsigned long long)i);
  }
}

}  // namespace

double softmax_xent(cudaStream_t s, Workspace& ws, float* logits, const int32_t* targets, int n, int V, float scale) {
  if (n == 0) return 0;
  double* row_loss = static_cast<double*>(ws.get((size_t)n * sizeof(double)));
  k_softmax_xent<<<n, row_block_threads(V, 1024), 0, s>>>(logits, targets, row_loss, V, scale);
  CUDA_CHECK_LAUNCH();
  std::vector<double> h((size_t)n);
  CUDA_CHECK(cudaMemcpyAsync(h.data(), row_loss, h.size() * sizeof(double), cudaMemcpyDeviceToHost, s));
  CUDA_CHECK(cudaStreamSynchronize(s));
  double total = 0;
  for (double r : h) total += r;  // in order of the rows, as the CPU backend
  return total;
}

double sum_squares(cudaStream_t s, Workspace& ws, const float* x, int64_t n) {
  if (n == 0) return 0;
  const ReducePlan p = reduce_plan(n);
  if (p.blocks > INT32_MAX) throw std::invalid_argument("sum_squares: too many elements");
  double* part = static_cast<double*>(ws.get((size_t)(p.blocks + 1) * sizeof(double)));
  k_sumsq_partial<<<(unsigned)p.blocks, 256, 0, s>>>(part + 1, x, n, p.chunk);
  CUDA_CHECK_LAUNCH();
  k_sum_partials<<<1, 1024, 0, s>>>(part, part + 1, p.blocks);
  CUDA_CHECK_LAUNCH();
  double r = 0;
  CUDA_CHECK(cudaMemcpyAsync(&r, part, sizeof r, cudaMemcpyDeviceToHost, s));
  CUDA_CHECK(cudaStreamSynchronize(s));
  return r;
}

int64_t first_non_finite(cudaStream_t s, Workspace& ws, const float* x, int64_t n) {
  if (n == 0) return -1;
  auto* first = static_cast<unsigned long long*>(ws.get(sizeof(unsigned long long)));
  CUDA_CHECK(cudaMemsetAsync(first, 0xff, sizeof *first, s));  // ULLONG_MAX: none found
  const Launch1D l = launch_1d(n);
  k_first_non_finite<<<l.blocks, l.threads, 0, s>>>(first, x, n);
  CUDA_CHECK_LAUNCH();
  unsigned long long r = 0;
  CUDA_CHECK(cudaMemcpyAsync(&r, first, sizeof r, cudaMemcpyDeviceToHost, s));
  CUDA_CHECK(cudaStreamSynchronize(s));
  return r == ULLONG_MAX ? -1 : (int64_t)r;
}

}  // namespace mor::kern::cuda
