// Element types and the execution context shared by the backend interface (kernels/backend.h)
// and the communicators (dist/communicator.h). Kept apart from backend.h so that code still on
// kernels/kernels.h (which defines some of backend.h's structs too) can include it.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace mor::kern {

// Element types of buffers and collectives. BF16 is the upper half of an IEEE fp32.
enum class DType : uint8_t { F32, BF16, F64, I32, I64, U64 };

// A bfloat16 value: the upper 16 bits of an IEEE fp32 (8 exponent bits, 7 mantissa bits). A
// distinct type, not a bare uint16_t, so that a Buffer<bf16> cannot be handed to an fp32 operation.
struct bf16 {
  uint16_t bits;
};
static_assert(sizeof(bf16) == 2);

inline float bf16_to_float(bf16 b) {
  const uint32_t u = (uint32_t)b.bits << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
// Round to nearest, ties to even (what the GEMM units and every framework do); a NaN stays a
// (quiet) NaN, values beyond bf16's range become inf.
inline bf16 float_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return {(uint16_t)((u >> 16) | 0x40)};
  u += 0x7fffu + ((u >> 16) & 1u);
  return {(uint16_t)(u >> 16)};
}

size_t dtype_size(DType t);
const char* to_string(DType t);
template <class T>
constexpr DType dtype_of();
template <>
constexpr DType dtype_of<float>() {
  return DType::F32;
}
template <>
constexpr DType dtype_of<bf16>() {
  return DType::BF16;
}
template <>
constexpr DType dtype_of<double>() {
  return DType::F64;
}
template <>
constexpr DType dtype_of<int32_t>() {
  return DType::I32;
}
template <>
constexpr DType dtype_of<int64_t>() {
  return DType::I64;
}
template <>
constexpr DType dtype_of<uint64_t>() {
  return DType::U64;
}

// Where a backend's work is queued: a stream on a GPU (`stream` is its cudaStream_t), nothing on
// the CPU (operations run when called, on the OpenMP thread team). Communicators take it so a
// device communicator (NCCL) orders its collectives after the kernels that produced the data.
struct Context {
  void* stream = nullptr;
};

}  // namespace mor::kern
