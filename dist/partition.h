// The one rule that splits a tensor's rows over W parts: rank r of W holds rows [r * B, (r + 1) * B)
// with B = ceil(rows / W), clipped to the tensor (the last parts may be short or empty). Parameter
// shards (ShardedParams), the optimizer's state and the checkpoint's shard files all use it, so a
// same-world-size resume reads each rank's shard file straight into place. A checkpoint records the
// map it was written with, and readers use that record, not this rule.
#pragma once
#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

namespace mor::dist {

struct RowBlock {
  int64_t begin = 0, end = 0;  // rows [begin, end)
  int64_t size() const { return end - begin; }
};

// Rows per part (the block size B above).
inline int64_t rows_per_part(int64_t rows, int parts) { return (rows + parts - 1) / parts; }

inline RowBlock row_block(int64_t rows, int part, int parts) {
  const int64_t b = rows_per_part(rows, parts);
  return {std::min(rows, (int64_t)part * b), std::min(rows, ((int64_t)part + 1) * b)};
}

// One tensor of the training state as this rank holds it (after Megatron's ShardedTensor): what it
// is, independent of the parallel layout (name, global shape), and this rank's part of it (rows
// [row0, row1), the FSDP unit that gathers it, and where those rows are in each state group).
struct ShardedTensor {
  std::string name;
  int64_t rows = 0, cols = 0;  // global shape; 1-D tensors have cols = 1
  bool is_1d = false;
  int64_t row0 = 0, row1 = 0;  // this rank's rows
  int unit = -1;               // the parameter unit (ParamLayout::units) it belongs to; -1 = none
  std::vector<float*> data;    // this rank's rows in each group of the LocalState (null: not held)
  int64_t local_numel() const { return (row1 - row0) * cols; }
};

// Everything a rank holds of the training state: named groups of arrays of the same layout
// ("param", then the optimizer's states, e.g. AdamW's "exp_avg", "exp_avg_sq") and every tensor's
// rows in each. Checkpoints store exactly this, group by group.
struct LocalState {
  std::vector<std::string> groups;
  std::vector<ShardedTensor> tensors;
};

}  // namespace mor::dist
