// Routers: how the recursion section runs. A router decides which tokens go through each
// recursion r of the shared block and with which gate value, adds its loss terms and counts
// tokens per depth. One router per file, behind this interface:
//   router_none.cpp    no router: every token through every unrolled layer (fixed depth)
//   router_expert.cpp  expert-choice: each recursion keeps the top-k of the previous one's tokens
//   router_token.cpp   token-choice: one decision per token, up front, of its number of recursions
// Adding a router type: a file implementing Router, and its line in make_router() (router.cpp).
//
// Routing decisions are host control flow (they size the next operations), so a router reads the
// per-token router scores back to the host (copy_to_host: one or N_r floats per token), decides
// there, and hands the backend row lists and per-row gates. Everything D floats wide (gathers,
// gated updates, their gradients) runs on the backend.
#pragma once
#include <memory>
#include <string_view>
#include <vector>

#include "model/config.h"
#include "model/layer.h"
#include "model/params.h"

namespace mor {

// A loss term: the total loss adds coeff * value; value is already divided by the global batch.
struct LossTerm {
  const char* name;
  double coeff;
  double value = 0;
};

// Loss of one micro-batch: cross-entropy plus the router's named terms.
struct LossParts {
  double ce = 0;
  std::vector<LossTerm> terms;  // the router's, in the order of Router::loss_terms()
  double total() const;
  double term(std::string_view name) const;   // 0 when the router has no such term
  LossParts& operator+=(const LossParts& o);  // term by term (both of one router)
};

// Tokens per final depth: index d counts the tokens that went through d recursions (0..N_r),
// summed since the last reset.
struct RouterStats {
  std::vector<int64_t> tokens_at_depth;  // [N_r + 1]: tokens that left after 0..N_r recursions
  // Expert-choice, per recursion r: the candidates scored, and those whose threshold decision
  // (sigmoid(s) >= 0.5, the causal decode-time rule) equals the top-k decision training made.
  std::vector<int64_t> candidates, threshold_agrees;
  // Expert-choice: how often the last recursion's top-k selected each window position [seq_len]
  // (for the dead-token ratio, docs/MODEL.md); sized by the first forward after reset().
  std::vector<int64_t> last_selected_at_pos;
  void reset(int depths) {  // depths = N_r + 1
    tokens_at_depth.assign(depths, 0);
    candidates.assign(depths - 1, 0);
    threshold_agrees.assign(depths - 1, 0);
    last_selected_at_pos.clear();
  }
};

// The model's layers as a router drives them (implemented by Model).
class BlockRunner {
 public:
  virtual ~BlockRunner() = default;
  // Parameter unit hooks (UnitHooks): a unit is needed before and done after each use.
  virtual void need(int unit, bool backward) = 0;
  virtual void done(int unit, bool backward, bool last_use) = 0;
  // The shared block at recursion r on the rows of ts: y = Block_r(x), and its backward (dx written).
  virtual void block_forward(int r, const TokenSet& ts, const float* x, float* y) = 0;
  virtual void block_backward(int r, const TokenSet& ts, const float* dy, float* dx) = 0;
  // Unrolled layer l of the section (0..section_layers-1) on every token.
  virtual void section_layer_forward(int l, const float* x, float* y) = 0;
  virtual void section_layer_backward(int l, const float* dy, float* dx) = 0;
};

// What a router works on for one micro-batch.
struct Section {
  Backend& be;
  const ModelConfig& cfg;
  const ParamLayout& layout;
  BlockRunner& run;
  const TokenSet& all;  // every token of the micro-batch
  Buffer<float>& hid;   // hidden state [n_seq * T, D]: the section's input, replaced by its output
  Buffer<float>& dhid;  // backward: dL/d(output) in, dL/d(input) out
  const float* w;       // the router weights (ParamLayout::routers) and their gradient
  float* gw;
  RouterStats& stats;
  int n_seq, global_batch;  // losses are normalised by global_batch sequences
  // Routing forced from outside (tests comparing the decode path with this forward): per token
  // [n_seq * T], the number of recursions it goes through (expert: 0..N_r, nested sets S_r =
  // {t : depth_t > r}; token: 1..N_r). Null: the router decides. Gates still come from the scores.
  const int* forced_depth = nullptr;
};

class Router {
 public:
  virtual ~Router() = default;
  // The loss terms this router adds, with their coefficients (values 0).
  virtual std::vector<LossTerm> loss_terms() const = 0;
  // The section's forward; adds to terms (laid out as loss_terms()) and to s.stats.
  virtual void forward(Section& s, std::vector<LossTerm>& terms) = 0;
  // Its backward (after forward on the same micro-batch); router weight gradients go to s.gw.
  virtual void backward(Section& s) = 0;
  // Routing decisions of the last forward, for tests: the positions that went through each
  // recursion ([n_seq * k_r] each), or each token's depth.
  virtual std::vector<std::vector<int>> last_selected() const { return {}; }
  virtual std::vector<int> last_depths() const { return {}; }
};

std::unique_ptr<Router> make_router(const ModelConfig& c, Backend& be);

// The registered routers (router_*.cpp).
std::unique_ptr<Router> make_router_none(Backend& be);
std::unique_ptr<Router> make_router_expert(const ModelConfig& c, Backend& be);
std::unique_ptr<Router> make_router_token(const ModelConfig& c, Backend& be);

}  // namespace mor
