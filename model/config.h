// Model configuration: the shape of the decoder, the recursion/sharing layout,
// the router and its losses. Plain data; validate() names the offending option.
// The exact semantics of every field: docs/MODEL.md.
#pragma once
#include <stdexcept>
#include <string>
#include <vector>

namespace mor {

// A configuration error that names the option; the CLI exits with status 2 on it.
struct ConfigError : std::runtime_error {
  std::string option;
  ConfigError(std::string opt, const std::string& msg)
      : std::runtime_error("--" + opt + ": " + msg), option(std::move(opt)) {}
};

enum class Sharing { Cycle, Sequence, MiddleCycle, MiddleSequence };
enum class RouterKind { None, Expert, Token };
enum class KvMode { Recursion, Share };

Sharing parse_sharing(const std::string& s);
RouterKind parse_router(const std::string& s);
KvMode parse_kv_mode(const std::string& s);
const char* to_string(Sharing s);
const char* to_string(RouterKind r);
const char* to_string(KvMode k);

struct ModelConfig {
  // [model]
  int vocab_size = 50304;
  int d_model = 576;
  int n_heads = 9;
  int n_kv_heads = 3;
  int d_ff = 1536;
  int n_layers = 30;
  int seq_len = 2048;
  float rms_eps = 1e-5f;
  double rope_theta = 10000.0;
  float init_std = 0.02f;
  // [mor]
  Sharing sharing = Sharing::MiddleCycle;
  int n_recursions = 1;
  RouterKind router = RouterKind::None;
  KvMode kv_mode = KvMode::Recursion;
  std::vector<double> capacity{};  // expert: c_r; empty = (N_r - r) / N_r
  float ec_alpha = 0.1f;
  float aux_coeff = 0.001f;
  float ec_z_coeff = 0.f;
  float tc_alpha = 1.f;
  float bal_coeff = 0.1f;
  float tc_z_coeff = 1e-5f;

  int head_dim() const { return d_model / n_heads; }
  bool middle() const { return sharing == Sharing::MiddleCycle || sharing == Sharing::MiddleSequence; }
  bool cyclic() const { return sharing == Sharing::Cycle || sharing == Sharing::MiddleCycle; }
  // Unrolled layers inside the recursion section (all but the unique first/last).
  int section_layers() const { return middle() ? n_layers - 2 : n_layers; }
  // B: unique layers of the shared block.
  int block_size() const { return section_layers() / n_recursions; }
  double capacity_of(int r) const;
  // Tokens kept per sequence at expert-choice recursion r: max(1, floor(c_r T + 1e-6)).
  int expert_k(int r) const;
  // Throws ConfigError naming the first inconsistent option.
  void validate() const;
  // Canonical [model] + [mor] INI: what checkpoints record and resume compares.
  std::string to_ini() const;
};

}  // namespace mor
