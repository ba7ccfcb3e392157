// Token-choice routing (docs/MODEL.md "Token-choice"): one router on the section's input scores
// the N_r depths per token; token t takes i_t = argmax of the softmax q_t and goes through
// recursions 0..i_t. A token still going on carries the block's output to the next recursion;
// at its last recursion the output is added to its hidden state with gate alpha * q_t[i_t].
// Loss terms: "bal" (balancing: sum_i P_i f_i per sequence) and "z" (z-loss on the log-sum-exp).
#include <algorithm>
#include <cmath>

#include "model/router.h"

namespace mor {

namespace {

// The rows of recursion r's output that leave (exit) or go on (carry), as (row in the output,
// row in the full hidden state) pairs, host and backend.
struct RowMoves {
  std::vector<int32_t> src, dst;
  std::vector<float> gate;  // exit only
  Buffer<int32_t> dev_src, dev_dst;
  Buffer<float> dev_gate;
  explicit RowMoves(Backend& be) : dev_src(be), dev_dst(be), dev_gate(be) {}
  void clear() { src.clear(), dst.clear(), gate.clear(); }
  void upload() {
    dev_src.from_host(src);
    dev_dst.from_host(dst);
    dev_gate.from_host(gate);
  }
  int n() const { return (int)src.size(); }
};

class TokenRouter final : public Router {
 public:
  TokenRouter(const ModelConfig& c, Backend& be)
      : bal_coeff_(c.bal_coeff), z_coeff_(c.tc_z_coeff), be_(be), x0_(be), xcur_(be), logits_(be), xin_(be), dxcur_(be),
        dy_(be), dx_(be), dg_(be), dl_(be) {
    for (int r = 0; r < c.n_recursions; ++r) rec_.emplace_back(be);
  }
  std::vector<LossTerm> loss_terms() const override { return {{"bal", bal_coeff_}, {"z", z_coeff_}}; }
  void forward(Section& s, std::vector<LossTerm>& terms) override;
  void backward(Section& s) override;
  std::vector<int> last_depths() const override {
    std::vector<int> d(choice_.size());
    for (size_t i = 0; i < d.size(); ++i) d[i] = choice_[i] + 1;
    return d;
  }

 private:
  struct Rec {        // one recursion
    TokenSet active;  // A_r = {t : i_t >= r}
    Buffer<float> y;  // block output per active row
    RowMoves exit, carry;
    explicit Rec(Backend& be) : y(be), exit(be), carry(be) {}
  };
  void decide(Section& s, std::vector<LossTerm>& terms);
  void plan(Section& s, int r);

  const double bal_coeff_, z_coeff_;
  Backend& be_;
  Buffer<float> x0_, xcur_, logits_, xin_, dxcur_, dy_, dx_, dg_, dl_;
  std::vector<float> q_, lse_;  // softmax and log-sum-exp of the logits (host)
  std::vector<int> choice_;     // i_t per token
  std::vector<Rec> rec_;
};

// Softmax, choice, z-loss and statistics per token; the balancing loss per sequence.
void TokenRouter::decide(Section& s, std::vector<LossTerm>& terms) {
  const int T = s.cfg.seq_len, R = s.cfg.n_recursions, N = s.n_seq * T;
  std::vector<float> logits((size_t)N * R);
  logits_.to_host(logits.data());
  q_.resize((size_t)N * R);
  lse_.resize(N);
  choice_.resize(N);
  for (int t = 0; t < N; ++t) {
    const float* l = &logits[(size_t)t * R];
    float* q = &q_[(size_t)t * R];
    const float mx = *std::max_element(l, l + R);
    float sum = 0.f;
    for (int j = 0; j < R; ++j) sum += (q[j] = std::exp(l[j] - mx));
    for (int j = 0; j < R; ++j) q[j] /= sum;
    lse_[t] = mx + std::log(sum);
    choice_[t] = s.forced_depth ? s.forced_depth[t] - 1 : (int)(std::max_element(q, q + R) - q);  // first maximum
    terms[1].value += (double)lse_[t] * lse_[t] / ((double)s.global_batch * T);
    s.stats.tokens_at_depth[choice_[t] + 1] += 1;
  }
  for (int b = 0; b < s.n_seq; ++b) {
    std::vector<double> P(R, 0.0), f(R, 0.0);
    for (int t = b * T; t < (b + 1) * T; ++t) {
      for (int j = 0; j < R; ++j) P[j] += s.cfg.tc_alpha * q_[(size_t)t * R + j] / T;
      f[choice_[t]] += (double)R / T;
    }
    for (int j = 0; j < R; ++j) terms[0].value += P[j] * f[j] / s.global_batch;
  }
}

// Recursion r's active tokens and where each output row goes.
void TokenRouter::plan(Section& s, int r) {
  const int T = s.cfg.seq_len, R = s.cfg.n_recursions;
  Rec& E = rec_[r];
  E.active = TokenSet{};
  for (int b = 0; b < s.n_seq; ++b) {
    for (int p = 0; p < T; ++p)
      if (choice_[b * T + p] >= r) E.active.pos.push_back(p);
    E.active.off.push_back(E.active.n());
  }
  E.active.upload(be_, T);
  E.exit.clear();
  E.carry.clear();
  for (int b = 0; b < s.n_seq; ++b)
    for (int i = E.active.off[b]; i < E.active.off[b + 1]; ++i) {
      const int t = E.active.full_row(i, b, T);
      RowMoves& m = choice_[t] == r ? E.exit : E.carry;
      m.src.push_back(i);
      m.dst.push_back(t);
      if (choice_[t] == r) m.gate.push_back(s.cfg.tc_alpha * q_[(size_t)t * R + r]);
    }
  E.exit.upload();
  E.carry.upload();
}

void TokenRouter::forward(Section& s, std::vector<LossTerm>& terms) {
  const int D = s.cfg.d_model, R = s.cfg.n_recursions, N = s.n_seq * s.cfg.seq_len, unit = s.layout.shared_unit;
  s.run.need(unit, false);  // recursion 0's window also covers the router
  x0_.copy_from(s.hid.data(), s.hid.size());
  xcur_.copy_from(s.hid.data(), s.hid.size());
  logits_.resize((int64_t)N * R);
  be_.linear_forward(logits_.data(), x0_.data(), s.w, N, D, R);
  decide(s, terms);
  for (int r = 0; r < R; ++r) {
    if (r > 0) s.run.need(unit, false);
    plan(s, r);
    Rec& E = rec_[r];
    const int na = E.active.n();
    xin_.resize((int64_t)na * D);
    be_.copy_rows(xin_.data(), nullptr, xcur_.data(), E.active.dev_rows.data(), nullptr, na, D, false);
    E.y.resize((int64_t)na * D);
    s.run.block_forward(r, E.active, xin_.data(), E.y.data());
    // Exit: H[t] += gate * Y[i]; go on: X_cur[t] = Y[i].
    be_.copy_rows(s.hid.data(), E.exit.dev_dst.data(), E.y.data(), E.exit.dev_src.data(), E.exit.dev_gate.data(),
                  E.exit.n(), D, true);
    be_.copy_rows(xcur_.data(), E.carry.dev_dst.data(), E.y.data(), E.carry.dev_src.data(), nullptr, E.carry.n(), D,
                  false);
    s.run.done(unit, false, r == R - 1);
  }
}

void TokenRouter::backward(Section& s) {
  const int D = s.cfg.d_model, T = s.cfg.seq_len, R = s.cfg.n_recursions, N = s.n_seq * T, unit = s.layout.shared_unit;
  dxcur_.assign_zero((int64_t)N * D);
  std::vector<float> dp((size_t)N * R, 0.f), dg;
  for (int r = R - 1; r >= 0; --r) {
    s.run.need(unit, true);
    Rec& E = rec_[r];
    const int na = E.active.n();
    dy_.resize((int64_t)na * D);
    // Exit rows: dY = gate * dOut, d(gate) = <dOut, Y>; rows going on: dY = dX_cur.
    be_.copy_rows(dy_.data(), E.exit.dev_src.data(), s.dhid.data(), E.exit.dev_dst.data(), E.exit.dev_gate.data(),
                  E.exit.n(), D, false);
    dg_.resize(E.exit.n());
    be_.row_dots(dg_.data(), s.dhid.data(), E.exit.dev_dst.data(), E.y.data(), E.exit.dev_src.data(), E.exit.n(), D);
    dg.resize(E.exit.n());
    dg_.to_host(dg.data());
    for (int i = 0; i < E.exit.n(); ++i) dp[(size_t)E.exit.dst[i] * R + r] += dg[i];
    be_.copy_rows(dy_.data(), E.carry.dev_src.data(), dxcur_.data(), E.carry.dev_dst.data(), nullptr, E.carry.n(), D,
                  false);
    dx_.resize((int64_t)na * D);
    s.run.block_backward(r, E.active, dy_.data(), dx_.data());
    be_.copy_rows(dxcur_.data(), E.active.dev_rows.data(), dx_.data(), nullptr, nullptr, na, D, false);
    if (r > 0) s.run.done(unit, true, false);
  }
  // H_out = H1 + gated updates: dH1 = dOut + (gradient into recursion 0's input).
  be_.add_inplace(s.dhid.data(), dxcur_.data(), (int64_t)N * D);
  // Balancing loss (f is a constant) and z-loss, then the softmax backward.
  std::vector<float> dl((size_t)N * R), dq(R);  // dq sized by the config: n_recursions has no fixed bound
  for (int b = 0; b < s.n_seq; ++b) {
    std::vector<float> f(R, 0.f);
    for (int t = b * T; t < (b + 1) * T; ++t) f[choice_[t]] += (float)R / T;
    for (int t = b * T; t < (b + 1) * T; ++t) {
      const float* q = &q_[(size_t)t * R];
      float dot = 0.f;
      for (int j = 0; j < R; ++j) {
        dq[j] = s.cfg.tc_alpha * (dp[(size_t)t * R + j] + s.cfg.bal_coeff * f[j] / ((float)T * s.global_batch));
        dot += q[j] * dq[j];
      }
      const float zc = s.cfg.tc_z_coeff * 2.f * lse_[t] / ((float)s.global_batch * T);
      for (int j = 0; j < R; ++j) dl[(size_t)t * R + j] = q[j] * (dq[j] - dot) + zc * q[j];
    }
  }
  dl_.from_host(dl);
  dx_.resize((int64_t)N * D);
  be_.linear_backward(dx_.data(), s.gw, dl_.data(), x0_.data(), s.w, N, D, R, false);
  be_.add_inplace(s.dhid.data(), dx_.data(), (int64_t)N * D);
  s.run.done(unit, true, true);
}

}  // namespace

std::unique_ptr<Router> make_router_token(const ModelConfig& c, Backend& be) {
  return std::make_unique<TokenRouter>(c, be);
}

}  // namespace mor
