// Backend::topk_indices on the device (expert-choice routing's selection): a stable descending
// radix sort of the scores with their indices as payload (CUB), so equal scores keep the lower
// index first, exactly the host's order (kernels/cpu/topk.cpp); then the first k indices sorted
// ascending. -0 is made +0 first (the host compares them equal; a radix sort would not). All
// scratch (sort buffers and CUB's temporary storage) comes from the backend's workspace.
#include <algorithm>
#include <cub/device/device_radix_sort.cuh>

#include "kernels/cuda/device_common.cuh"
#include "kernels/cuda/kernels.h"

namespace mor::kern::cuda {

namespace {

__global__ void k_topk_keys(float* keys, int32_t* idx, const float* scores, int n) {
  MOR_GRID_STRIDE(i, n) {
    const float x = scores[i];
    keys[i] = x == 0.f ? 0.f : x;
    idx[i] = (int32_t)i;
  }
}

size_t align256(size_t b) { return (b + 255) / 256 * 256; }

}  // namespace

void topk_indices(cudaStream_t s, Workspace& ws, int32_t* out_idx, const float* scores, int n, int k) {
  if (k == 0) return;
  size_t pair_bytes = 0, key_bytes = 0;
  CUDA_CHECK(cub::DeviceRadixSort::SortPairsDescending(nullptr, pair_bytes, (const float*)nullptr, (float*)nullptr,
                                                       (const int32_t*)nullptr, (int32_t*)nullptr, n, 0, 32, s));
  CUDA_CHECK(
      cub::DeviceRadixSort::SortKeys(nullptr, key_bytes, (const int32_t*)nullptr, (int32_t*)nullptr, k, 0, 32, s));
  // One workspace block: keys in and out, indices in and out, then CUB's temporary storage.
  const size_t vec = align256((size_t)n * 4);
  char* base = static_cast<char*>(ws.get(4 * vec + std::max(pair_bytes, key_bytes)));
  float* keys_in = reinterpret_cast<float*>(base);
  float* keys_out = reinterpret_cast<float*>(base + vec);
  int32_t* idx_in = reinterpret_cast<int32_t*>(base + 2 * vec);
  int32_t* idx_out = reinterpret_cast<int32_t*>(base + 3 * vec);
  void* temp = base + 4 * vec;
  const Launch1D l = launch_1d(n);
  k_topk_keys<<<l.blocks, l.threads, 0, s>>>(keys_in, idx_in, scores, n);
  CUDA_CHECK_LAUNCH();
  // Stable: among equal scores the lower index (earlier payload) stays first.
  CUDA_CHECK(
      cub::DeviceRadixSort::SortPairsDescending(temp, pair_bytes, keys_in, keys_out, idx_in, idx_out, n, 0, 32, s));
  CUDA_CHECK(cub::DeviceRadixSort::SortKeys(temp, key_bytes, idx_out, out_idx, k, 0, 32, s));
}

}  // namespace mor::kern::cuda
