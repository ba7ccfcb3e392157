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
LayerActs::LayerActs(Backend& be) { bind_all(be, x, a, rstd1, q, k, v, o, lse, h, m, rstd2, g, u, act, dk, dv); }
LayerScratch::LayerScratch(Backend& be) { bind_all(be, dh, dact, dg, du, dm, dao, dq, da); }

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
}  // namespace

void layer_forward(const LayerEnv& env, const LayerView& w, const TokenSet& ts, const float* x, float* y, LayerActs& A,
                   const LayerActs* kv_src) {
  Backend& be = env.be;
  const Dims d(env.c);
  const int n = ts.n();
  A.x.copy_from(x, (int64_t)n * d.D);
  A.a.resize((size_t)n * d.D);
  A.rstd1.resize(n);
  A.q.resize((size_t)n * d.Hd);
  A.o.resize((size_t)n * d.Hd);
  A.lse.resize((size_t)n * d.H);
  A.h.resize((size_t)n * d.D);
  A.m.resize((size_t)n * d.D);
  A.rstd2.resize(n);
  A.g.resize((size_t)n * d.F);
  A.u.resize((size_t)n * d.F);
  A.act.resize((size_t)n * d.F);

  // Attention block.
  be.rmsnorm_forward(A.a.data(), A.rstd1.data(), x, w.attn_norm, n, d.D, env.c.rms_eps);
  be.linear_forward(A.q.data(), A.a.data(), w.wq, n, d.D, d.Hd);
  be.rope_forward(A.q.data(), ts.dev_pos.data(), n, d.H, env.rope);
  if (!kv_src) {
    A.k.resize((size_t)n * d.KVd);
    A.v.resize((size_t)n * d.KVd);
    be.linear_forward_pair(A.k.data(), w.wk, d.KVd, A.v.data(), w.wv, d.KVd, A.a.data(), n, d.D);
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
                         {nq, kv.nk, d.H, d.Hkv, d.hd});
  }
  // h = x + o Wo^T
  be.linear_forward(A.h.data(), A.o.data(), w.wo, n, d.Hd, d.D);
  be.add_inplace(A.h.data(), x, (int64_t)n * d.D);

  // MLP block.
  be.rmsnorm_forward(A.m.data(), A.rstd2.data(), A.h.data(), w.mlp_norm, n, d.D, env.c.rms_eps);
  be.linear_forward_pair(A.g.data(), w.wg, d.F, A.u.data(), w.wu, d.F, A.m.data(), n, d.D);
  be.swiglu_forward(A.act.data(), A.g.data(), A.u.data(), (int64_t)n * d.F);
  be.linear_forward(y, A.act.data(), w.wd, n, d.F, d.D);
  be.add_inplace(y, A.h.data(), (int64_t)n * d.D);
}

void layer_backward(const LayerEnv& env, const LayerView& w, const LayerView& gw, const TokenSet& ts, const float* dy,
                    float* dx, LayerActs& A, LayerActs* kv_src, LayerScratch& s) {
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

  // MLP block.
  be.linear_backward(s.dact.data(), gw.wd, dy, A.act.data(), w.wd, n, d.F, d.D, false);
  be.swiglu_backward(s.dg.data(), s.du.data(), s.dact.data(), A.g.data(), A.u.data(), (int64_t)n * d.F);
  be.linear_backward(s.dm.data(), gw.wg, s.dg.data(), A.m.data(), w.wg, n, d.D, d.F, false);
  be.linear_backward(s.dm.data(), gw.wu, s.du.data(), A.m.data(), w.wu, n, d.D, d.F, true);
  // dL/dh = dL/dy (residual) + the MLP branch's gradient through its norm
  be.rmsnorm_backward(s.dh.data(), dy, gw.mlp_norm, s.dm.data(), A.h.data(), w.mlp_norm, A.rstd2.data(), n, d.D);

  // Attention block.
  be.linear_backward(s.dao.data(), gw.wo, s.dh.data(), A.o.data(), w.wo, n, d.Hd, d.D, false);
  for (int b = 0; b < ts.n_seq(); ++b) {
    const int r0 = ts.off[b], nq = ts.off[b + 1] - r0;
    if (nq == 0) continue;
    const KvView kv = kv_view(env, A, kv_src, ts, b, d);
    be.attention_backward(s.dq.data() + (size_t)r0 * d.Hd, kv.dk, kv.dv, s.dao.data() + (size_t)r0 * d.Hd,
                          A.o.data() + (size_t)r0 * d.Hd, A.lse.data() + (size_t)r0 * d.H,
                          A.q.data() + (size_t)r0 * d.Hd, kv.k, kv.v, ts.dev_pos.data() + r0, kv.kpos,
                          {nq, kv.nk, d.H, d.Hkv, d.hd});
  }
  be.rope_backward(s.dq.data(), ts.dev_pos.data(), n, d.H, env.rope);
  be.linear_backward(s.da.data(), gw.wq, s.dq.data(), A.a.data(), w.wq, n, d.D, d.Hd, false);
  if (!kv_src) {
    be.rope_backward(A.dk.data(), ts.dev_pos.data(), n, d.Hkv, env.rope);
    be.linear_backward(s.da.data(), gw.wk, A.dk.data(), A.a.data(), w.wk, n, d.D, d.KVd, true);
    be.linear_backward(s.da.data(), gw.wv, A.dv.data(), A.a.data(), w.wv, n, d.D, d.KVd, true);
  }
  // dL/dx = dL/dh (residual) + the attention branch's gradient through its norm
  be.rmsnorm_backward(dx, s.dh.data(), gw.attn_norm, s.da.data(), A.x.data(), w.attn_norm, A.rstd1.data(), n, d.D);
}

}  // namespace mor
