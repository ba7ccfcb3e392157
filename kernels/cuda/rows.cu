// Row operations: embedding gather and scatter-add, copy_rows, row_dots.
// embedding_backward is deterministic without atomics: a stable CUB radix sort of (id, i) groups
// equal ids with their rows still in order of i, then one block per run of an id adds the run's
// rows to its table row in that order (the CPU's order: dtable[id] += dout[i] for i ascending).
#include <cub/device/device_radix_sort.cuh>

#include "kernels/cuda/device_common.cuh"
#include "kernels/cuda/kernels.h"

namespace mor::kern::cuda {

namespace {

__global__ void k_embedding_forward(float* out, const float* table, const int32_t* ids, int64_t total, int D) {
  MOR_GRID_STRIDE(t, total) {
    const int64_t i = t / D, j = t % D;
    out[t] = table[(int64_t)ids[i] * D + j];
  }
}
__global__ void k_iota(int32_t* v, int n) { MOR_GRID_STRIDE(i, n) v[i] = (int32_t)i; }
// Block b handles sorted position b when it starts a run of equal ids: threads over the columns,
// rows of the run added in order.
__global__ void k_embedding_runs(float* dtable, const float* dout, const int32_t* sorted_ids, const int32_t* order,
                                 int n, int D) {
  const int b = blockIdx.x;
  const int32_t id = sorted_ids[b];
  if (b > 0 && sorted_ids[b - 1] == id) return;
  int e = b + 1;
  while (e < n && sorted_ids[e] == id) ++e;
  float* row = dtable + (int64_t)id * D;
  for (int j = threadIdx.x; j < D; j += blockDim.x) {
    float acc = row[j];
    for (int r = b; r < e; ++r) acc += dout[(int64_t)order[r] * D + j];
    row[j] = acc;
  }
}
template <bool kDstRows, bool kSrcRows, bool kScale, bool kAcc>
__global__ void k_copy_rows(float* dst, const int32_t* dst_rows, const float* src, const int32_t* src_rows,
                            const float* scale, int64_t total, int D) {
  MOR_GRID_STRIDE(t, total) {
    const int64_t i = t / D, j = t % D;
    const int64_t dr = kDstRows ? dst_rows[i] : i, sr = kSrcRows ? src_rows[i] : i;
    float v = src[sr * D + j];
    if (kScale) v *= scale[i];
    float& d = dst[dr * D + j];
    d = kAcc ? d + v : v;
  }
}
// One thread per row, the columns summed in order (the contract's order).
__global__ void k_row_dots(float* out, const float* a, const int32_t* a_rows, const float* b, const int32_t* b_rows,
                           int n, int D) {
  MOR_GRID_STRIDE(i, n) {
    const float* x = a + (int64_t)(a_rows ? a_rows[i] : i) * D;
    const float* y = b + (int64_t)(b_rows ? b_rows[i] : i) * D;
    float s = 0.f;
    for (int j = 0; j < D; ++j) s += x[j] * y[j];
    out[i] = s;
  }
}

template <bool kDstRows, bool kSrcRows>
void launch_copy_rows(cudaStream_t s, const Launch1D& l, float* dst, const int32_t* dr, const float* src,
                      const int32_t* sr, const float* scale, int64_t total, int D, bool acc) {
  if (scale && acc)
    k_copy_rows<kDstRows, kSrcRows, true, true><<<l.blocks, l.threads, 0, s>>>(dst, dr, src, sr, scale, total, D);
  else if (scale)
    k_copy_rows<kDstRows, kSrcRows, true, false><<<l.blocks, l.threads, 0, s>>>(dst, dr, src, sr, scale, total, D);
  else if (acc)
    k_copy_rows<kDstRows, kSrcRows, false, true><<<l.blocks, l.threads, 0, s>>>(dst, dr, src, sr, scale, total, D);
  else
    k_copy_rows<kDstRows, kSrcRows, false, false><<<l.blocks, l.threads, 0, s>>>(dst, dr, src, sr, scale, total, D);
}

size_t align256(size_t b) { return (b + 255) / 256 * 256; }

}  // namespace

void embedding_forward(cudaStream_t s, float* out, const float* table, const int32_t* ids, int n, int D) {
  const int64_t total = (int64_t)n * D;
  if (total == 0) return;
  const Launch1D l = launch_1d(total);
  k_embedding_forward<<<l.blocks, l.threads, 0, s>>>(out, table, ids, total, D);
  CUDA_CHECK_LAUNCH();
}

void embedding_backward(cudaStream_t s, Workspace& ws, float* dtable, const float* dout, const int32_t* ids, int n,
                        int D) {
  if (n == 0 || D == 0) return;
  size_t sort_bytes = 0;
  CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, sort_bytes, (const int32_t*)nullptr, (int32_t*)nullptr,
                                             (const int32_t*)nullptr, (int32_t*)nullptr, n, 0, 32, s));
  // One workspace block: sorted ids, the row order in and out, then CUB's temporary storage.
  const size_t vec = align256((size_t)n * sizeof(int32_t));
  char* base = static_cast<char*>(ws.get(3 * vec + sort_bytes));
  int32_t* sorted = reinterpret_cast<int32_t*>(base);
  int32_t* order_in = reinterpret_cast<int32_t*>(base + vec);
  int32_t* order = reinterpret_cast<int32_t*>(base + 2 * vec);
  const Launch1D l = launch_1d(n);
  k_iota<<<l.blocks, l.threads, 0, s>>>(order_in, n);
  CUDA_CHECK_LAUNCH();
  CUDA_CHECK(cub::DeviceRadixSort::SortPairs(base + 3 * vec, sort_bytes, ids, sorted, order_in, order, n, 0, 32, s));
  k_embedding_runs<<<n, row_block_threads(D, 256), 0, s>>>(dtable, dout, sorted, order, n, D);
  CUDA_CHECK_LAUNCH();
}

void copy_rows(cudaStream_t s, float* dst, const int32_t* dst_rows, const float* src, const int32_t* src_rows,
               const float* scale, int n, int D, bool accumulate) {
  const int64_t total = (int64_t)n * D;
  if (total == 0) return;
  const Launch1D l = launch_1d(total);
  if (dst_rows && src_rows)
    launch_copy_rows<true, true>(s, l, dst, dst_rows, src, src_rows, scale, total, D, accumulate);
  else if (dst_rows)
    launch_copy_rows<true, false>(s, l, dst, dst_rows, src, src_rows, scale, total, D, accumulate);
  else if (src_rows)
    launch_copy_rows<false, true>(s, l, dst, dst_rows, src, src_rows, scale, total, D, accumulate);
  else
    launch_copy_rows<false, false>(s, l, dst, dst_rows, src, src_rows, scale, total, D, accumulate);
  CUDA_CHECK_LAUNCH();
}

void row_dots(cudaStream_t s, float* out, const float* a, const int32_t* a_rows, const float* b, const int32_t* b_rows,
              int n, int D) {
  if (n == 0) return;
  const Launch1D l = launch_1d(n, 128);
  k_row_dots<<<l.blocks, l.threads, 0, s>>>(out, a, a_rows, b, b_rows, n, D);
  CUDA_CHECK_LAUNCH();
}

}  // namespace mor::kern::cuda
