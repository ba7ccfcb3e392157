// fp32 -> bf16 rounding on the bits, shared by the CUDA kernels (device) and the host unit tests:
// the same function as kern::float_to_bf16 (kernels/dtype.h), so both backends give the same bits.
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define MOR_HOST_DEVICE __host__ __device__
#else
#define MOR_HOST_DEVICE
#endif

namespace mor::kern::cuda {

// Round to nearest, ties to even; a NaN stays a quiet NaN (its sign and upper payload kept), values
// beyond bf16's range become inf (the carry runs into the exponent).
MOR_HOST_DEVICE inline uint16_t bf16_bits_rne(uint32_t u) {
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return (uint16_t)(u >> 16);
}

}  // namespace mor::kern::cuda
