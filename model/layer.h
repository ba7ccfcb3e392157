// One decoder layer (pre-norm attention + SwiGLU MLP), forward and backward,
// on a set of token rows that may be a compacted subset of each sequence
// (the tokens still active at a recursion). docs/MODEL.md "Layer".
#pragma once
#include <vector>

#include "kernels/kernels.h"
#include "model/config.h"
#include "model/params.h"

namespace mor {

// Token rows across a micro-batch: sequence b owns rows [off[b], off[b+1]);
// pos[row] is the absolute position (ascending within a sequence).
struct TokenSet {
  std::vector<int> off{0};
  std::vector<int> pos;
  int n() const { return (int)pos.size(); }
  int n_seq() const { return (int)off.size() - 1; }
  static TokenSet all(int n_seq, int T);
  // Row of the full hidden state [n_seq * T, D] that row i of this set is.
  int full_row(int i, int b, int T) const { return b * T + pos[i]; }
};

// What a layer visit keeps for its backward pass.
struct LayerActs {
  std::vector<float> x, a, rstd1, q, k, v, o, lse, h, m, rstd2, g, u, act;
  // Gradient w.r.t. this visit's (rotated) k and v. Accumulated by later
  // recursions that share this visit's keys/values (kv_mode = share).
  std::vector<float> dk, dv;
};

// Backward temporaries, reused across visits.
struct LayerScratch {
  std::vector<float> dh, dact, dg, du, dm, dao, dq, dk, dv, da;
};

// y = Layer(x) on the rows of ts. kv_src: a recursion-0 visit of the same block
// layer over all tokens whose keys/values this visit attends to instead of its own.
void layer_forward(const LayerView& w, const ModelConfig& c, const kern::RopeTable& rope, const TokenSet& ts,
                   const float* x, float* y, LayerActs& acts, const LayerActs* kv_src);

// dx = dL/dx (written) from dy = dL/dy; parameter gradients accumulate into gw.
void layer_backward(const LayerView& w, const LayerView& gw, const ModelConfig& c, const kern::RopeTable& rope,
                    const TokenSet& ts, const float* dy, float* dx, LayerActs& acts, LayerActs* kv_src,
                    LayerScratch& s);

}  // namespace mor
