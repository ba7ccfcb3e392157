// The one rule that splits a tensor's rows over W parts: rank r of W holds rows [r * B, (r + 1) * B)
// with B = ceil(rows / W), clipped to the tensor (the last parts may be short or empty). Parameter
// shards (ShardedParams), the optimizer's state and the checkpoint's shard files all use it, so a
// same-world-size resume reads each rank's shard file straight into place. A checkpoint records the
// map it was written with, and readers use that record, not this rule.
#pragma once
#include <algorithm>
#include <cstdint>

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

}  // namespace mor::dist
