#include "model/layer.h"

#include <algorithm>
#include <numeric>

namespace mor {

TokenSet TokenSet::all(Backend& be, int n_seq, int T) {
  TokenSet ts;
  ts.off.resize(n_seq + 1);
  ts.pos.resize((size_t)n_seq * T);
  for (int b = 0; b <= n_seq; ++b) ts.off[b] = b * T;
  for (int b = 0; b < n_seq; ++b) std::iota(ts.pos.begin() + (size_t)b * T, ts.pos.begin() + (size_t)(b + 1) * T, 0);
  ts.upload(be, T);
  return ts;
}

void TokenSet::upload(Backend& be, int T) {
  std::vector<int32_t> rows(pos.size());
  for (int b = 0; b < n_seq(); ++b)
    for (int i = off[b]; i < off[b + 1]; ++i) rows[i] = full_row(i, b, T);
  dev_pos.bind(be);
  dev_rows.bind(be);
  dev_pos.from_host(pos.data(), n());
  dev_rows.from_host(rows);
}

TokenSet TokenSet::copy(Backend& be, int T) const {
  TokenSet t;
  t.off = off;
  t.pos = pos;
  t.upload(be, T);
  return t;
}

template <class... B>
static void bind_all(Backend& be, B&... bufs) {
  (bufs.bind(be), ...);
}
LayerActs::LayerActs(Backend& be) {
  bind_all(be, x, a, rstd1, q, k, v, o, lse, h, m, rstd2, g, u, act, dk, dv, a16, o16, m16, act16);
}
LayerScratch::LayerScratch(Backend& be) { bind_all(be, dh, dact, dg, du, dm, dao, dq, da, dg16, du16); }

namespace {
struct Dims {
  int D, F, H, Hkv, hd, Hd, KVd, T;
  explicit Dims(const ModelConfig& c)
      : D(c.d_model), F(c.d_ff), H(c.n_heads), Hkv(c.n_kv_heads), hd(c.head_dim()), Hd(c.n_heads * c.head_dim()),
        KVd(c.n_kv_heads * c.head_dim()), T(c.seq_len) {}
};

// The keys/values sequence b's queries attend to: its own rows of this visit,
// or (kv_mode = share) recursion 0's keys/values of all T tokens of sequence b.
struct KvView {
  const float *k, *v;
  float *dk, *dv;
  const int* kpos;
  int nk;
};
KvView kv_view(const LayerEnv& env, LayerActs& own, LayerActs* src, const TokenSet& ts, int b, const Dims& d) {
  const int r0 = ts.off[b];
  if (src) {
    const size_t o = (size_t)b * d.T * d.KVd;
    return {src->k.data() + o, src->v.data() + o, src->dk.data() + o, src->dv.data() + o, env.positions, d.T};
  }
  const size_t o = (size_t)r0 * d.KVd;
  return {own.k.data() + o,  own.v.data() + o,       own.dk.data() + o,
          own.dv.data() + o, ts.dev_pos.data() + r0, ts.off[b + 1] - r0};
}

// ---- the linear layers in the run's precision ------------------------------------------------
// An input of a linear layer as kept for backward: fp32 (f), or in bf16 runs its bf16 copy (h).
struct Operand {
  const float* f;
  const kern::bf16* h;
};

// A normalised input (a, m) or the SwiGLU output (act), which are only ever linear-layer inputs:
// fp32 into the activation that keeps it, or in bf16 runs straight into its bf16 copy, the only
// one kept (the backend rounds as it writes: no fp32 pass to cast).
Operand norm_operand(const LayerEnv& env, Buffer<float>& keep32, Buffer<kern::bf16>& keep16, float* rstd,
                     const float* x, const float* w, int n, int D) {
  if (env.bf16) {
    keep16.resize((int64_t)n * D);
    env.be.rmsnorm_forward_bf16(keep16.data(), rstd, x, w, n, D, env.c.rms_eps);
    return {nullptr, keep16.data()};
  }
  keep32.resize((int64_t)n * D);
  env.be.rmsnorm_forward(keep32.data(), rstd, x, w, n, D, env.c.rms_eps);
  return {keep32.data(), nullptr};
}
Operand swiglu_operand(const LayerEnv& env, Buffer<float>& keep32, Buffer<kern::bf16>& keep16, const float* g,
                       const float* u, int64_t n) {
  if (env.bf16) {
    keep16.resize(n);
    env.be.swiglu_forward_bf16(keep16.data(), g, u, n);
    return {nullptr, keep16.data()};
  }
  keep32.resize(n);
  env.be.swiglu_forward(keep32.data(), g, u, n);
  return {keep32.data(), nullptr};
}
// The attention output o as wo's input: fp32 (attention's backward reads it), plus a bf16 copy in
// bf16 runs.
Operand keep(const LayerEnv& env, const float* f, Buffer<kern::bf16>& keep16, int64_t n) {
  if (!env.bf16) return {f, nullptr};
  keep16.resize(n);
  env.be.cast_to_bf16(keep16.data(), f, n);
  return {f, keep16.data()};
}

void linear(const LayerEnv& env, float* y, Operand x, const float* W, const kern::bf16* W16, int n, int in, int out) {
  if (env.bf16)
    env.be.linear_forward_bf16(y, x.h, W16, n, in, out);
  else
    env.be.linear_forward(y, x.f, W, n, in, out);
}
void linear_pair(const LayerEnv& env, float* y1, const float* W1, const kern::bf16* W1h, float* y2, const float* W2,
                 const kern::bf16* W2h, int out, Operand x, int n, int in) {
  if (env.bf16)
    env.be.linear_forward_pair_bf16(y1, W1h, out, y2, W2h, out, x.h, n, in);
  else
    env.be.linear_forward_pair(y1, W1, out, y2, W2, out, x.f, n, in);
}
// dy arrives in fp32 (every gradient is computed in fp32); bf16 runs round it for the GEMMs
// (Operand: dy.h when its producer already wrote the bf16 copy, else it is rounded here).
void linear_back(const LayerEnv& env, float* dx, float* dW, Operand dy, Operand x, const float* W,
                 const kern::bf16* W16, int n, int in, int out, bool accumulate_dx) {
  if (!env.bf16) return env.be.linear_backward(dx, dW, dy.f, x.f, W, n, in, out, accumulate_dx);
  const kern::bf16* dy16 = dy.h;
  if (!dy16) {
    env.tmp16->resize((int64_t)n * out);
    env.be.cast_to_bf16(env.tmp16->data(), dy.f, (int64_t)n * out);
    dy16 = env.tmp16->data();
  }
  env.be.linear_backward_bf16(dx, dW, dy16, x.h, W16, n, in, out, accumulate_dx);
}
void linear_back(const LayerEnv& env, float* dx, float* dW, const float* dy, Operand x, const float* W,
                 const kern::bf16* W16, int n, int in, int out, bool accumulate_dx) {
  linear_back(env, dx, dW, Operand{dy, nullptr}, x, W, W16, n, in, out, accumulate_dx);
}
}  // namespace

void layer_forward(const LayerEnv& env, const LayerView& w, const LayerView16& w16, const TokenSet& ts, const float* x,
                   float* y, LayerActs& A, const LayerActs* kv_src) {
  Backend& be = env.be;
  const Dims d(env.c);
  const int n = ts.n();
  A.x.copy_from(x, (int64_t)n * d.D);
  A.rstd1.resize(n);
  A.q.resize((size_t)n * d.Hd);
  A.o.resize((size_t)n * d.Hd);
  A.lse.resize((size_t)n * d.H);
  A.h.resize((size_t)n * d.D);
  A.rstd2.resize(n);
  A.g.resize((size_t)n * d.F);
  A.u.resize((size_t)n * d.F);

  // Attention block.
  const Operand a = norm_operand(env, A.a, A.a16, A.rstd1.data(), x, w.attn_norm, n, d.D);
  linear(env, A.q.data(), a, w.wq, w16.wq, n, d.D, d.Hd);
  be.rope_forward(A.q.data(), ts.dev_pos.data(), n, d.H, env.rope);
  if (!kv_src) {
    A.k.resize((size_t)n * d.KVd);
    A.v.resize((size_t)n * d.KVd);
    linear_pair(env, A.k.data(), w.wk, w16.wk, A.v.data(), w.wv, w16.wv, d.KVd, a, n, d.D);
    be.rope_forward(A.k.data(), ts.dev_pos.data(), n, d.Hkv, env.rope);
    // Zeroed here: later recursions sharing these keys/values add to them
    // during backward before this visit's own backward runs.
    A.dk.assign_zero((int64_t)n * d.KVd);
    A.dv.assign_zero((int64_t)n * d.KVd);
  } else {
    A.k.resize(0);
    A.v.resize(0);
  }
  for (int b = 0; b < ts.n_seq(); ++b) {
    const int r0 = ts.off[b], nq = ts.off[b + 1] - r0;
    if (nq == 0) continue;
    const KvView kv = kv_view(env, A, const_cast<LayerActs*>(kv_src), ts, b, d);
    be.attention_forward(A.o.data() + (size_t)r0 * d.Hd, A.lse.data() + (size_t)r0 * d.H,
                         A.q.data() + (size_t)r0 * d.Hd, kv.k, kv.v, ts.dev_pos.data() + r0, kv.kpos,
                         {nq, kv.nk, d.H, d.Hkv, d.hd, env.bf16});
  }
  // h = x + o Wo^T
  const Operand o = keep(env, A.o.data(), A.o16, (int64_t)n * d.Hd);
  linear(env, A.h.data(), o, w.wo, w16.wo, n, d.Hd, d.D);
  be.add_inplace(A.h.data(), x, (int64_t)n * d.D);

  // MLP block.
  const Operand m = norm_operand(env, A.m, A.m16, A.rstd2.data(), A.h.data(), w.mlp_norm, n, d.D);
  linear_pair(env, A.g.data(), w.wg, w16.wg, A.u.data(), w.wu, w16.wu, d.F, m, n, d.D);
  const Operand act = swiglu_operand(env, A.act, A.act16, A.g.data(), A.u.data(), (int64_t)n * d.F);
  linear(env, y, act, w.wd, w16.wd, n, d.F, d.D);
  be.add_inplace(y, A.h.data(), (int64_t)n * d.D);
  if (env.bf16) {  // not kept in fp32 (see LayerActs); left from an earlier fp32 step otherwise
    A.a.reset();
    A.m.reset();
    A.act.reset();
  }
}

void layer_backward(const LayerEnv& env, const LayerView& w, const LayerView16& w16, const LayerView& gw,
                    const TokenSet& ts, const float* dy, float* dx, LayerActs& A, LayerActs* kv_src, LayerScratch& s) {
  Backend& be = env.be;
  const Dims d(env.c);
  const int n = ts.n();
  s.dh.resize((size_t)n * d.D);
  s.dact.resize((size_t)n * d.F);
  s.dg.resize((size_t)n * d.F);
  s.du.resize((size_t)n * d.F);
  s.dm.resize((size_t)n * d.D);
  s.dao.resize((size_t)n * d.Hd);
  s.dq.resize((size_t)n * d.Hd);
  s.da.resize((size_t)n * d.D);
  const Operand a{A.a.data(), A.a16.data()}, o{A.o.data(), A.o16.data()}, m{A.m.data(), A.m16.data()},
      act{A.act.data(), A.act16.data()};

  // MLP block.
  linear_back(env, s.dact.data(), gw.wd, dy, act, w.wd, w16.wd, n, d.F, d.D, false);
  Operand dg{s.dg.data(), nullptr}, du{s.du.data(), nullptr};
  if (env.bf16) {  // dg and du only feed the GEMMs: written straight in bf16
    s.dg16.resize((size_t)n * d.F);
    s.du16.resize((size_t)n * d.F);
    be.swiglu_backward_bf16(s.dg16.data(), s.du16.data(), s.dg.data(), s.du.data(), s.dact.data(), A.g.data(),
                            A.u.data(), (int64_t)n * d.F);
    dg.h = s.dg16.data();
    du.h = s.du16.data();
  } else {
    be.swiglu_backward(s.dg.data(), s.du.data(), s.dact.data(), A.g.data(), A.u.data(), (int64_t)n * d.F);
  }
  linear_back(env, s.dm.data(), gw.wg, dg, m, w.wg, w16.wg, n, d.D, d.F, false);
  linear_back(env, s.dm.data(), gw.wu, du, m, w.wu, w16.wu, n, d.D, d.F, true);
  // dL/dh = dL/dy (residual) + the MLP branch's gradient through its norm
  be.rmsnorm_backward(s.dh.data(), dy, gw.mlp_norm, s.dm.data(), A.h.data(), w.mlp_norm, A.rstd2.data(), n, d.D);

  // Attention block.
  linear_back(env, s.dao.data(), gw.wo, s.dh.data(), o, w.wo, w16.wo, n, d.Hd, d.D, false);
  for (int b = 0; b < ts.n_seq(); ++b) {
    const int r0 = ts.off[b], nq = ts.off[b + 1] - r0;
    if (nq == 0) continue;
    const KvView kv = kv_view(env, A, kv_src, ts, b, d);
    be.attention_backward(s.dq.data() + (size_t)r0 * d.Hd, kv.dk, kv.dv, s.dao.data() + (size_t)r0 * d.Hd,
                          A.o.data() + (size_t)r0 * d.Hd, A.lse.data() + (size_t)r0 * d.H,
                          A.q.data() + (size_t)r0 * d.Hd, kv.k, kv.v, ts.dev_pos.data() + r0, kv.kpos,
                          {nq, kv.nk, d.H, d.Hkv, d.hd, env.bf16});
  }
  be.rope_backward(s.dq.data(), ts.dev_pos.data(), n, d.H, env.rope);
  linear_back(env, s.da.data(), gw.wq, s.dq.data(), a, w.wq, w16.wq, n, d.D, d.Hd, false);
  if (!kv_src) {
    be.rope_backward(A.dk.data(), ts.dev_pos.data(), n, d.Hkv, env.rope);
    linear_back(env, s.da.data(), gw.wk, A.dk.data(), a, w.wk, w16.wk, n, d.D, d.KVd, true);
    linear_back(env, s.da.data(), gw.wv, A.dv.data(), a, w.wv, w16.wv, n, d.D, d.KVd, true);
  }
  // dL/dx = dL/dh (residual) + the attention branch's gradient through its norm
  be.rmsnorm_backward(dx, s.dh.data(), gw.attn_norm, s.da.data(), A.x.data(), w.attn_norm, A.rstd1.data(), n, d.D);
}

}  // namespace mor
