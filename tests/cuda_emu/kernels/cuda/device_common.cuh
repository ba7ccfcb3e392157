// Stands in for kernels/cuda/device_common.cuh under the CPU emulation (cuda_runtime.h here): the
// same helpers, over the emulated shuffles; CUDA_CHECK evaluates the call (the emulation's calls
// succeed or throw).
#pragma once
#include <cuda_runtime.h>

#include "kernels/cuda/host_helpers.h"

#define CUDA_CHECK(call) (void)(call)
#define CUDA_CHECK_LAUNCH() \
  do {                      \
  } while (0)

namespace mor::kern::cuda {

template <class T>
inline T warp_sum(T v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  return v;
}

}  // namespace mor::kern::cuda
