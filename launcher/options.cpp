#include "launcher/options.h"

#include <boost/make_shared.hpp>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <iostream>
#include <sstream>

namespace po = boost::program_options;

namespace mor {

// One declarative table of every option (name, target, default, help): long because the options
// are many, not because it does much; splitting it would scatter one list.
// One option per line reads better than the formatter's chained-call layout.
// clang-format off
OptionTable::OptionTable(RunConfig& rc) {
  ModelConfig& m = rc.model;
  OptimConfig& o = rc.optim;
  TrainConfig& t = rc.train;
  DataConfig& d = rc.data;
  DistConfig& x = rc.dist;
  CkptConfig& k = rc.ckpt;
  desc.add_options()
    // [model]
    ("model.vocab_size", po::value(&m.vocab_size)->default_value(m.vocab_size), "vocabulary size V")
    ("model.d_model", po::value(&m.d_model)->default_value(m.d_model), "hidden size D")
    ("model.n_heads", po::value(&m.n_heads)->default_value(m.n_heads), "attention heads (head_dim = D / n_heads)")
    ("model.n_kv_heads", po::value(&m.n_kv_heads)->default_value(m.n_kv_heads), "key/value heads (GQA)")
    ("model.d_ff", po::value(&m.d_ff)->default_value(m.d_ff), "SwiGLU hidden size")
    ("model.n_layers", po::value(&m.n_layers)->default_value(m.n_layers), "unrolled depth L")
    ("model.seq_len", po::value(&m.seq_len)->default_value(m.seq_len), "sequence length T")
    ("model.rms_eps", po::value(&m.rms_eps)->default_value(m.rms_eps), "RMSNorm epsilon")
    ("model.rope_theta", po::value(&m.rope_theta)->default_value(m.rope_theta), "RoPE base")
    ("model.init_std", po::value(&m.init_std)->default_value(m.init_std), "std of the N(0, s) init")
    // [mor]
    ("mor.sharing", po::value(&sharing)->default_value(sharing), "cycle | sequence | middle_cycle | middle_sequence")
    ("mor.n_recursions", po::value(&m.n_recursions)->default_value(m.n_recursions), "N_r (1 = vanilla)")
    ("mor.router", po::value(&router)->default_value(router), "none | expert | token")
    ("mor.kv_mode", po::value(&kv_mode)->default_value(kv_mode), "recursion | share")
    ("mor.capacity", po::value(&capacity)->default_value(""), "expert capacities c_0,..; empty = (N_r-r)/N_r")
    ("mor.ec_alpha", po::value(&m.ec_alpha)->default_value(m.ec_alpha), "expert gate scale")
    ("mor.aux_coeff", po::value(&m.aux_coeff)->default_value(m.aux_coeff), "expert BCE auxiliary loss coefficient")
    ("mor.ec_z_coeff", po::value(&m.ec_z_coeff)->default_value(m.ec_z_coeff), "expert router z-loss coefficient")
    ("mor.tc_alpha", po::value(&m.tc_alpha)->default_value(m.tc_alpha), "token gate scale")
    ("mor.bal_coeff", po::value(&m.bal_coeff)->default_value(m.bal_coeff), "token balancing loss coefficient")
    ("mor.tc_z_coeff", po::value(&m.tc_z_coeff)->default_value(m.tc_z_coeff), "token router z-loss coefficient")
    // [optim]
    ("optim.lr", po::value(&o.lr)->default_value(o.lr), "peak learning rate")
    ("optim.min_lr_ratio", po::value(&o.min_lr_ratio)->default_value(o.min_lr_ratio), "final LR / peak LR")
    ("optim.schedule", po::value(&schedule)->default_value(schedule), "wsd (trapezoid) | cosine | constant")
    ("optim.warmup_steps", po::value(&o.warmup_steps)->default_value(o.warmup_steps), "linear warm-up steps")
    ("optim.decay_frac", po::value(&o.decay_frac)->default_value(o.decay_frac), "wsd: fraction of steps in the final linear decay")
    ("optim.beta1", po::value(&o.beta1)->default_value(o.beta1), "AdamW beta1")
    ("optim.beta2", po::value(&o.beta2)->default_value(o.beta2), "AdamW beta2")
    ("optim.eps", po::value(&o.eps)->default_value(o.eps), "AdamW epsilon")
    ("optim.weight_decay", po::value(&o.weight_decay)->default_value(o.weight_decay), "decoupled weight decay")
    ("optim.no_decay", po::value(&o.no_decay)->default_value(o.no_decay), "comma list of name substrings without decay (norms never decay)")
    ("optim.grad_clip", po::value(&o.grad_clip)->default_value(o.grad_clip), "global gradient-norm clip (0 = off)")
    // [train]
    ("train.steps", po::value(&t.steps)->default_value(t.steps), "optimizer steps")
    ("train.global_batch", po::value(&t.global_batch)->default_value(t.global_batch), "sequences per step (all ranks)")
    ("train.micro_batch", po::value(&t.micro_batch)->default_value(t.micro_batch), "sequences per forward/backward (0 = global_batch / world)")
    ("train.seed", po::value(&t.seed)->default_value(t.seed), "seed of init and data order")
    ("train.log_every", po::value(&t.log_every)->default_value(t.log_every), "steps between log lines")
    ("train.eval_every", po::value(&t.eval_every)->default_value(t.eval_every), "steps between validations (0 = at the end only)")
    ("train.eval_samples", po::value(&t.eval_samples)->default_value(t.eval_samples), "validation windows per evaluation (0 = all)")
    ("train.threads", po::value(&t.threads)->default_value(t.threads), "CPU threads per rank (0 = OMP_NUM_THREADS if set, else this rank's share of the CPUs in its affinity mask; the run's batch line says which and why)")
    ("train.device", po::value(&t.device)->default_value(t.device),
     "backend: cpu | cuda (one GPU per process, chosen by MOR_CUDA_DEVICE, else the node-local rank; needs a build "
     "with -DMOR_CUDA=ON)")
    ("train.attention_kernel", po::value(&t.attention_kernel)->default_value(t.attention_kernel),
     "CUDA attention kernel: simple (one block per query and head; the default) | flash (fused "
     "FlashAttention-2-style tiles for head_dim 64 and 128, simple for other head dims). Ignored, with a log line, "
     "on --train.device cpu")
    ("train.gemm", po::value(&t.gemm)->default_value(t.gemm),
     "GEMM library: mixed (oneDNN for forward and input-gradient GEMMs, OpenBLAS for weight gradients; fastest measured) | openblas")
    ("train.recompute", po::value(&t.recompute)->default_value(t.recompute),
     "activation memory: none (keep every layer's activations for backward) | layer (keep each layer's input, run its "
     "forward again in backward: less memory, ~1/3 more compute, the same results bit for bit)")
    ("train.precision", po::value(&t.precision)->default_value(t.precision),
     "GEMM precision: fp32 | bf16 (bf16 operands with fp32 accumulation for every linear layer and the LM head; "
     "fp32 master weights, optimizer, norms, attention, softmax and loss)")
    ("train.peak_gflops", po::value(&t.peak_gflops)->default_value(t.peak_gflops),
     "peak for MFU (0 = measure the GEMM of train.precision)")
    ("train.metrics", po::value(&t.metrics)->default_value(t.metrics), "JSON-lines metrics file")
    ("train.save_params", po::value(&t.save_params)->default_value(t.save_params), "write the final parameters (.mort)")
    ("train.init_params", po::value(&t.init_params)->default_value(t.init_params), "start from parameters (.mort)")
    ("train.nonfinite", po::value(&t.nonfinite)->default_value(t.nonfinite),
     "a NaN/inf loss or gradient norm: stop (exit 4, nothing saved) | skip (the update; stop after train.nonfinite_max in a row)")
    ("train.nonfinite_max", po::value(&t.nonfinite_max)->default_value(t.nonfinite_max),
     "skip: consecutive skipped steps before the run stops (exit 4)")
    // [data]
    ("data.train", po::value(&d.train)->default_value(d.train), "glob of training shards (llm.c .bin)")
    ("data.val", po::value(&d.val)->default_value(d.val), "glob of validation shards")
    ("data.shuffle", po::value(&d.shuffle)->default_value(d.shuffle), "shuffle training samples (seeded)")
    // [dist]
    ("dist.regather_per_recursion", po::value(&x.regather_per_recursion)->default_value(x.regather_per_recursion),
     "all-gather the shared block for every recursion (comparison mode; default: once per pass)")
    ("dist.keep_shared_gathered", po::value(&x.keep_shared_gathered)->default_value(x.keep_shared_gathered),
     "keep the shared block gathered from forward to backward (saves one all-gather, costs memory)")
    ("dist.overlap", po::value(&x.overlap)->default_value(x.overlap),
     "prefetch the next unit's all-gather while the current unit computes")
    ("dist.param_dtype", po::value(&x.param_dtype)->default_value(x.param_dtype),
     "dtype of all-gathered parameters: fp32 | bf16 (half the bytes; every rank computes with the bf16-rounded weights)")
    ("dist.reduce_dtype", po::value(&x.reduce_dtype)->default_value(x.reduce_dtype),
     "dtype in which gradients are reduce-scattered and summed: fp32 | bf16 (half the bytes, rounding in every sum)")
    ("dist.timeout", po::value(&x.timeout)->default_value(x.timeout),
     "seconds a collective may make no progress before every rank is ended with exit 5, naming the collective (0 = wait forever)")
    // [ckpt]
    ("ckpt.dir", po::value(&k.dir)->default_value(k.dir), "checkpoint root directory (HDF5 sharded checkpoints)")
    ("ckpt.save_every", po::value(&k.save_every)->default_value(k.save_every), "steps between checkpoints (0 = at the end / on signal only)")
    ("ckpt.keep_last", po::value(&k.keep_last)->default_value(k.keep_last), "complete checkpoints to keep (>= 2)")
    ("ckpt.direct_io", po::value(&k.direct_io)->default_value(k.direct_io),
     "write shard files, and read them back on a same-world-size resume, with O_DIRECT (no page cache) where the file system accepts it; false = buffered")
    ("ckpt.resume", po::value(&k.resume)->default_value(k.resume), "auto | CHECKPOINT_DIR | empty (fresh start)")
    ("ckpt.allow_rewind", po::value(&k.allow_rewind)->default_value(k.allow_rewind),
     "resume from an older step than the newest checkpoint in ckpt.dir, or start fresh in a ckpt.dir that holds checkpoints: "
     "rename the newer ones to step_N.rewound-TIME (nothing is deleted) instead of refusing")
    ("ckpt.allow_seed_change", po::value(&k.allow_seed_change)->default_value(k.allow_seed_change),
     "resume with another train.seed than the checkpoint's (changes the data order from then on)");
}
// clang-format on

static std::vector<double> parse_list(const std::string& s) {
  std::vector<double> v;
  std::stringstream ss(s);
  for (std::string x; std::getline(ss, x, ',');) {
    if (x.find_first_not_of(" \t") == std::string::npos) continue;
    try {
      size_t used = 0;
      v.push_back(std::stod(x, &used));
      if (x.find_first_not_of(" \t", used) != std::string::npos) throw std::invalid_argument(x);
    } catch (const std::exception&) {
      throw ConfigError("mor.capacity", "'" + x + "' is not a number");
    }
  }
  return v;
}

static void finish(OptionTable& tab, RunConfig& rc) {
  rc.model.sharing = parse_sharing(tab.sharing);
  rc.model.router = parse_router(tab.router);
  rc.model.kv_mode = parse_kv_mode(tab.kv_mode);
  rc.model.capacity = parse_list(tab.capacity);
  rc.optim.schedule = parse_schedule(tab.schedule);
  rc.optim.total_steps = rc.train.steps;
  rc.model.validate();
  rc.optim.validate();
  const TrainConfig& t = rc.train;
  if (t.steps < 1) throw ConfigError("train.steps", "must be >= 1");
  if (t.global_batch < 1) throw ConfigError("train.global_batch", "must be >= 1");
  if (t.micro_batch < 0) throw ConfigError("train.micro_batch", "must be >= 0");
  if (t.log_every < 1) throw ConfigError("train.log_every", "must be >= 1");
  if (t.eval_every < 0) throw ConfigError("train.eval_every", "must be >= 0");
  if (t.eval_samples < 0) throw ConfigError("train.eval_samples", "must be >= 0");
  if (t.threads < 0) throw ConfigError("train.threads", "must be >= 0");
  if (t.device != "cpu" && t.device != "cuda")
    throw ConfigError("train.device", "unknown value '" + t.device + "' (cpu | cuda)");
  if (t.attention_kernel != "simple" && t.attention_kernel != "flash")
    throw ConfigError("train.attention_kernel", "unknown value '" + t.attention_kernel + "' (simple | flash)");
  if (t.gemm != "mixed" && t.gemm != "openblas")
    throw ConfigError("train.gemm", "unknown value '" + t.gemm + "' (mixed | openblas)");
  if (t.recompute != "none" && t.recompute != "layer")
    throw ConfigError("train.recompute", "unknown value '" + t.recompute + "' (none | layer)");
  if (t.precision != "fp32" && t.precision != "bf16")
    throw ConfigError("train.precision", "unknown value '" + t.precision + "' (fp32 | bf16)");
  for (const auto& [key, v] :
       {std::pair{"dist.param_dtype", rc.dist.param_dtype}, {"dist.reduce_dtype", rc.dist.reduce_dtype}})
    if (v != "fp32" && v != "bf16") throw ConfigError(key, "unknown value '" + v + "' (fp32 | bf16)");
  if (t.nonfinite != "stop" && t.nonfinite != "skip")
    throw ConfigError("train.nonfinite", "unknown value '" + t.nonfinite + "' (stop | skip)");
  if (t.nonfinite_max < 1) throw ConfigError("train.nonfinite_max", "must be >= 1");
  if (!(rc.dist.timeout >= 0) || !std::isfinite(rc.dist.timeout))
    throw ConfigError("dist.timeout", "must be a finite number of seconds >= 0 (0 = off)");
  if (rc.ckpt.save_every < 0) throw ConfigError("ckpt.save_every", "must be >= 0");
  if (rc.ckpt.keep_last < 2)
    throw ConfigError("ckpt.keep_last", "must be >= 2 (a crash while pruning must leave one good checkpoint)");
  if (rc.ckpt.resume == "auto" && rc.ckpt.dir.empty()) throw ConfigError("ckpt.resume", "auto needs --ckpt.dir");
}

// ---- error messages ------------------------------------------------------------------------

namespace {

// Drop the UTF-8 continuation bytes at the end of a cut, so the message stays valid UTF-8.
size_t utf8_cut(const std::string& s, size_t n) {
  while (n > 0 && n < s.size() && ((unsigned char)s[n] & 0xC0) == 0x80) --n;
  return n;
}

}  // namespace

std::string clip_value(const std::string& v, size_t keep) {
  if (v.size() <= keep) return v;
  return v.substr(0, utf8_cut(v, keep)) + "... (" + std::to_string(v.size()) + " bytes)";
}

std::string clip_message(const std::string& msg) {
  // Values are quoted ('...'): a quoted part longer than 80 bytes is cut. The text around them is
  // ours and short; a part outside quotes longer than 400 bytes can only be a value holding a
  // quote itself, and is cut too. Control bytes become '?'.
  std::string out;
  size_t i = 0;
  bool quoted = false;
  while (i <= msg.size()) {
    const size_t q = std::min(msg.find('\'', i), msg.size());
    out += clip_value(msg.substr(i, q - i), quoted ? 80 : 400);
    if (q < msg.size()) out += '\'';
    quoted = !quoted;
    i = q + 1;
  }
  for (char& c : out)
    if ((unsigned char)c < 0x20 || c == 0x7f) c = '?';
  if (out.size() > 1000) out = clip_value(out, 1000);  // a value full of quotes
  return out;
}

namespace {

// Edit distance with adjacent transpositions (optimal string alignment): "widht" is 1 from "width".
size_t edit_distance(const std::string& a, const std::string& b) {
  const size_t n = a.size(), m = b.size();
  std::vector<std::vector<size_t>> d(n + 1, std::vector<size_t>(m + 1));
  for (size_t i = 0; i <= n; ++i) d[i][0] = i;
  for (size_t j = 0; j <= m; ++j) d[0][j] = j;
  for (size_t i = 1; i <= n; ++i)
    for (size_t j = 1; j <= m; ++j) {
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1])});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
    }
  return d[n][m];
}

std::string key_of(const std::string& name) {  // "train.steps" -> "steps"
  const size_t dot = name.rfind('.');
  return dot == std::string::npos ? name : name.substr(dot + 1);
}

}  // namespace

std::vector<std::string> suggest_options(const std::string& unknown, const std::vector<std::string>& known) {
  std::string u = unknown;
  while (!u.empty() && u[0] == '-') u.erase(0, 1);
  const size_t eq = u.find('=');
  if (eq != std::string::npos) u.resize(eq);
  if (u.empty() || u.size() > 200) return {};
  // Score: the same key in another section (or without one: --steps) is the best guess; else the
  // edit distance, accepted up to 2 or a quarter of the name.
  std::vector<std::pair<double, std::string>> scored;
  for (const std::string& k : known) {
    if (k == u) continue;
    double score = (double)edit_distance(u, k);
    if (key_of(u) == key_of(k)) score = 0.5;
    if (score <= std::max<double>(2, u.size() / 4)) scored.emplace_back(score, k);
  }
  std::stable_sort(scored.begin(), scored.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<std::string> best;
  for (const auto& [score, k] : scored)
    if (score == scored[0].first && best.size() < 3) best.push_back(k);
  return best;
}

namespace {

std::vector<std::string> long_names(const po::options_description& desc) {
  std::vector<std::string> v;
  for (const auto& o : desc.options()) v.push_back(o->long_name());
  return v;
}

// "did you mean --a or --b?" for the command line; "did you mean 'key' (in [section])?" for a file.
std::string did_you_mean(const std::string& unknown, const po::options_description& desc, bool in_file) {
  const std::vector<std::string> best = suggest_options(unknown, long_names(desc));
  if (best.empty()) return "";
  std::string s = "; did you mean ";
  for (size_t i = 0; i < best.size(); ++i) {
    if (i) s += i + 1 == best.size() ? " or " : ", ";
    const size_t dot = best[i].rfind('.');
    if (in_file && dot != std::string::npos)
      s.append(1, '\'').append(best[i], dot + 1).append("' (in [").append(best[i], 0, dot).append("])");
    else
      s.append("--").append(best[i]);
  }
  return s + "?";
}

}  // namespace

void throw_option_error(const po::error& e, const po::options_description& desc, const std::string& where) {
  std::string msg = where;
  msg.append(e.what());
  std::string opt;
  if (auto n = dynamic_cast<const po::error_with_option_name*>(&e)) opt = n->get_option_name();
  if (dynamic_cast<const po::unknown_option*>(&e)) msg.append(did_you_mean(opt, desc, !where.empty()));
  const size_t name = opt.find_first_not_of('-');
  throw OptionError(name == std::string::npos ? std::string() : opt.substr(name), clip_message(msg));
}

namespace {

// Runs one Boost parse step; its errors become OptionError (status 2) with the message cut to a
// sane length, a "did you mean" for an unknown option, and `where` ("config file 'x.ini': ") in front.
template <class F>
void as_config_error(F&& f, const po::options_description& desc, const std::string& where = "") {
  try {
    f();
  } catch (const po::error& e) {
    throw_option_error(e, desc, where);
  }
}

// Our own checks (finish(), ModelConfig::validate) quote values too: cut those that are long.
template <class F>
void clipped(F&& f) {
  try {
    f();
  } catch (const ConfigError& e) {
    const std::string msg = e.what();
    const std::string cut = clip_message(msg);
    if (cut == msg) throw;
    throw OptionError(e.option, cut);
  }
}

// The config file, opened for reading; a directory or an unreadable path is an error naming it.
std::ifstream open_config(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    throw ConfigError("config", "'" + clip_value(path, 200) + "' is a directory, not a config file");
  std::ifstream f(path);
  if (!f) throw ConfigError("config", "cannot open config file '" + clip_value(path, 200) + "'");
  return f;
}

// ---- --help -----------------------------------------------------------------------------------

// Shortest text that reads back as the same number, in the form a config would use: "3e-3",
// "1e-5", "0.02", "10000", "0.95".
template <class T>
std::string format_real(T x) {
  char fixed[128], sci[128];
  const auto f = std::to_chars(fixed, fixed + sizeof fixed, x, std::chars_format::fixed);
  const auto s = std::to_chars(sci, sci + sizeof sci, x, std::chars_format::scientific);
  std::string fs(fixed, f.ec == std::errc() ? f.ptr : fixed), ss(sci, s.ec == std::errc() ? s.ptr : sci);
  const size_t e = ss.find('e');
  if (e != std::string::npos) {  // "3e-03" -> "3e-3", "1e+04" -> "1e4"
    std::string mant = ss.substr(0, e), exp = ss.substr(e + 1);
    std::string sign = exp[0] == '-' ? "-" : "";
    if (exp[0] == '-' || exp[0] == '+') exp.erase(0, 1);
    while (exp.size() > 1 && exp[0] == '0') exp.erase(0, 1);
    ss = mant + "e" + sign + exp;
  }
  if (fs.empty()) return ss;
  return (x != 0 && std::fabs(x) < 1 && ss.size() < fs.size()) ? ss : fs;
}

// An option's default as written in a config file; nullopt if it has none.
std::optional<std::string> default_text(const po::option_description& o) {
  boost::any v;
  if (!o.semantic()->apply_default(v)) return std::nullopt;
  if (auto p = boost::any_cast<bool>(&v)) return *p ? "true" : "false";
  if (auto p = boost::any_cast<double>(&v)) return format_real(*p);
  if (auto p = boost::any_cast<float>(&v)) return format_real(*p);
  if (auto p = boost::any_cast<std::string>(&v)) return p->empty() ? "\"\"" : *p;
  if (auto p = boost::any_cast<int>(&v)) return std::to_string(*p);
  if (auto p = boost::any_cast<long>(&v)) return std::to_string(*p);
  if (auto p = boost::any_cast<long long>(&v)) return std::to_string(*p);
  if (auto p = boost::any_cast<unsigned>(&v)) return std::to_string(*p);
  if (auto p = boost::any_cast<unsigned long>(&v)) return std::to_string(*p);
  if (auto p = boost::any_cast<unsigned long long>(&v)) return std::to_string(*p);
  // Another type: Boost's own rendering, "arg (=X)".
  const std::string param = o.format_parameter();
  const size_t a = param.find("(="), b = param.rfind(')');
  return a != std::string::npos && b > a ? param.substr(a + 2, b - a - 2) : "";
}

// What `eval` reads: the model, the parameters, the validation data and how to run.
bool eval_uses(const std::string& name) {
  static const std::set<std::string> names = {
      "help",          "config",     "train.init_params", "data.val",     "train.eval_samples", "train.micro_batch",
      "train.threads", "train.gemm", "train.precision",   "router-stats", "train.device",
      "train.attention_kernel"};
  return names.count(name) || name.rfind("model.", 0) == 0 || name.rfind("mor.", 0) == 0;
}

const std::map<std::string, std::string>& eval_descriptions() {
  static const std::map<std::string, std::string> d = {
      {"train.init_params",
       "the parameters to score: a .mort file (--train.save_params), or an HDF5 checkpoint "
       "(a step directory on any number of shards, or a checkpoint root: its newest); required"},
      {"data.val", "glob of validation shards; required"},
      {"train.eval_samples", "validation windows to score (0 = all)"},
      {"train.micro_batch", "windows per forward pass (0 = 8)"},
      {"train.threads", "CPU threads (0 = OMP_NUM_THREADS if set, else every CPU in the affinity mask)"},
      {"train.precision", "GEMM precision of the forward pass: fp32 | bf16 (fp32 accumulation)"},
  };
  return d;
}

// A copy of `from` for display: defaults as a config file would write them; for eval, only what
// eval reads, with eval's wording.
po::options_description help_table(const po::options_description& from, const std::string& caption, bool eval) {
  po::options_description out(caption);
  for (const auto& o : from.options()) {
    if (eval && !eval_uses(o->long_name())) continue;
    std::string desc = o->description();
    if (eval && eval_descriptions().count(o->long_name())) desc = eval_descriptions().at(o->long_name());
    const po::value_semantic* sem = nullptr;
    if (o->semantic()->max_tokens() == 0)
      sem = new po::untyped_value(true);  // a flag (--help)
    else if (const auto d = default_text(*o))
      sem = po::value<std::string>()->default_value(*d, *d);
    else
      sem = po::value<std::string>();
    std::string spec = o->long_name();
    const std::string shown = o->format_name();  // "-h [ --help ]" when there is a short name
    if (shown.size() > 1 && shown[0] == '-' && shown[1] != '-') spec.append(1, ',').append(1, shown[1]);
    out.add(boost::make_shared<po::option_description>(spec.c_str(), sem, desc.c_str()));
  }
  return out;
}

bool parse(int argc, char** argv, RunConfig& rc, const char* usage, bool eval) {
  OptionTable tab(rc);
  po::options_description cli("command line");
  std::string resume, save_every, keep_last;
  cli.add_options()("help,h", "show this help")("config,c", po::value(&rc.config_path),
                                                "INI config file (a [section] key = value file)");
  if (eval)
    cli.add_options()("router-stats", po::bool_switch(&rc.router_stats),
                      "also print the router's statistics over the evaluated windows (docs/MODEL.md, \"Router "
                      "statistics\")");
  if (!eval)
    cli.add_options()("resume", po::value(&resume), "shorthand for --ckpt.resume")(
        "save-every", po::value(&save_every), "shorthand for --ckpt.save_every")("keep-last", po::value(&keep_last),
                                                                                 "shorthand for --ckpt.keep_last");
  po::options_description all;
  all.add(cli).add(tab.desc);
  po::variables_map vm;
  // Exact option names only: Boost's default style would take --train.step for --train.steps.
  const int style = po::command_line_style::default_style & ~po::command_line_style::allow_guessing;
  as_config_error(
      [&] {
        const po::parsed_options parsed = po::command_line_parser(argc, argv).options(all).style(style).run();
        if (eval)
          for (const po::option& o : parsed.options)
            if (!o.string_key.empty() && !eval_uses(o.string_key))
              throw OptionError(o.string_key,
                                "--" + o.string_key + " is not used by eval (mor-dist eval --help lists what is)");
        po::store(parsed, vm);  // first store wins: the command line over the file
      },
      all);
  if (vm.count("help")) {
    std::cout << usage << "\n"
              << help_table(cli, "command line", eval) << "\n"
              << help_table(tab.desc, OptionTable::kCaption, eval) << "\n";
    return false;
  }
  if (vm.count("config")) {
    const std::string path = vm["config"].as<std::string>();
    std::ifstream f = open_config(path);
    as_config_error([&] { po::store(po::parse_config_file(f, tab.desc, /*allow_unregistered=*/false), vm); }, tab.desc,
                    "config file '" + clip_value(path, 200) + "': ");
  }
  as_config_error([&] { po::notify(vm); }, all);
  auto to_int = [](const std::string& v, const char* opt) {
    try {
      size_t used = 0;
      int x = std::stoi(v, &used);
      if (used != v.size()) throw std::invalid_argument(v);
      return x;
    } catch (const std::exception&) {
      throw ConfigError(opt, "'" + clip_value(v, 80) + "' is not an integer");
    }
  };
  if (vm.count("resume")) rc.ckpt.resume = resume;
  if (vm.count("save-every")) rc.ckpt.save_every = to_int(save_every, "save-every");
  if (vm.count("keep-last")) rc.ckpt.keep_last = to_int(keep_last, "keep-last");
  for (int i = 0; i < argc; ++i) {
    if (i) rc.command_line += ' ';
    rc.command_line += argv[i];
  }
  clipped([&] { finish(tab, rc); });
  return true;
}

}  // namespace

po::variables_map parse_command_line(int argc, char** argv, const po::options_description& desc,
                                     const po::positional_options_description* pos) {
  po::variables_map vm;
  try {
    auto p = po::command_line_parser(argc, argv)
                 .options(desc)
                 .style(po::command_line_style::default_style & ~po::command_line_style::allow_guessing);
    if (pos) p.positional(*pos);
    po::store(p.run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    throw_option_error(e, desc);  // "did you mean" for a typo
  }
  return vm;
}

bool parse_run_config(int argc, char** argv, RunConfig& rc, const char* usage) {
  return parse(argc, argv, rc, usage, argc > 0 && std::string(argv[0]) == "eval");
}

RunConfig load_config_file(const std::string& path) {
  RunConfig rc;
  OptionTable tab(rc);
  po::variables_map vm;
  std::ifstream f = open_config(path);
  as_config_error(
      [&] {
        po::store(po::parse_config_file(f, tab.desc, false), vm);
        po::notify(vm);
      },
      tab.desc, "config file '" + clip_value(path, 200) + "': ");
  clipped([&] { finish(tab, rc); });
  rc.config_path = path;
  return rc;
}

// A checkpoint's recorded model config (INI text), through the same table and checks.
RunConfig load_config_text(const std::string& ini) {
  RunConfig rc;
  OptionTable tab(rc);
  po::variables_map vm;
  as_config_error(
      [&] {
        std::istringstream f(ini);
        po::store(po::parse_config_file(f, tab.desc, false), vm);
        po::notify(vm);
      },
      tab.desc, "recorded model config: ");
  clipped([&] { finish(tab, rc); });
  return rc;
}

}  // namespace mor
