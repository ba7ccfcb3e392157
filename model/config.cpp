#include "model/config.h"

#include <cmath>
#include <sstream>

namespace mor {

Sharing parse_sharing(const std::string& s) {
  if (s == "cycle") return Sharing::Cycle;
  if (s == "sequence") return Sharing::Sequence;
  if (s == "middle_cycle") return Sharing::MiddleCycle;
  if (s == "middle_sequence") return Sharing::MiddleSequence;
  throw ConfigError("mor.sharing", "unknown value '" + s + "' (cycle, sequence, middle_cycle, middle_sequence)");
}
RouterKind parse_router(const std::string& s) {
  if (s == "none") return RouterKind::None;
  if (s == "expert") return RouterKind::Expert;
  if (s == "token") return RouterKind::Token;
  throw ConfigError("mor.router", "unknown value '" + s + "' (none, expert, token)");
}
KvMode parse_kv_mode(const std::string& s) {
  if (s == "recursion") return KvMode::Recursion;
  if (s == "share") return KvMode::Share;
  throw ConfigError("mor.kv_mode", "unknown value '" + s + "' (recursion, share)");
}
const char* to_string(Sharing s) {
  switch (s) {
    case Sharing::Cycle:
      return "cycle";
    case Sharing::Sequence:
      return "sequence";
    case Sharing::MiddleCycle:
      return "middle_cycle";
    case Sharing::MiddleSequence:
      return "middle_sequence";
  }
  return "?";
}
const char* to_string(RouterKind r) {
  switch (r) {
    case RouterKind::None:
      return "none";
    case RouterKind::Expert:
      return "expert";
    case RouterKind::Token:
      return "token";
  }
  return "?";
}
const char* to_string(KvMode k) { return k == KvMode::Share ? "share" : "recursion"; }

double ModelConfig::capacity_of(int r) const {
  if (!capacity.empty()) return capacity[r];
  return double(n_recursions - r) / n_recursions;
}

int ModelConfig::expert_k(int r) const {
  int k = (int)std::floor(capacity_of(r) * seq_len + 1e-6);
  return k < 1 ? 1 : k;
}

static void require(bool ok, const char* opt, const std::string& msg) {
  if (!ok) throw ConfigError(opt, msg);
}

void ModelConfig::validate() const {
  auto str = [](auto v) {
    std::ostringstream o;
    o << v;
    return o.str();
  };
  require(vocab_size >= 2, "model.vocab_size", "must be >= 2, got " + str(vocab_size));
  require(d_model >= 2, "model.d_model", "must be >= 2, got " + str(d_model));
  require(n_heads >= 1, "model.n_heads", "must be >= 1, got " + str(n_heads));
  require(d_model % n_heads == 0, "model.n_heads", str(n_heads) + " does not divide model.d_model = " + str(d_model));
  require(head_dim() % 2 == 0, "model.n_heads",
          "head_dim = d_model / n_heads = " + str(head_dim()) + " must be even (RoPE)");
  require(n_kv_heads >= 1 && n_heads % n_kv_heads == 0, "model.n_kv_heads",
          str(n_kv_heads) + " must be >= 1 and divide model.n_heads = " + str(n_heads));
  require(d_ff >= 1, "model.d_ff", "must be >= 1, got " + str(d_ff));
  require(seq_len >= 1, "model.seq_len", "must be >= 1, got " + str(seq_len));
  require(rms_eps > 0, "model.rms_eps", "must be > 0");
  require(rope_theta > 0, "model.rope_theta", "must be > 0");
  require(init_std > 0, "model.init_std", "must be > 0");
  require(n_recursions >= 1, "mor.n_recursions", "must be >= 1, got " + str(n_recursions));
  const int extra = middle() ? 2 : 0;
  require(n_layers >= extra + n_recursions, "model.n_layers",
          str(n_layers) + " is too small for sharing = " + to_string(sharing) +
              " with n_recursions = " + str(n_recursions));
  if (section_layers() % n_recursions != 0) {
    int below = section_layers() / n_recursions * n_recursions + extra;
    int above = below + n_recursions;
    throw ConfigError("model.n_layers", str(n_layers) + (middle() ? " - 2" : "") +
                                            " is not divisible by mor.n_recursions = " + str(n_recursions) +
                                            "; the nearest valid layer counts are " + str(below) + " and " +
                                            str(above) + " (mor-dist never drops layers silently)");
  }
  if (router != RouterKind::None && n_recursions < 2)
    throw ConfigError("mor.router", std::string(to_string(router)) +
                                        " routing needs mor.n_recursions >= 2 (N_r = 1 is the plain decoder)");
  if (router != RouterKind::None || kv_mode == KvMode::Share) {
    const char* what = router != RouterKind::None ? "mor.router" : "mor.kv_mode";
    require(cyclic(), what, std::string("needs sharing = cycle or middle_cycle, got ") + to_string(sharing));
  }
  if (router == RouterKind::Expert) {
    if (!capacity.empty())
      require((int)capacity.size() == n_recursions, "mor.capacity",
              "has " + str(capacity.size()) + " values but mor.n_recursions = " + str(n_recursions));
    for (int r = 0; r < n_recursions; ++r) {
      double c = capacity_of(r);
      require(c > 0 && c <= 1, "mor.capacity", "value " + str(c) + " at recursion " + str(r) + " is outside (0, 1]");
      if (r > 0) require(c <= capacity_of(r - 1), "mor.capacity", "capacities must be non-increasing");
    }
    if (kv_mode == KvMode::Share)
      require(expert_k(0) == seq_len, "mor.capacity",
              "kv_mode = share needs capacity[0] = 1 (recursion 0 must see every token)");
    require(ec_alpha > 0, "mor.ec_alpha", "must be > 0");
  } else {
    require(capacity.empty(), "mor.capacity", "only applies to mor.router = expert");
  }
  if (router == RouterKind::Token) require(tc_alpha > 0, "mor.tc_alpha", "must be > 0");
  require(aux_coeff >= 0 && ec_z_coeff >= 0 && bal_coeff >= 0 && tc_z_coeff >= 0, "mor.aux_coeff",
          "loss coefficients must be >= 0");
}

std::string ModelConfig::to_ini() const {
  std::ostringstream f;
  f.precision(9);
  f << "[model]\nvocab_size = " << vocab_size << "\nd_model = " << d_model << "\nn_heads = " << n_heads
    << "\nn_kv_heads = " << n_kv_heads << "\nd_ff = " << d_ff << "\nn_layers = " << n_layers
    << "\nseq_len = " << seq_len << "\nrms_eps = " << rms_eps << "\nrope_theta = " << rope_theta
    << "\ninit_std = " << init_std << "\n\n[mor]\nsharing = " << to_string(sharing)
    << "\nn_recursions = " << n_recursions << "\nrouter = " << to_string(router) << "\nkv_mode = " << to_string(kv_mode)
    << "\ncapacity = ";
  for (size_t i = 0; i < capacity.size(); ++i) f << (i ? "," : "") << capacity[i];
  f << "\nec_alpha = " << ec_alpha << "\naux_coeff = " << aux_coeff << "\nec_z_coeff = " << ec_z_coeff
    << "\ntc_alpha = " << tc_alpha << "\nbal_coeff = " << bal_coeff << "\ntc_z_coeff = " << tc_z_coeff << "\n";
  return f.str();
}

}  // namespace mor
