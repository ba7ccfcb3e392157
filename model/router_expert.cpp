// Expert-choice routing (docs/MODEL.md "Expert-choice"): recursion r's router scores the tokens
// that recursion r-1 kept (all tokens for r = 0) and keeps the top k_r per sequence; the block's
// output is added to their hidden state with gate alpha * sigmoid(score):
//   H[S_r] += alpha * sigmoid(s) * Block_r(H[S_r]).
// Loss terms: "aux" (BCE of the scores against "selected", over the candidates) and "ec_z"
// (z-loss: mean squared score).
#include <algorithm>
#include <cmath>

#include "model/router.h"

namespace mor {

namespace {

inline float sigmoid(float x) { return 1.f / (1.f + std::exp(-x)); }

class ExpertRouter final : public Router {
 public:
  ExpertRouter(const ModelConfig& c, Backend& be)
      : aux_coeff_(c.aux_coeff), ec_z_coeff_(c.ec_z_coeff), be_(be), xin_(be), dy_(be), dx_(be), dg_(be), ds_(be),
        topk_(be) {
    for (int r = 0; r < c.n_recursions; ++r) rec_.emplace_back(be);
  }
  std::vector<LossTerm> loss_terms() const override { return {{"aux", aux_coeff_}, {"ec_z", ec_z_coeff_}}; }
  void forward(Section& s, std::vector<LossTerm>& terms) override;
  void backward(Section& s) override;
  std::vector<std::vector<int>> last_selected() const override {
    std::vector<std::vector<int>> out;
    for (const Rec& E : rec_) out.push_back(E.sel.pos);
    return out;
  }

 private:
  struct Rec {                  // one recursion
    TokenSet cand, sel;         // candidates S_{r-1} and selected S_r
    Buffer<float> xc;           // router input H[cand] (before this recursion's update)
    Buffer<float> s;            // router scores of the candidates
    std::vector<float> s_host;  //   (read back: the selection is made on the host)
    std::vector<int> sel_idx;   // candidate index of each selected row
    Buffer<float> gate;         // alpha * sigmoid(s) per selected row
    Buffer<float> y;            // block output per selected row
    explicit Rec(Backend& be) : xc(be), s(be), gate(be), y(be) {}
  };
  void select(Section& s, Rec& E, int r, std::vector<LossTerm>& terms);

  const double aux_coeff_, ec_z_coeff_;
  Backend& be_;
  std::vector<Rec> rec_;
  Buffer<float> xin_, dy_, dx_, dg_, ds_;
  Buffer<int32_t> topk_;            // every sequence's top-k candidate indices (Backend::topk_indices)
  std::vector<int32_t> topk_host_;  //   read back
};

// Per-sequence top-k by score (sigmoid is monotonic), ties to the lower position, on the backend
// (Backend::topk_indices, one call per sequence, read back once); the auxiliary BCE (target 1 iff
// selected) and the z-loss over the candidates.
void ExpertRouter::select(Section& s, Rec& E, int r, std::vector<LossTerm>& terms) {
  const int k = s.cfg.expert_k(r);
  E.sel.off.assign(1, 0);
  E.sel.pos.clear();
  E.sel_idx.clear();
  std::vector<int> first(s.n_seq + 1, 0);  // sequence b's top-k at topk_host_[first[b], first[b + 1])
  if (!s.forced_depth) {
    for (int b = 0; b < s.n_seq; ++b) first[b + 1] = first[b] + std::min(k, E.cand.off[b + 1] - E.cand.off[b]);
    topk_.resize(first[s.n_seq]);
    for (int b = 0; b < s.n_seq; ++b) {
      const int c0 = E.cand.off[b];
      be_.topk_indices(topk_.data() + first[b], E.s.data() + c0, E.cand.off[b + 1] - c0, first[b + 1] - first[b]);
    }
    topk_host_.resize(first[s.n_seq]);
    topk_.to_host(topk_host_.data(), first[s.n_seq]);
  }
  std::vector<int> order;
  for (int b = 0; b < s.n_seq; ++b) {
    const int c0 = E.cand.off[b], c1 = E.cand.off[b + 1];
    const std::vector<float>& sc = E.s_host;
    int kk = 0;
    if (s.forced_depth) {  // the candidates whose forced depth goes past r (ascending already)
      order.clear();
      for (int i = c0; i < c1; ++i)
        if (s.forced_depth[b * s.cfg.seq_len + E.cand.pos[i]] > r) order.push_back(i);
      kk = (int)order.size();
    } else {  // ascending candidate indices
      kk = first[b + 1] - first[b];
      order.resize(kk);
      for (int t = 0; t < kk; ++t) order[t] = c0 + topk_host_[first[b] + t];
    }
    for (int t = 0; t < kk; ++t) {
      E.sel_idx.push_back(order[t]);
      E.sel.pos.push_back(E.cand.pos[order[t]]);
    }
    E.sel.off.push_back(E.sel.n());
    const double norm = (double)s.global_batch * (c1 - c0);
    std::vector<char> chosen(c1 - c0, 0);
    for (int t = 0; t < kk; ++t) chosen[order[t] - c0] = 1;
    s.stats.candidates[r] += c1 - c0;
    for (int i = c0; i < c1; ++i) {
      const double x = sc[i], y = chosen[i - c0];
      s.stats.threshold_agrees[r] += (x >= 0) == (y == 1);  // sigmoid(x) >= 0.5 <=> x >= 0
      terms[0].value += (std::max(x, 0.0) - x * y + std::log1p(std::exp(-std::fabs(x)))) / norm;
      terms[1].value += x * x / norm;
    }
  }
  E.sel.upload(be_, s.cfg.seq_len);
  std::vector<float> gate(E.sel.n());
  for (int i = 0; i < E.sel.n(); ++i) gate[i] = s.cfg.ec_alpha * sigmoid(E.s_host[E.sel_idx[i]]);
  E.gate.from_host(gate);
}

void ExpertRouter::forward(Section& s, std::vector<LossTerm>& terms) {
  const int D = s.cfg.d_model, R = s.cfg.n_recursions, unit = s.layout.shared_unit;
  for (int r = 0; r < R; ++r) {
    Rec& E = rec_[r];
    s.run.need(unit, false);  // the shared block and the routers
    E.cand = (r == 0 ? s.all : rec_[r - 1].sel).copy(be_, s.cfg.seq_len);
    const int nc = E.cand.n();
    // Router scores on the candidates' current hidden state.
    E.xc.resize((int64_t)nc * D);
    be_.copy_rows(E.xc.data(), nullptr, s.hid.data(), E.cand.dev_rows.data(), nullptr, nc, D, false);
    E.s.resize(nc);
    be_.linear_forward(E.s.data(), E.xc.data(), s.w + (size_t)r * D, nc, D, 1);
    E.s_host.resize(nc);
    E.s.to_host(E.s_host.data());
    select(s, E, r, terms);
    // The block on the selected tokens; H[S_r] += gate * Block(H[S_r]).
    const int ns = E.sel.n();
    xin_.resize((int64_t)ns * D);
    be_.copy_rows(xin_.data(), nullptr, s.hid.data(), E.sel.dev_rows.data(), nullptr, ns, D, false);
    E.y.resize((int64_t)ns * D);
    s.run.block_forward(r, E.sel, xin_.data(), E.y.data());
    be_.copy_rows(s.hid.data(), E.sel.dev_rows.data(), E.y.data(), nullptr, E.gate.data(), ns, D, true);
    s.stats.tokens_at_depth[r] += nc - ns;
    s.run.done(unit, false, r == R - 1);
  }
  s.stats.tokens_at_depth[R] += rec_[R - 1].sel.n();
  std::vector<int64_t>& at_pos = s.stats.last_selected_at_pos;
  if (at_pos.empty()) at_pos.assign(s.cfg.seq_len, 0);
  for (int p : rec_[R - 1].sel.pos) ++at_pos.at(p);  // positions are < seq_len (TokenSet)
}

void ExpertRouter::backward(Section& s) {
  const int D = s.cfg.d_model, R = s.cfg.n_recursions, unit = s.layout.shared_unit;
  const float alpha = s.cfg.ec_alpha;
  std::vector<float> dg, ds;
  for (int r = R - 1; r >= 0; --r) {
    Rec& E = rec_[r];
    s.run.need(unit, true);
    const int ns = E.sel.n(), nc = E.cand.n();
    const int32_t* sel_rows = E.sel.dev_rows.data();
    // Through the gate: dY = gate * dH, d(gate) = <dH, Y>, into the score.
    dy_.resize((int64_t)ns * D);
    be_.copy_rows(dy_.data(), nullptr, s.dhid.data(), sel_rows, E.gate.data(), ns, D, false);
    dg_.resize(ns);
    be_.row_dots(dg_.data(), s.dhid.data(), sel_rows, E.y.data(), nullptr, ns, D);
    dg.resize(ns);
    dg_.to_host(dg.data());
    ds.assign(nc, 0.f);
    for (int i = 0; i < ns; ++i) {
      const float sg = sigmoid(E.s_host[E.sel_idx[i]]);
      ds[E.sel_idx[i]] += dg[i] * alpha * sg * (1.f - sg);
    }
    dx_.resize((int64_t)ns * D);
    s.run.block_backward(r, E.sel, dy_.data(), dx_.data());
    be_.copy_rows(s.dhid.data(), sel_rows, dx_.data(), nullptr, nullptr, ns, D, true);
    // Router losses on every candidate.
    std::vector<char> chosen(nc, 0);
    for (int idx : E.sel_idx) chosen[idx] = 1;
    for (int b = 0; b < s.n_seq; ++b) {
      const int c0 = E.cand.off[b], c1 = E.cand.off[b + 1];
      const float norm = (float)s.global_batch * (c1 - c0);
      for (int i = c0; i < c1; ++i)
        ds[i] += (s.cfg.aux_coeff * (sigmoid(E.s_host[i]) - chosen[i]) + s.cfg.ec_z_coeff * 2.f * E.s_host[i]) / norm;
    }
    // s = xc θ_r^T: into θ_r and back into the candidates' hidden state.
    ds_.from_host(ds);
    dx_.resize((int64_t)nc * D);
    be_.linear_backward(dx_.data(), s.gw + (size_t)r * D, ds_.data(), E.xc.data(), s.w + (size_t)r * D, nc, D, 1,
                        false);
    be_.copy_rows(s.dhid.data(), E.cand.dev_rows.data(), dx_.data(), nullptr, nullptr, nc, D, true);
    s.run.done(unit, true, r == 0);
  }
}

}  // namespace

std::unique_ptr<Router> make_router_expert(const ModelConfig& c, Backend& be) {
  return std::make_unique<ExpertRouter>(c, be);
}

}  // namespace mor
