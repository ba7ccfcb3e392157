// The `.mort` tensor file: named fp32/int32 tensors, little-endian, as described
// at the end of docs/MODEL.md. Used to exchange weights/gradients with the
// PyTorch reference and for `train.save_params` / `train.init_params`.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace mor::io {

struct NamedTensor {
  std::string name;
  std::vector<int64_t> shape;
  bool is_int = false;
  std::vector<float> f;    // when !is_int
  std::vector<int32_t> i;  // when is_int
  int64_t numel() const;
};

void write_mort(const std::string& path, const std::vector<NamedTensor>& tensors);
// Throws std::runtime_error naming the file on a bad magic, truncation or bad header.
std::vector<NamedTensor> read_mort(const std::string& path);
const NamedTensor* find_tensor(const std::vector<NamedTensor>& ts, const std::string& name);

}  // namespace mor::io
