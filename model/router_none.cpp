// No router: every token goes through every unrolled layer of the section (fixed depth N_r).
// The parameter-unit hooks follow the sharing pattern: a unit is needed when the previous layer
// used another unit (or a new recursion of the shared block starts) and done when the next one
// does; last_use when no later layer uses it.
#include "model/router.h"

namespace mor {

namespace {

bool unit_starts(const ParamLayout& L, const ModelConfig& c, int l) {
  if (l == 0) return true;
  const int u = L.unit_of_layer[L.section_layer(l, c)];
  return u != L.unit_of_layer[L.section_layer(l - 1, c)] || (u == L.shared_unit && l % L.block_size == 0);
}
bool unit_ends(const ParamLayout& L, const ModelConfig& c, int l) {
  return l + 1 == c.section_layers() || unit_starts(L, c, l + 1);
}
// Whether unrolled layers [from, to) use unit u.
bool used_in(const ParamLayout& L, const ModelConfig& c, int u, int from, int to) {
  for (int k = from; k < to; ++k)
    if (L.unit_of_layer[L.section_layer(k, c)] == u) return true;
  return false;
}

class NoRouter final : public Router {
 public:
  explicit NoRouter(Backend& be) : tmp_(be) {}
  std::vector<LossTerm> loss_terms() const override { return {}; }

  void forward(Section& s, std::vector<LossTerm>&) override {
    const ParamLayout& L = s.layout;
    const int S = s.cfg.section_layers();
    for (int l = 0; l < S; ++l) {
      const int unit = L.unit_of_layer[L.section_layer(l, s.cfg)];
      if (unit_starts(L, s.cfg, l)) s.run.need(unit, false);
      tmp_.resize(s.hid.size());
      s.run.section_layer_forward(l, s.hid.data(), tmp_.data());
      s.hid.swap(tmp_);
      if (unit_ends(L, s.cfg, l)) s.run.done(unit, false, !used_in(L, s.cfg, unit, l + 1, S));
    }
    s.stats.tokens_at_depth[s.cfg.n_recursions] += (int64_t)s.n_seq * s.cfg.seq_len;
  }

  void backward(Section& s) override {
    const ParamLayout& L = s.layout;
    for (int l = s.cfg.section_layers() - 1; l >= 0; --l) {
      const int unit = L.unit_of_layer[L.section_layer(l, s.cfg)];
      if (unit_ends(L, s.cfg, l)) s.run.need(unit, true);
      tmp_.resize(s.dhid.size());
      s.run.section_layer_backward(l, s.dhid.data(), tmp_.data());
      s.dhid.swap(tmp_);
      // The last use in backward is the first use in forward.
      if (unit_starts(L, s.cfg, l)) s.run.done(unit, true, !used_in(L, s.cfg, unit, 0, l));
    }
  }

 private:
  Buffer<float> tmp_;  // ping-pong partner of the hidden state
};

}  // namespace

std::unique_ptr<Router> make_router_none(Backend& be) { return std::make_unique<NoRouter>(be); }

}  // namespace mor
