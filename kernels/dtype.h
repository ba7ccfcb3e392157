// Element types and the execution context shared by the backend interface (kernels/backend.h)
// and the communicators (dist/communicator.h). Kept apart from backend.h so that code still on
// kernels/kernels.h (which defines some of backend.h's structs too) can include it.
#pragma once
#include <cstddef>
#include <cstdint>

namespace mor::kern {

// Element types of buffers and collectives. BF16 is the upper half of an IEEE fp32.
enum class DType : uint8_t { F32, BF16, F64, I32, I64, U64 };
size_t dtype_size(DType t);
const char* to_string(DType t);
template <class T>
constexpr DType dtype_of();
template <>
constexpr DType dtype_of<float>() {
  return DType::F32;
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
