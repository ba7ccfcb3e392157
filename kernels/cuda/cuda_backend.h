// The CUDA backend (kernels/cuda): kern::Backend on device memory and one CUDA stream. This header
// is plain C++ (no CUDA headers), so the engine and the launcher include it without nvcc.
// Built only with -DMOR_CUDA=ON.
#pragma once
#include <cstddef>
#include <memory>
#include <string>

#include "kernels/backend.h"

namespace mor::kern {

// CUDA devices visible to this process; 0 (never an exception) when there is no driver or no GPU,
// with the runtime's reason in *why.
int cuda_device_count(std::string* why = nullptr);

struct CudaDeviceInfo {
  std::string name;
  size_t total_bytes = 0;
  int cc_major = 0, cc_minor = 0;  // compute capability
};
CudaDeviceInfo cuda_device_info(int device);  // throws std::runtime_error

// Choices of the CUDA backend made at construction (the launcher's --train.attention_kernel).
struct CudaOptions {
  // Attention: Simple (kernels/cuda/attention.cu: one block per query, any head_dim up to 512) or
  // Flash (kernels/cuda/attention_flash.cu: fused FlashAttention-2-style tiles; used for head_dim
  // 64 and 128, Simple for every other head_dim). Same contract and outputs within fp32 rounding.
  enum class Attention { Simple, Flash } attention = Attention::Simple;
};

// A backend on `device`: made current (cudaSetDevice) for the calling thread, which is the thread
// that must call the backend (the engine drives it from one thread). Throws std::runtime_error
// when the device cannot be used.
std::unique_ptr<Backend> make_cuda_backend(int device, const CudaOptions& options = {});

}  // namespace mor::kern
