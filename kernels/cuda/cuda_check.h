// Every CUDA runtime and cuBLAS call is checked: a failure throws std::runtime_error with the call,
// file:line and the library's error string (internal to kernels/cuda).
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace mor::kern::cuda {

[[noreturn]] inline void throw_cuda(cudaError_t e, const char* call, const char* file, int line) {
  throw std::runtime_error(std::string("CUDA error at ") + file + ":" + std::to_string(line) + ": " + call + ": " +
                           cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")");
}
[[noreturn]] inline void throw_cublas(cublasStatus_t s, const char* call, const char* file, int line) {
  throw std::runtime_error(std::string("cuBLAS error at ") + file + ":" + std::to_string(line) + ": " + call + ": " +
                           cublasGetStatusName(s) + " (" + cublasGetStatusString(s) + ")");
}

}  // namespace mor::kern::cuda

#define CUDA_CHECK(call)                                                                         \
  do {                                                                                           \
    const cudaError_t mor_e_ = (call);                                                           \
    if (mor_e_ != cudaSuccess) ::mor::kern::cuda::throw_cuda(mor_e_, #call, __FILE__, __LINE__); \
  } while (0)
#define CUBLAS_CHECK(call)                                                                                   \
  do {                                                                                                       \
    const cublasStatus_t mor_s_ = (call);                                                                    \
    if (mor_s_ != CUBLAS_STATUS_SUCCESS) ::mor::kern::cuda::throw_cublas(mor_s_, #call, __FILE__, __LINE__); \
  } while (0)
// After a kernel launch: a bad launch configuration shows up here, not at some later call.
#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())
