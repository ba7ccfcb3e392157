// What the whole-model tests (test_model_grad, test_recompute, test_precision) share: a model
// variant (sharing x router x KV mode, N_r) and a tiny config for it with B = 2 shared layers and
// router losses strong enough to show in the gradients.
#pragma once
#include <ostream>
#include <string>
#include <vector>

#include "model/config.h"

namespace mor::combos {

struct Combo {
  Sharing sharing;
  RouterKind router;
  KvMode kv;
  int n_rec = 3;
};

struct TinyShape {
  int vocab_size, d_model, n_heads, n_kv_heads, d_ff, seq_len;
  float init_std;
};

inline ModelConfig tiny_config(const Combo& c, const TinyShape& s) {
  ModelConfig m{.vocab_size = s.vocab_size,
                .d_model = s.d_model,
                .n_heads = s.n_heads,
                .n_kv_heads = s.n_kv_heads,
                .d_ff = s.d_ff,
                .seq_len = s.seq_len,
                .init_std = s.init_std,
                .sharing = c.sharing,
                .n_recursions = c.n_rec,
                .router = c.router,
                .kv_mode = c.kv,
                .aux_coeff = 0.1f,  // make the router losses visible in the gradient
                .ec_z_coeff = 0.05f,
                .tc_z_coeff = 0.05f};
  m.n_layers = (m.middle() ? 2 : 0) + 2 * c.n_rec;  // B = 2
  return m;
}

// A gtest-safe name: sharing_router_kv (and _nrN when with_nr).
inline std::string combo_name(const Combo& c, bool with_nr = false) {
  std::string n = std::string(to_string(c.sharing)) + "_" + to_string(c.router) + "_" + to_string(c.kv);
  return with_nr ? n + "_nr" + std::to_string(c.n_rec) : n;
}

// Every combination the config allows (routers and kv_mode share need cyclic sharing), N_r = 3,
// plus a vanilla model (N_r = 1) and expert-choice with N_r = 2.
inline std::vector<Combo> valid_combos() {
  std::vector<Combo> v;
  for (Sharing s : {Sharing::Cycle, Sharing::Sequence, Sharing::MiddleCycle, Sharing::MiddleSequence})
    for (RouterKind r : {RouterKind::None, RouterKind::Expert, RouterKind::Token})
      for (KvMode k : {KvMode::Recursion, KvMode::Share}) {
        const bool cyc = s == Sharing::Cycle || s == Sharing::MiddleCycle;
        if (!cyc && (r != RouterKind::None || k == KvMode::Share)) continue;
        v.push_back({s, r, k, 3});
      }
  v.push_back({Sharing::MiddleCycle, RouterKind::None, KvMode::Recursion, 1});  // vanilla
  v.push_back({Sharing::Cycle, RouterKind::Expert, KvMode::Recursion, 2});
  return v;
}

// How gtest prints a parameter (found by argument-dependent lookup).
inline void PrintTo(const Combo& c, std::ostream* os) { *os << combo_name(c, true); }

}  // namespace mor::combos
