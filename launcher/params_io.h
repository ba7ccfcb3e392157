// Model parameters <-> named tensors (.mort files, checkpoints later).
#pragma once
#include <string>
#include <vector>

#include "io/ckpt/tensor_file.h"
#include "model/model.h"

namespace mor {

std::vector<io::NamedTensor> export_params(const Model& m, const std::vector<float>& arena);
std::vector<io::NamedTensor> export_params(const Model& m, const kern::Buffer<float>& arena);  // copied to the host
// Copies every parameter from `ts`; throws naming `source` and the tensor when
// one is missing or has another shape.
void import_params(Model& m, const std::vector<io::NamedTensor>& ts, const std::string& source);

}  // namespace mor
