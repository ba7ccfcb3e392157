// kern::DType helpers declared in kernels/dtype.h.
#include <stdexcept>
#include <string>

#include "kernels/dtype.h"

namespace mor::kern {

size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32:
      return 4;
    case DType::BF16:
      return 2;
    case DType::F64:
      return 8;
    case DType::I32:
      return 4;
    case DType::I64:
      return 8;
    case DType::U64:
      return 8;
  }
  throw std::invalid_argument("kern::dtype_size: unknown dtype " + std::to_string((int)t));
}

const char* to_string(DType t) {
  switch (t) {
    case DType::F32:
      return "fp32";
    case DType::BF16:
      return "bf16";
    case DType::F64:
      return "fp64";
    case DType::I32:
      return "int32";
    case DType::I64:
      return "int64";
    case DType::U64:
      return "uint64";
  }
  return "unknown";
}

}  // namespace mor::kern
