// Autoregressive decoding with recursion-wise KV caching (docs/MODEL.md "Decoding"). A Decoder
// runs a Model's parameters forward on the new tokens of several sequences at once, each sequence
// in a slot with its own KV cache (model/kv_cache.h):
//   - a step takes, per sequence, a chunk of new tokens (a whole prompt when it starts, then one
//     token per step), at the positions that follow what its cache holds;
//   - every linear layer runs once over the rows of all sequences that reach it; attention runs
//     per sequence, its queries against that sequence's cache of the same layer visit;
//   - depth-wise batching: recursion r of the shared block runs once over every new token, of any
//     sequence, that continues to recursion r;
//   - routing is causal: token-choice picks a token's depth from its own first block input as in
//     training; expert-choice sends a candidate on to recursion r iff sigmoid(score) >= threshold
//     (all candidates where training's capacity keeps all of them). Tests can force the depths.
// Only the Backend interface touches tensor data, so it runs wherever the model does.
#pragma once
#include <cstdint>
#include <vector>

#include "kernels/backend.h"
#include "model/kv_cache.h"
#include "model/model.h"

namespace mor {

// The new tokens of one sequence in one decode step.
struct DecodeChunk {
  int slot = 0;                   // the sequence's slot (its KV cache), 0..slots-1, each at most once per step
  std::vector<int32_t> tokens;    // at positions length(slot), length(slot) + 1, ...
  std::vector<int> forced_depth;  // tests: recursions per token (as Model::forward_logits); empty: routed
};

// What a step gives back per chunk.
struct DecodeOut {
  std::vector<float> logits;  // [1, V]: after the chunk's last token; [n, V] for every token with all_logits
  std::vector<int> depth;     // recursions each new token went through
};

class Decoder {
 public:
  // threshold: expert-choice's decode-time rule (--mor.infer_threshold).
  Decoder(Model& m, int slots, float threshold = 0.5f);

  // Runs every chunk's tokens through the model and appends them to their slots' caches. Throws
  // std::invalid_argument (nothing run) for a bad slot, an empty chunk, an id outside the
  // vocabulary, a sequence past seq_len positions or a forced depth out of range.
  std::vector<DecodeOut> step(const std::vector<DecodeChunk>& chunks, bool all_logits = false);

  void reset(int slot);  // the slot's sequence ended: its cache empties
  int length(int slot) const { return len_[slot]; }
  const KvCache& cache(int slot) const { return caches_[slot]; }
  int slots() const { return (int)caches_.size(); }
  const ModelConfig& config() const { return c_; }

 private:
  // A subset of this step's new rows, grouped by chunk (rows of chunk c: [off[c], off[c+1]),
  // ascending positions); idx is each row's row in the step's hidden state h_.
  struct Rows {
    std::vector<int> off{0}, pos, idx;
    kern::Buffer<int32_t> dev_pos, dev_idx;
    int n() const { return (int)pos.size(); }
    void clear() { off.assign(1, 0), pos.clear(), idx.clear(); }
    void upload(kern::Backend& be);
  };
  void check(const std::vector<DecodeChunk>& chunks) const;
  int visit(int r, int j) const { return (L_.prelude >= 0 ? 1 : 0) + r * L_.block_size + j; }
  void layer(int visit, int kv_visit, int ul, const Rows& set, const float* x, float* y);
  void block(int r, const Rows& set, const float* x, float* y);
  void unique_layer(int visit, int ul);
  void section_none();
  void section_expert();
  void section_token();
  void head(bool all_logits, std::vector<DecodeOut>& out);

  Model& m_;
  const ModelConfig& c_;
  const ParamLayout& L_;
  kern::Backend& be_;
  const float threshold_;
  kern::RopeTable rope_;
  std::vector<KvCache> caches_;
  std::vector<int> len_;
  // This step: each chunk's slot, every row as one set, forced depths (-1: routed) and depths.
  std::vector<int> slot_of_;
  Rows all_, rows_[2];  // rows_: the subsets routing picks, reused every step
  std::vector<int> forced_, depth_;
  // Backend work buffers (reused every step).
  kern::Buffer<int32_t> ids_, moves_;
  kern::Buffer<float> h_, xcur_, xin_, y_, ping_, pong_, scores_, gate_;
  kern::Buffer<float> a_, rstd_, q_, k_, v_, o_, lse_, hmid_, mlp_in_, g_, u_, act_, logits_;
};

}  // namespace mor
