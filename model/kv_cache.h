// The recursion-wise KV cache of one sequence (docs/MODEL.md "Decoding"). Per unrolled layer
// visit (Model's visit numbering: the unique first layer, then recursion r's block layer j, then
// the unique last layer) it holds the keys (after RoPE) and values of exactly the tokens that went
// through that visit, with their absolute positions, in position order: a token that left after
// d recursions has rows in the visits of recursions 0..d-1 only. With kv_mode = share, the visits
// of recursions >= 1 hold nothing; their queries read recursion 0's rows.
// All rows live in the backend's memory; only the row counts are host data.
#pragma once
#include <cstdint>
#include <vector>

#include "kernels/backend.h"
#include "model/config.h"

namespace mor {

// One visit's rows: k, v [cap, n_kv_heads * head_dim], pos [cap]; the first n are held.
struct KvRows {
  kern::Buffer<float> k, v;
  kern::Buffer<int32_t> pos;
  int n = 0;
};

class KvCache {
 public:
  KvCache(kern::Backend& be, const ModelConfig& c);
  // Appends n rows (backend pointers: k, v [n, KVd], pos [n]) to visit `visit`. Positions must
  // follow the rows already held (ascending); the storage grows by doubling.
  void append(int visit, const float* k, const float* v, const int32_t* pos, int n);
  const KvRows& rows(int visit) const { return visits_[visit]; }
  void clear();  // every visit empty (the storage is kept for the next sequence)

  int64_t rows_held() const;  // over all visits
  // Bytes the rows held take: keys, values and positions.
  int64_t bytes() const;
  // Bytes of a vanilla cache of the same depth over `tokens` tokens: every token's keys and values
  // in every one of the n_layers unrolled layers (no positions needed).
  int64_t vanilla_bytes(int64_t tokens) const;

 private:
  kern::Backend& be_;
  int kvd_ = 0, n_layers_ = 0;
  std::vector<KvRows> visits_;
};

}  // namespace mor
