// The MoR decoder: embedding → unique first layer → recursion section (shared
// block × N_r with an optional router) → unique last layer → norm → tied head →
// cross-entropy (+ router losses). forward_backward() reads top to bottom as
// one training micro-step; every layer's backward is explicit (model/layer.cpp).
#pragma once
#include <cstdint>
#include <vector>

#include "kernels/kernels.h"
#include "model/config.h"
#include "model/layer.h"
#include "model/params.h"

namespace mor {

// Loss terms of one micro-batch, each already divided by the global batch, so
// summing over micro-batches and ranks gives the global-batch value.
struct LossParts {
  double ce = 0, aux = 0, ec_z = 0, bal = 0, z = 0;
  double total(const ModelConfig& c) const;
  LossParts& operator+=(const LossParts& o);
};

// Tokens per final depth (index d-1 for depth d), summed since the last reset.
struct RouterStats {
  std::vector<int64_t> tokens_at_depth;
  void reset(int n_rec) { tokens_at_depth.assign(n_rec, 0); }
};

// Called around every use of a parameter unit (ParamLayout::units), so a
// sharded runtime (dist/ShardedParams) can all-gather the unit just before and
// free it / reduce-scatter its gradient just after. need() precedes each use;
// done() follows it, with last_use = no further use in this pass.
struct UnitHooks {
  virtual ~UnitHooks() = default;
  virtual void need(int unit, bool backward) = 0;
  virtual void done(int unit, bool backward, bool last_use) = 0;
};

class Model {
 public:
  explicit Model(const ModelConfig& cfg);

  const ModelConfig cfg;
  const ParamLayout layout;
  std::vector<float> params;  // the parameter arena
  std::vector<float> grads;   // same layout; forward_backward accumulates into it
  RouterStats stats;
  double fwd_flops = 0;
  UnitHooks* hooks = nullptr;  // null: every parameter is always present (single process)  // forward FLOPs of the last step(): matmuls + attention + head

  void init(uint64_t seed) { init_params(params.data(), layout, cfg, seed); }
  void zero_grads();

  // tokens: [n_seq, T+1] windows (inputs 0..T-1, targets 1..T). Losses are
  // normalised by global_batch sequences. backward=false: evaluation only.
  LossParts step(const int32_t* tokens, int n_seq, int global_batch, bool backward);

  // Routing decisions of the last step, for tests: expert → S_r positions per
  // recursion ([n_seq * k_r]); token → depth per token ([n_seq * T]).
  std::vector<std::vector<int>> last_selected() const;
  std::vector<int> last_depths() const;

 private:
  struct ExpertRec {           // one expert-choice recursion
    TokenSet cand, sel;        // candidates S_{r-1} and selected S_r
    std::vector<float> xc;     // router input H[cand] (before this recursion's update)
    std::vector<float> s;      // router logits per candidate
    std::vector<int> sel_idx;  // candidate index of each selected row
    std::vector<float> y;      // block output per selected row
  };
  struct TokenRoute {          // token-choice state
    std::vector<float> x0, logits, q, lse, xcur;
    std::vector<int> choice;   // i_t per token
    std::vector<TokenSet> active;
    std::vector<std::vector<float>> y;  // block output per recursion
  };

  void need(int unit, bool bwd) { if (hooks && unit >= 0) hooks->need(unit, bwd); }
  void done(int unit, bool bwd, bool last) { if (hooks && unit >= 0) hooks->done(unit, bwd, last); }
  int visit_id(int r, int j) const { return (layout.prelude >= 0 ? 1 : 0) + r * layout.block_size + j; }
  LayerView pw(int u) { return layout.layer(params.data(), u, cfg); }
  LayerView gw(int u) { return layout.layer(grads.data(), u, cfg); }

  void run_visit(int visit, int u, const TokenSet& ts, const float* x, float* y, const LayerActs* kv_src);
  void back_visit(int visit, int u, const TokenSet& ts, const float* dy, float* dx, LayerActs* kv_src);
  // The shared block at recursion r on token set ts: y = Block_r(x), and its backward.
  void block_forward(int r, const TokenSet& ts, const float* x, float* y);
  void block_backward(int r, const TokenSet& ts, const float* dy, float* dx);
  const LayerActs* kv_source(int r, int j) const;

  void section_fixed_forward(int n_seq);
  void section_fixed_backward(int n_seq);
  void expert_forward(int n_seq, int global_batch, LossParts& loss);
  void expert_backward(int n_seq, int global_batch);
  void token_forward(int n_seq, int global_batch, LossParts& loss);
  void token_backward(int n_seq, int global_batch);
  double head(int n_seq, int global_batch, bool backward);

  kern::RopeTable rope_;
  std::vector<LayerActs> acts_;  // one per unrolled layer visit
  LayerScratch scratch_;
  TokenSet all_;                 // every token of the micro-batch
  std::vector<int32_t> inputs_, targets_;
  std::vector<float> hid_, dhid_;                // hidden state [N, D] and its gradient
  std::vector<float> pre_section_, post_section_;  // hidden entering/leaving the section
  std::vector<float> hn_, rstd_f_, dhn_, logits_;  // final norm + head
  std::vector<float> buf_a_, buf_b_, gbuf_a_, gbuf_b_;  // ping-pong for block chains
  std::vector<ExpertRec> erec_;
  TokenRoute tr_;
};

}  // namespace mor
