// One decoder layer (pre-norm attention + SwiGLU MLP), forward and backward,
// on a set of token rows that may be a compacted subset of each sequence
// (the tokens still active at a recursion). docs/MODEL.md "Layer".
// All tensor data lives in the backend's memory; this file only sequences backend operations.
#pragma once
#include <vector>

#include "kernels/backend.h"
#include "model/config.h"
#include "model/params.h"

namespace mor {

using kern::Backend;
using kern::Buffer;

// Token rows across a micro-batch: sequence b owns rows [off[b], off[b+1]); pos[row] is the
// absolute position (ascending within a sequence). off and pos are host control data (they size
// the operations); upload() mirrors pos and each row's row in the full hidden state [n_seq * T, D]
// (b * T + pos) into the backend for the operations that index by them.
struct TokenSet {
  std::vector<int> off{0};
  std::vector<int> pos;
  Buffer<int32_t> dev_pos, dev_rows;
  int n() const { return (int)pos.size(); }
  int n_seq() const { return (int)off.size() - 1; }
  static TokenSet all(Backend& be, int n_seq, int T);
  // Row of the full hidden state that row i (of sequence b) of this set is.
  int full_row(int i, int b, int T) const { return b * T + pos[i]; }
  void upload(Backend& be, int T);
  TokenSet copy(Backend& be, int T) const;
};

// What a layer visit keeps for its backward pass. bf16 runs keep the inputs of the linear layers
// other than x and o (a, m, act: each is only ever a GEMM operand) in bf16 alone (a16, m16,
// act16), and o in both (attention's backward reads it in fp32, wo's GEMM in bf16); everything
// else (x, h, q, k, v, g, u, the norms' rstd, attention's lse) stays fp32.
struct LayerActs {
  Buffer<float> x, a, rstd1, q, k, v, o, lse, h, m, rstd2, g, u, act;
  Buffer<kern::bf16> a16, o16, m16, act16;
  // Gradient w.r.t. this visit's (rotated) k and v. Accumulated by later
  // recursions that share this visit's keys/values (kv_mode = share).
  Buffer<float> dk, dv;
  explicit LayerActs(Backend& be);
};

// Backward temporaries, reused across visits.
struct LayerScratch {
  Buffer<float> dh, dact, dg, du, dm, dao, dq, da;
  Buffer<kern::bf16> dg16, du16;  // bf16 runs: the SwiGLU gradients as the GEMMs' operands
  explicit LayerScratch(Backend& be);
};

// What every layer visit shares: the backend, the config, the RoPE table, positions 0..T-1
// in backend memory (the key positions of a kv-share source, which covers every token), and
// in bf16 runs a scratch buffer (a gradient rounded to bf16 for the GEMMs).
struct LayerEnv {
  Backend& be;
  const ModelConfig& c;
  const kern::RopeTable& rope;
  const int* positions;  // 0..seq_len-1
  bool bf16 = false;     // linear layers on bf16 operands (w16 below), fp32 accumulation
  Buffer<kern::bf16>* tmp16 = nullptr;
};

// y = Layer(x) on the rows of ts. kv_src: a recursion-0 visit of the same block
// layer over all tokens whose keys/values this visit attends to instead of its own.
// w16: the layer's bf16 matrices when env.bf16 (else unused).
void layer_forward(const LayerEnv& env, const LayerView& w, const LayerView16& w16, const TokenSet& ts, const float* x,
                   float* y, LayerActs& acts, const LayerActs* kv_src);

// dx = dL/dx (written) from dy = dL/dy; parameter gradients accumulate into gw.
void layer_backward(const LayerEnv& env, const LayerView& w, const LayerView16& w16, const LayerView& gw,
                    const TokenSet& ts, const float* dy, float* dx, LayerActs& acts, LayerActs* kv_src,
                    LayerScratch& s);

}  // namespace mor
