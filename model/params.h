// Parameter layout: every tensor of the model lives in one fp32 arena, in a
// fixed order (docs/MODEL.md "Order in the parameter arena"). Gradients and the
// AdamW moments use arenas of the same layout, so a tensor is "offset + shape"
// everywhere, and sharding (dist/) slices the same table.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/dtype.h"
#include "model/config.h"

namespace mor {

struct TensorInfo {
  std::string name;
  int64_t rows = 0, cols = 0;  // 1-D tensors have cols = 1 (norm weights: rows = d)
  int64_t offset = 0;          // in floats, into the arena
  bool decay = true;           // AdamW weight decay applies (norm weights excluded)
  bool is_1d = false;
  int64_t numel() const { return rows * cols; }
};

// Pointers to one unique layer's tensors inside an arena (params or grads).
struct LayerView {
  float *attn_norm, *wq, *wk, *wv, *wo, *mlp_norm, *wg, *wu, *wd;
};

// bf16 copies of one unique layer's matrices (--train.precision bf16): the GEMM operands.
// They live in a bf16 arena of the parameter arena's layout (same offsets); norm weights stay fp32.
struct LayerView16 {
  const kern::bf16 *wq, *wk, *wv, *wo, *wg, *wu, *wd;
};

// A group of tensors gathered and reduced together (FSDP "unit"): the embedding
// with the final norm; each unique layer used once; the shared recursion block
// (all B layers + routers) as ONE unit, so it is gathered once per N_r uses.
struct ParamUnit {
  std::string name;
  std::vector<int> tensors;  // indices into ParamLayout::tensors
};

// Which unique layers exist and how the unrolled depth maps onto them.
struct ParamLayout {
  std::vector<TensorInfo> tensors;
  int64_t total = 0;  // floats
  int n_unique_layers = 0;
  int prelude = -1, coda = -1;                     // unique-layer index of the unique first/last layer, or -1
  int block_first = 0;                             // unique index of shared layer 0
  int block_size = 0;                              // B
  int64_t embed = 0, final_norm = 0, routers = 0;  // offsets
  std::vector<int64_t> layer_offset;               // per unique layer, start of its tensors
  static constexpr int kEmbedUnit = 0;             // units[kEmbedUnit] = embedding + final norm
  std::vector<ParamUnit> units;
  std::vector<int> unit_of_layer;  // per unique layer
  int shared_unit = -1;            // the shared block's unit (cyclic, N_r > 1), else -1

  explicit ParamLayout(const ModelConfig& c);
  // ul: a unique layer's index (0..n_unique_layers-1), not a unit's.
  LayerView layer(float* arena, int ul, const ModelConfig& c) const;
  const TensorInfo* find(const std::string& name) const;
  // Unique layer used by unrolled layer l of the recursion section (fixed-depth path).
  int section_layer(int l, const ModelConfig& c) const;

  // Parameter counts for the banner: all, per kind.
  int64_t count_embedding() const;
  int64_t count_shared() const;  // the shared block, counted once
  int64_t count_unique_layers() const;
  int64_t count_other() const;  // final norm + routers
  int64_t layer_numel_at(int ul) const;
};

// Analytic parameter count from the config alone (independent of ParamLayout).
int64_t analytic_param_count(const ModelConfig& c);

// N(0, init_std) for matrices, 1 for norm weights; deterministic in seed.
void init_params(float* arena, const ParamLayout& lay, const ModelConfig& c, uint64_t seed);

}  // namespace mor
