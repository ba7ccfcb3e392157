#include "model/model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

namespace mor {

using namespace kern;

double LossParts::total(const ModelConfig& c) const {
  return ce + c.aux_coeff * aux + c.ec_z_coeff * ec_z + c.bal_coeff * bal + c.tc_z_coeff * z;
}
LossParts& LossParts::operator+=(const LossParts& o) {
  ce += o.ce; aux += o.aux; ec_z += o.ec_z; bal += o.bal; z += o.z;
  return *this;
}

Model::Model(const ModelConfig& c)
    : cfg((c.validate(), c)), layout(c), params(layout.total), grads(layout.total, 0.f),
      rope_(c.head_dim(), c.seq_len, c.rope_theta), acts_(c.n_layers) {
  stats.reset(c.n_recursions + 1);
}

void Model::zero_grads() {  // 540 MB for the 135M model: on all threads (one thread cannot fill the memory bus)
  const int64_t n = (int64_t)grads.size(), blk = 1 << 20;
  float* g = grads.data();
#pragma omp parallel for schedule(static)
  for (int64_t b = 0; b < n; b += blk) std::fill(g + b, g + std::min(n, b + blk), 0.f);
}

void Model::run_visit(int visit, int u, const TokenSet& ts, const float* x, float* y, const LayerActs* kv_src) {
  layer_forward(pw(u), cfg, rope_, ts, x, y, acts_[visit], kv_src);
  // FLOPs: 2 per weight per token, plus q.k and p.v over the visible pairs.
  const double D = cfg.d_model, F = cfg.d_ff, Hd = cfg.n_heads * cfg.head_dim(), KVd = cfg.n_kv_heads * cfg.head_dim();
  const double w = D * Hd * 2 + 3 * D * F + (kv_src ? 0 : 2 * D * KVd);
  double pairs = 0;
  for (int b = 0; b < ts.n_seq(); ++b)
    for (int i = ts.off[b]; i < ts.off[b + 1]; ++i) pairs += kv_src ? ts.pos[i] + 1 : i - ts.off[b] + 1;
  fwd_flops += 2 * w * ts.n() + 4 * Hd * pairs;
}
void Model::back_visit(int visit, int u, const TokenSet& ts, const float* dy, float* dx, LayerActs* kv_src) {
  layer_backward(pw(u), gw(u), cfg, rope_, ts, dy, dx, acts_[visit], kv_src, scratch_);
}

// kv_mode = share: recursion r >= 1 attends to recursion 0's keys/values of the same block layer.
const LayerActs* Model::kv_source(int r, int j) const {
  return (cfg.kv_mode == KvMode::Share && r > 0) ? &acts_[visit_id(0, j)] : nullptr;
}

void Model::block_forward(int r, const TokenSet& ts, const float* x, float* y) {
  const size_t n = (size_t)ts.n() * cfg.d_model;
  buf_a_.resize(n);
  buf_b_.resize(n);
  const float* in = x;
  for (int j = 0; j < layout.block_size; ++j) {  // adjacent layers alternate buffers
    float* out = j == layout.block_size - 1 ? y : (j % 2 ? buf_a_.data() : buf_b_.data());
    run_visit(visit_id(r, j), layout.block_first + j, ts, in, out, kv_source(r, j));
    in = out;
  }
}

void Model::block_backward(int r, const TokenSet& ts, const float* dy, float* dx) {
  const size_t n = (size_t)ts.n() * cfg.d_model;
  gbuf_a_.resize(n);
  gbuf_b_.resize(n);
  const float* g = dy;
  for (int j = layout.block_size - 1; j >= 0; --j) {
    float* out = j == 0 ? dx : (j % 2 ? gbuf_a_.data() : gbuf_b_.data());
    back_visit(visit_id(r, j), layout.block_first + j, ts, g, out, const_cast<LayerActs*>(kv_source(r, j)));
    g = out;
  }
}

// ---- fixed depth: every unrolled layer on every token ---------------------------
// Unit boundaries inside the section: a unit is needed when the previous visit
// used another unit (or a new recursion of the shared block starts) and done
// when the next one does; last_use when no later visit uses it.
static bool unit_starts(const ParamLayout& L, const ModelConfig& c, int l) {
  if (l == 0) return true;
  const int u = L.unit_of_layer[L.section_layer(l, c)];
  return u != L.unit_of_layer[L.section_layer(l - 1, c)] || (u == L.shared_unit && l % L.block_size == 0);
}
static bool unit_ends(const ParamLayout& L, const ModelConfig& c, int l) {
  return l + 1 == c.section_layers() || unit_starts(L, c, l + 1);
}
static bool unit_last_use(const ParamLayout& L, const ModelConfig& c, int l) {
  const int u = L.unit_of_layer[L.section_layer(l, c)];
  for (int k = l + 1; k < c.section_layers(); ++k)
    if (L.unit_of_layer[L.section_layer(k, c)] == u) return false;
  return true;
}

void Model::section_fixed_forward(int n_seq) {
  const int S = cfg.section_layers(), B = layout.block_size;
  for (int l = 0; l < S; ++l) {
    const int r = l / B, j = l % B, u = layout.section_layer(l, cfg);
    if (unit_starts(layout, cfg, l)) need(layout.unit_of_layer[u], false);
    buf_a_.resize(hid_.size());
    const LayerActs* kv = cfg.cyclic() ? kv_source(r, j) : nullptr;
    run_visit(visit_id(0, 0) + l, u, all_, hid_.data(), buf_a_.data(), kv);
    hid_.swap(buf_a_);
    if (unit_ends(layout, cfg, l)) done(layout.unit_of_layer[u], false, unit_last_use(layout, cfg, l));
  }
  stats.tokens_at_depth[cfg.n_recursions] += (int64_t)n_seq * cfg.seq_len;
}

void Model::section_fixed_backward(int n_seq) {
  const int S = cfg.section_layers(), B = layout.block_size;
  for (int l = S - 1; l >= 0; --l) {
    const int r = l / B, j = l % B, u = layout.section_layer(l, cfg), unit = layout.unit_of_layer[u];
    if (unit_ends(layout, cfg, l)) need(unit, true);
    gbuf_a_.resize(dhid_.size());
    LayerActs* kv = cfg.cyclic() ? const_cast<LayerActs*>(kv_source(r, j)) : nullptr;
    back_visit(visit_id(0, 0) + l, u, all_, dhid_.data(), gbuf_a_.data(), kv);
    dhid_.swap(gbuf_a_);
    if (unit_starts(layout, cfg, l)) {  // last use in backward = first use in forward
      bool first = true;
      for (int k = 0; k < l; ++k)
        if (layout.unit_of_layer[layout.section_layer(k, cfg)] == unit) first = false;
      done(unit, true, first);
    }
  }
}

// ---- expert-choice (docs/MODEL.md "Expert-choice") ---------------------------------
static inline float sigmoid(float x) { return 1.f / (1.f + std::exp(-x)); }

void Model::expert_forward(int n_seq, int global_batch, LossParts& loss) {
  const int D = cfg.d_model, T = cfg.seq_len, R = cfg.n_recursions;
  erec_.resize(R);
  std::vector<float> xin;
  for (int r = 0; r < R; ++r) {
    ExpertRec& E = erec_[r];
    need(layout.shared_unit, false);  // the shared block and the routers
    E.cand = r == 0 ? all_ : erec_[r - 1].sel;
    const int nc = E.cand.n();
    // Router logits on the candidates' current hidden state.
    E.xc.resize((size_t)nc * D);
    for (int b = 0; b < n_seq; ++b)
      for (int i = E.cand.off[b]; i < E.cand.off[b + 1]; ++i)
        std::memcpy(&E.xc[(size_t)i * D], &hid_[(size_t)E.cand.full_row(i, b, T) * D], D * sizeof(float));
    E.s.resize(nc);
    linear_forward(E.s.data(), E.xc.data(), params.data() + layout.routers + (size_t)r * D, nc, D, 1);

    // Per-sequence top-k by gate (sigmoid is monotonic: rank by logit), ties → lower position.
    const int k = cfg.expert_k(r);
    E.sel.off.assign(1, 0);
    E.sel.pos.clear();
    E.sel_idx.clear();
    std::vector<int> order;
    for (int b = 0; b < n_seq; ++b) {
      const int c0 = E.cand.off[b], c1 = E.cand.off[b + 1];
      order.resize(c1 - c0);
      std::iota(order.begin(), order.end(), c0);
      const int kk = std::min(k, c1 - c0);
      std::partial_sort(order.begin(), order.begin() + kk, order.end(),
                        [&](int a, int c) { return E.s[a] > E.s[c] || (E.s[a] == E.s[c] && a < c); });
      std::sort(order.begin(), order.begin() + kk);
      for (int t = 0; t < kk; ++t) {
        E.sel_idx.push_back(order[t]);
        E.sel.pos.push_back(E.cand.pos[order[t]]);
      }
      E.sel.off.push_back(E.sel.n());
      // Auxiliary BCE (target 1 iff selected) and z-loss over the candidates.
      const double norm = (double)global_batch * (c1 - c0);
      std::vector<char> chosen(c1 - c0, 0);
      for (int t = 0; t < kk; ++t) chosen[order[t] - c0] = 1;
      for (int i = c0; i < c1; ++i) {
        const double s = E.s[i], y = chosen[i - c0];
        loss.aux += (std::max(s, 0.0) - s * y + std::log1p(std::exp(-std::fabs(s)))) / norm;
        loss.ec_z += s * s / norm;
      }
    }
    // Block on the selected tokens; H[S_r] += g * Block(H[S_r]).
    const int ns = E.sel.n();
    xin.resize((size_t)ns * D);
    for (int b = 0; b < n_seq; ++b)
      for (int i = E.sel.off[b]; i < E.sel.off[b + 1]; ++i)
        std::memcpy(&xin[(size_t)i * D], &hid_[(size_t)E.sel.full_row(i, b, T) * D], D * sizeof(float));
    E.y.resize((size_t)ns * D);
    block_forward(r, E.sel, xin.data(), E.y.data());
    for (int b = 0; b < n_seq; ++b)
      for (int i = E.sel.off[b]; i < E.sel.off[b + 1]; ++i) {
        const float g = cfg.ec_alpha * sigmoid(E.s[E.sel_idx[i]]);
        float* h = &hid_[(size_t)E.sel.full_row(i, b, T) * D];
        const float* y = &E.y[(size_t)i * D];
        for (int d = 0; d < D; ++d) h[d] += g * y[d];
      }
    stats.tokens_at_depth[r] += E.cand.n() - ns;
    done(layout.shared_unit, false, r == R - 1);
  }
  stats.tokens_at_depth[R] += erec_[R - 1].sel.n();
}

void Model::expert_backward(int n_seq, int global_batch) {
  const int D = cfg.d_model, T = cfg.seq_len, R = cfg.n_recursions;
  std::vector<float> dy, dxin, ds, dxc;
  for (int r = R - 1; r >= 0; --r) {
    ExpertRec& E = erec_[r];
    need(layout.shared_unit, true);
    const int ns = E.sel.n(), nc = E.cand.n();
    dy.resize((size_t)ns * D);
    ds.assign(nc, 0.f);
    // Through the gate: dY = g dH, dg = <dH, Y>.
    for (int b = 0; b < n_seq; ++b)
      for (int i = E.sel.off[b]; i < E.sel.off[b + 1]; ++i) {
        const float s = E.s[E.sel_idx[i]], sg = sigmoid(s), g = cfg.ec_alpha * sg;
        const float* dh = &dhid_[(size_t)E.sel.full_row(i, b, T) * D];
        const float* y = &E.y[(size_t)i * D];
        float dg = 0.f;
        for (int d = 0; d < D; ++d) {
          dy[(size_t)i * D + d] = g * dh[d];
          dg += dh[d] * y[d];
        }
        ds[E.sel_idx[i]] += dg * cfg.ec_alpha * sg * (1.f - sg);
      }
    dxin.resize((size_t)ns * D);
    block_backward(r, E.sel, dy.data(), dxin.data());
    for (int b = 0; b < n_seq; ++b)
      for (int i = E.sel.off[b]; i < E.sel.off[b + 1]; ++i) {
        float* dh = &dhid_[(size_t)E.sel.full_row(i, b, T) * D];
        for (int d = 0; d < D; ++d) dh[d] += dxin[(size_t)i * D + d];
      }
    // Router losses on every candidate.
    std::vector<char> chosen(nc, 0);
    for (int idx : E.sel_idx) chosen[idx] = 1;
    for (int b = 0; b < n_seq; ++b) {
      const int c0 = E.cand.off[b], c1 = E.cand.off[b + 1];
      const float norm = (float)global_batch * (c1 - c0);
      for (int i = c0; i < c1; ++i)
        ds[i] += (cfg.aux_coeff * (sigmoid(E.s[i]) - chosen[i]) + cfg.ec_z_coeff * 2.f * E.s[i]) / norm;
    }
    // s = xc θ_r^T: into θ_r and back into the candidates' hidden state.
    dxc.resize((size_t)nc * D);
    linear_backward(dxc.data(), grads.data() + layout.routers + (size_t)r * D, ds.data(), E.xc.data(),
                    params.data() + layout.routers + (size_t)r * D, nc, D, 1, false);
    for (int b = 0; b < n_seq; ++b)
      for (int i = E.cand.off[b]; i < E.cand.off[b + 1]; ++i) {
        float* dh = &dhid_[(size_t)E.cand.full_row(i, b, T) * D];
        for (int d = 0; d < D; ++d) dh[d] += dxc[(size_t)i * D + d];
      }
    done(layout.shared_unit, true, r == 0);
  }
}

// ---- token-choice (docs/MODEL.md "Token-choice") -----------------------------------
void Model::token_forward(int n_seq, int global_batch, LossParts& loss) {
  const int D = cfg.d_model, T = cfg.seq_len, R = cfg.n_recursions, N = n_seq * T;
  TokenRoute& S = tr_;
  need(layout.shared_unit, false);  // recursion 0's window also covers the router
  S.x0 = hid_;
  S.xcur = hid_;
  S.logits.resize((size_t)N * R);
  S.q.resize((size_t)N * R);
  S.lse.resize(N);
  S.choice.resize(N);
  linear_forward(S.logits.data(), S.x0.data(), params.data() + layout.routers, N, D, R);
  for (int t = 0; t < N; ++t) {
    const float* l = &S.logits[(size_t)t * R];
    float* q = &S.q[(size_t)t * R];
    const float mx = *std::max_element(l, l + R);
    float sum = 0.f;
    for (int j = 0; j < R; ++j) sum += (q[j] = std::exp(l[j] - mx));
    for (int j = 0; j < R; ++j) q[j] /= sum;
    S.lse[t] = mx + std::log(sum);
    S.choice[t] = (int)(std::max_element(q, q + R) - q);  // first maximum
    loss.z += (double)S.lse[t] * S.lse[t] / ((double)global_batch * T);
    stats.tokens_at_depth[S.choice[t] + 1] += 1;
  }
  // Balancing loss, per sequence: sum_i P_i f_i.
  for (int b = 0; b < n_seq; ++b) {
    std::vector<double> P(R, 0.0), f(R, 0.0);
    for (int t = b * T; t < (b + 1) * T; ++t) {
      for (int j = 0; j < R; ++j) P[j] += cfg.tc_alpha * S.q[(size_t)t * R + j] / T;
      f[S.choice[t]] += (double)R / T;
    }
    for (int j = 0; j < R; ++j) loss.bal += P[j] * f[j] / global_batch;
  }
  // Recursions: active tokens A_r = {t : i_t >= r}; exit with the gate, hand off otherwise.
  S.active.assign(R, TokenSet{});
  S.y.resize(R);
  std::vector<float> xin;
  for (int r = 0; r < R; ++r) {
    if (r > 0) need(layout.shared_unit, false);
    TokenSet& A = S.active[r];
    for (int b = 0; b < n_seq; ++b) {
      for (int p = 0; p < T; ++p)
        if (S.choice[b * T + p] >= r) A.pos.push_back(p);
      A.off.push_back(A.n());
    }
    const int na = A.n();
    xin.resize((size_t)na * D);
    for (int b = 0; b < n_seq; ++b)
      for (int i = A.off[b]; i < A.off[b + 1]; ++i)
        std::memcpy(&xin[(size_t)i * D], &S.xcur[(size_t)A.full_row(i, b, T) * D], D * sizeof(float));
    S.y[r].resize((size_t)na * D);
    block_forward(r, A, xin.data(), S.y[r].data());
    for (int b = 0; b < n_seq; ++b)
      for (int i = A.off[b]; i < A.off[b + 1]; ++i) {
        const int t = A.full_row(i, b, T);
        const float* y = &S.y[r][(size_t)i * D];
        if (S.choice[t] == r) {
          const float g = cfg.tc_alpha * S.q[(size_t)t * R + r];
          for (int d = 0; d < D; ++d) hid_[(size_t)t * D + d] += g * y[d];
        } else {
          std::memcpy(&S.xcur[(size_t)t * D], y, D * sizeof(float));
        }
      }
    done(layout.shared_unit, false, r == R - 1);
  }
}

void Model::token_backward(int n_seq, int global_batch) {
  const int D = cfg.d_model, T = cfg.seq_len, R = cfg.n_recursions, N = n_seq * T;
  TokenRoute& S = tr_;
  std::vector<float> dxcur((size_t)N * D, 0.f), dy, dxin, dp((size_t)N * R, 0.f);
  for (int r = R - 1; r >= 0; --r) {
    need(layout.shared_unit, true);
    const TokenSet& A = S.active[r];
    const int na = A.n();
    dy.resize((size_t)na * D);
    for (int b = 0; b < n_seq; ++b)
      for (int i = A.off[b]; i < A.off[b + 1]; ++i) {
        const int t = A.full_row(i, b, T);
        const float* dout = &dhid_[(size_t)t * D];
        const float* y = &S.y[r][(size_t)i * D];
        float* d = &dy[(size_t)i * D];
        if (S.choice[t] == r) {
          const float g = cfg.tc_alpha * S.q[(size_t)t * R + r];
          float dg = 0.f;
          for (int e = 0; e < D; ++e) {
            d[e] = g * dout[e];
            dg += dout[e] * y[e];
          }
          dp[(size_t)t * R + r] += dg;
        } else {
          std::memcpy(d, &dxcur[(size_t)t * D], D * sizeof(float));
        }
      }
    dxin.resize((size_t)na * D);
    block_backward(r, A, dy.data(), dxin.data());
    for (int b = 0; b < n_seq; ++b)
      for (int i = A.off[b]; i < A.off[b + 1]; ++i)
        std::memcpy(&dxcur[(size_t)A.full_row(i, b, T) * D], &dxin[(size_t)i * D], D * sizeof(float));
    if (r > 0) done(layout.shared_unit, true, false);
  }
  // H_out = H1 + gated updates: dH1 = dOut + (gradient into recursion 0's input).
  add_inplace(dhid_.data(), dxcur.data(), (int64_t)N * D);
  // Balancing loss (f is a constant) and z-loss, then softmax backward.
  std::vector<float> dl((size_t)N * R), dq(R);  // dq sized by the config: n_recursions has no fixed bound
  for (int b = 0; b < n_seq; ++b) {
    std::vector<float> f(R, 0.f);
    for (int t = b * T; t < (b + 1) * T; ++t) f[S.choice[t]] += (float)R / T;
    for (int t = b * T; t < (b + 1) * T; ++t) {
      const float* q = &S.q[(size_t)t * R];
      float dot = 0.f;
      for (int j = 0; j < R; ++j) {
        dq[j] = cfg.tc_alpha * (dp[(size_t)t * R + j] + cfg.bal_coeff * f[j] / ((float)T * global_batch));
        dot += q[j] * dq[j];
      }
      const float zc = cfg.tc_z_coeff * 2.f * S.lse[t] / ((float)global_batch * T);
      for (int j = 0; j < R; ++j) dl[(size_t)t * R + j] = q[j] * (dq[j] - dot) + zc * q[j];
    }
  }
  std::vector<float> dx0((size_t)N * D);
  linear_backward(dx0.data(), grads.data() + layout.routers, dl.data(), S.x0.data(), params.data() + layout.routers,
                  N, D, R, false);
  add_inplace(dhid_.data(), dx0.data(), (int64_t)N * D);
  done(layout.shared_unit, true, true);
}

// ---- head: final norm, tied LM head, cross-entropy -------------------------------
double Model::head(int n_seq, int global_batch, bool backward) {
  const int D = cfg.d_model, V = cfg.vocab_size, N = n_seq * cfg.seq_len;
  const float* E = params.data() + layout.embed;
  hn_.resize((size_t)N * D);
  rstd_f_.resize(N);
  rmsnorm_forward(hn_.data(), rstd_f_.data(), hid_.data(), params.data() + layout.final_norm, N, D, cfg.rms_eps);
  if (backward) dhn_.resize((size_t)N * D);  // every row written below (dx with accumulate = false)
  // Logits in row chunks (at most ~128 MB): the [N, V] matrix never exists whole for large
  // batches. One 512-token sequence is one chunk: split 341 + 171, the head's GEMMs ran ~9 % slower.
  const int chunk = std::max(1, std::min(N, (1 << 25) / V));
  logits_.resize((size_t)chunk * V);
  const float scale = 1.f / ((float)global_batch * cfg.seq_len);
  double ce = 0;
  for (int r0 = 0; r0 < N; r0 += chunk) {
    const int rows = std::min(chunk, N - r0);
    linear_forward(logits_.data(), hn_.data() + (size_t)r0 * D, E, rows, D, V);
    ce += softmax_xent(logits_.data(), targets_.data() + r0, rows, V, scale);
    if (backward)
      linear_backward(dhn_.data() + (size_t)r0 * D, grads.data() + layout.embed, logits_.data(),
                      hn_.data() + (size_t)r0 * D, E, rows, D, V, false);
  }
  if (backward) {
    dhid_.resize((size_t)N * D);
    rmsnorm_backward(dhid_.data(), nullptr, grads.data() + layout.final_norm, dhn_.data(), hid_.data(),
                     params.data() + layout.final_norm, rstd_f_.data(), N, D);
  }
  return ce * scale;
}

// ---- one micro-step, top to bottom -----------------------------------------------
LossParts Model::step(const int32_t* tokens, int n_seq, int global_batch, bool backward) {
  const int D = cfg.d_model, T = cfg.seq_len, N = n_seq * T;
  LossParts loss;
  fwd_flops = 2.0 * N * D * cfg.vocab_size;  // the tied LM head
  all_ = TokenSet::all(n_seq, T);
  inputs_.resize(N);
  targets_.resize(N);
  for (int b = 0; b < n_seq; ++b)
    for (int t = 0; t < T; ++t) {
      inputs_[b * T + t] = tokens[(size_t)b * (T + 1) + t];
      targets_[b * T + t] = tokens[(size_t)b * (T + 1) + t + 1];
    }

  // Forward.
  need(0, false);  // embedding + final norm: kept for the whole step (tied head)
  hid_.resize((size_t)N * D);
  for (int i = 0; i < N; ++i)
    std::memcpy(&hid_[(size_t)i * D], &params[layout.embed + (size_t)inputs_[i] * D], D * sizeof(float));
  auto unique_layer = [&](int u, int visit) {
    need(layout.unit_of_layer[u], false);
    buf_a_.resize(hid_.size());
    run_visit(visit, u, all_, hid_.data(), buf_a_.data(), nullptr);
    hid_.swap(buf_a_);
    done(layout.unit_of_layer[u], false, true);
  };
  if (layout.prelude >= 0) unique_layer(layout.prelude, 0);
  if (cfg.router == RouterKind::Expert) expert_forward(n_seq, global_batch, loss);
  else if (cfg.router == RouterKind::Token) token_forward(n_seq, global_batch, loss);
  else section_fixed_forward(n_seq);
  if (layout.coda >= 0) unique_layer(layout.coda, cfg.n_layers - 1);
  loss.ce = head(n_seq, global_batch, backward);
  if (!backward) {
    done(0, false, true);
    return loss;
  }

  // Backward, in reverse (head() already produced dL/dH at the top).
  auto unique_layer_back = [&](int u, int visit) {
    need(layout.unit_of_layer[u], true);
    gbuf_a_.resize(dhid_.size());
    back_visit(visit, u, all_, dhid_.data(), gbuf_a_.data(), nullptr);
    dhid_.swap(gbuf_a_);
    done(layout.unit_of_layer[u], true, true);
  };
  if (layout.coda >= 0) unique_layer_back(layout.coda, cfg.n_layers - 1);
  if (cfg.router == RouterKind::Expert) expert_backward(n_seq, global_batch);
  else if (cfg.router == RouterKind::Token) token_backward(n_seq, global_batch);
  else section_fixed_backward(n_seq);
  if (layout.prelude >= 0) unique_layer_back(layout.prelude, 0);
  float* dE = grads.data() + layout.embed;
  for (int i = 0; i < N; ++i)  // serial: several rows may share a token id
    add_inplace(dE + (size_t)inputs_[i] * D, &dhid_[(size_t)i * D], D);
  done(0, true, true);
  return loss;
}

std::vector<std::vector<int>> Model::last_selected() const {
  std::vector<std::vector<int>> out;
  for (const auto& E : erec_) out.push_back(E.sel.pos);
  return out;
}
std::vector<int> Model::last_depths() const {
  std::vector<int> d(tr_.choice.size());
  for (size_t i = 0; i < d.size(); ++i) d[i] = tr_.choice[i] + 1;
  return d;
}

}  // namespace mor
