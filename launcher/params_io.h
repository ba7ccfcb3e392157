// Model parameters <-> named tensors (.mort files, checkpoints later).
#pragma once
#include <string>
#include <vector>

#include "io/ckpt/checkpoint.h"
#include "io/ckpt/tensor_file.h"
#include "model/model.h"

namespace mor {

std::vector<io::NamedTensor> export_params(const Model& m, const std::vector<float>& arena);
std::vector<io::NamedTensor> export_params(const Model& m, const kern::Buffer<float>& arena);  // copied to the host
// Copies every parameter from `ts`; throws naming `source` and the tensor when
// one is missing or has another shape.
void import_params(Model& m, const std::vector<io::NamedTensor>& ts, const std::string& source);

// An HDF5 checkpoint given as a step directory or as a root (its newest, as --resume auto takes
// it; a note saying which is logged). Throws when `src` is neither.
std::string checkpoint_dir(const std::string& src);
// Every row of every tensor of `layout` from checkpoint `dir` (index `idx`, written on any number
// of ranks) into the host arena `params`: shard files checked present and verified first, NaN/inf
// refused (ckpt::NonFiniteError); the optimizer's states are not read. Logs where they came from.
void load_checkpoint_params(const std::string& dir, const ckpt::Index& idx, const ParamLayout& layout, float* params);
// The same into a backend's parameter arena: read in place on a host-addressable backend (the CPU),
// else into host memory first and then copied over (a GPU).
void load_checkpoint_params(const std::string& dir, const ckpt::Index& idx, const ParamLayout& layout,
                            kern::Buffer<float>& params);

}  // namespace mor
