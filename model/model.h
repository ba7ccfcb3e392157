// The MoR decoder: embedding → unique first layer → recursion section (shared
// block × N_r, run by the router: model/router.h) → unique last layer → norm →
// tied head → cross-entropy (+ the router's loss terms). step() reads top to
// bottom as one training micro-step; every layer's backward is explicit
// (model/layer.cpp). All tensors live in the backend's memory.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "kernels/backend.h"
#include "model/config.h"
#include "model/layer.h"
#include "model/params.h"
#include "model/router.h"

namespace mor {

// Called around every use of a parameter unit (ParamLayout::units), so a
// sharded runtime (dist/ShardedParams) can all-gather the unit just before and
// free it / reduce-scatter its gradient just after. need() precedes each use;
// done() follows it, with last_use = no further use in this pass.
struct UnitHooks {
  virtual ~UnitHooks() = default;
  virtual void need(int unit, bool backward) = 0;
  virtual void done(int unit, bool backward, bool last_use) = 0;
};

class Model : private BlockRunner {
 public:
  // trainable = false: no gradient arena (generation needs none; it is as large as the
  // parameters), and step() with backward throws.
  Model(const ModelConfig& cfg, Backend& be, bool trainable = true);

  const ModelConfig cfg;
  const ParamLayout layout;
  Backend& be;
  Buffer<float> params;  // the parameter arena
  Buffer<float> grads;   // same layout; step() accumulates into it (empty when not trainable)
  RouterStats stats;
  double fwd_flops = 0;        // forward FLOPs of the last step(): matmuls + attention + head
  UnitHooks* hooks = nullptr;  // null: every parameter is always present (single process)
  // Activation recomputation (--train.recompute layer): a layer visit keeps only its input from
  // forward and runs its forward again in backward, into one shared set of activations. Results
  // are bitwise those of keeping everything. Exception: with kv_mode = share, recursion 0's
  // block-layer visits keep everything (later recursions read their keys/values and add to their
  // key/value gradients before their own backward runs).
  bool recompute = false;
  // Mixed precision (--train.precision bf16): the linear layers and the LM head run on bf16
  // operands with fp32 accumulation; the parameters stay fp32 (the masters) and each layer's
  // matrices are rounded to bf16 once per step (and once per all-gather of a sharded unit) into
  // a bf16 arena of the same layout. Attention's products take bf16 operands too (AttnShape::bf16);
  // norms, RoPE, softmax, the loss, the routers and every gradient stay fp32. docs/MODEL.md "Precision".
  bool bf16 = false;

  void init(uint64_t seed);  // seeded init (docs/MODEL.md), identical on every backend
  void zero_grads() { grads.zero(); }

  // tokens: [n_seq, T+1] windows (inputs 0..T-1, targets 1..T), host memory. Losses are
  // normalised by global_batch sequences. backward=false: evaluation only.
  LossParts step(const int32_t* tokens, int n_seq, int global_batch, bool backward);

  // Forward only: the logits [n_seq * T, V] (host) of input ids [n_seq, T] (no targets). For tests
  // and tools at small sizes (the logits exist whole). forced_depth: per token [n_seq * T], the
  // recursions it goes through (router.h Section::forced_depth; every depth N_r without a router),
  // or null: the router decides as in training. Router statistics count this pass too.
  std::vector<float> forward_logits(const int32_t* inputs, int n_seq, const int* forced_depth = nullptr);

  // bf16 runs where the optimizer updates this model's whole parameter arena (one process): the
  // arena's bf16 copy, for AdamW to write as it updates (AdamW::update's params16); else null.
  // After that update, bf16_copy_written() lets the next forward use the copy instead of rounding
  // the parameters again (any other forward rounds them first, as they may have changed).
  kern::bf16* bf16_copy_for_update();
  void bf16_copy_written();

  // Bytes of activation storage held now (the per-visit activations and the backward scratch).
  int64_t activation_bytes() const;

  // Routing decisions of the last step, for tests: expert → S_r positions per
  // recursion ([n_seq * k_r]); token → depth per token ([n_seq * T]).
  std::vector<std::vector<int>> last_selected() const { return router_->last_selected(); }
  std::vector<int> last_depths() const { return router_->last_depths(); }

 private:
  // BlockRunner: what the router drives.
  void need(int unit, bool bwd) override {
    if (hooks && unit >= 0) hooks->need(unit, bwd);
  }
  void done(int unit, bool bwd, bool last) override {
    if (hooks && unit >= 0) {
      hooks->done(unit, bwd, last);
      if (last) drop16(unit);  // released: its bf16 copy goes too, and is stale when gathered again
    }
  }
  void block_forward(int r, const TokenSet& ts, const float* x, float* y) override;
  void block_backward(int r, const TokenSet& ts, const float* dy, float* dx) override;
  void section_layer_forward(int l, const float* x, float* y) override;
  void section_layer_backward(int l, const float* dy, float* dx) override;

  int visit_id(int r, int j) const { return (layout.prelude >= 0 ? 1 : 0) + r * layout.block_size + j; }
  LayerView pw(int ul) { return layout.layer(params.data(), ul, cfg); }
  LayerView gw(int ul) { return layout.layer(grads.data(), ul, cfg); }
  LayerView16 pw16(int ul);  // bf16 matrices of unique layer ul (bf16 runs), rounded when stale
  const kern::bf16* embed16();
  void drop16(int unit);
  LayerEnv env() { return {be, cfg, rope_, all_.dev_pos.data(), bf16, &tmp16_}; }
  void run_visit(int visit, int ul, const TokenSet& ts, const float* x, float* y, const LayerActs* kv_src);
  void back_visit(int visit, int ul, const TokenSet& ts, const float* dy, float* dx, LayerActs* kv_src);
  const LayerActs* kv_source(int r, int j) const;
  bool keeps_all(int visit) const;  // recompute never drops this visit's activations
  void unique_layer_forward(int ul, int visit);
  void unique_layer_backward(int ul, int visit);
  void forward(int n_seq, int global_batch, const int* forced_depth, std::vector<LossTerm>& terms);
  void final_norm(int N);
  double head(int n_seq, int global_batch, bool backward);
  Section section(int n_seq, int global_batch);

  kern::RopeTable rope_;
  std::unique_ptr<Router> router_;
  std::vector<LayerActs> acts_;  // one per unrolled layer visit (with recompute: only x, mostly)
  LayerActs recomputed_;         // recompute: the activations of the visit being computed
  Buffer<float> recomputed_y_;   // recompute: the (discarded) output of a forward run again
  LayerScratch scratch_;
  TokenSet all_;  // every token of the micro-batch
  Buffer<int32_t> inputs_, targets_;
  Buffer<float> hid_, dhid_;                       // hidden state [N, D] and its gradient
  Buffer<float> hn_, rstd_f_, dhn_, logits_;       // final norm + head
  Buffer<float> buf_a_, buf_b_, gbuf_a_, gbuf_b_;  // ping-pong for layer chains
  // bf16 runs: the parameter arena rounded to bf16 (filled layer by layer when used), which
  // ranges are current (per unique layer; the embedding), the layers' scratch buffer and the
  // final norm's output in bf16 (the head's GEMM operand).
  Buffer<kern::bf16> params16_;
  std::vector<char> fresh16_;
  bool embed_fresh16_ = false;
  bool copy16_written_ = false;  // the optimizer wrote the whole copy after its update
  Buffer<kern::bf16> tmp16_, hn16_;
};

}  // namespace mor
