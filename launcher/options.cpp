#include "launcher/options.h"

#include <fstream>
#include <iostream>
#include <sstream>

namespace po = boost::program_options;

namespace mor {

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
    ("train.threads", po::value(&t.threads)->default_value(t.threads), "CPU threads (0 = all cores)")
    ("train.gemm", po::value(&t.gemm)->default_value(t.gemm),
     "GEMM library: mixed (oneDNN for forward and input-gradient GEMMs, OpenBLAS for weight gradients; fastest measured) | openblas")
    ("train.peak_gflops", po::value(&t.peak_gflops)->default_value(t.peak_gflops), "peak for MFU (0 = measure sgemm)")
    ("train.metrics", po::value(&t.metrics)->default_value(t.metrics), "JSON-lines metrics file")
    ("train.save_params", po::value(&t.save_params)->default_value(t.save_params), "write the final parameters (.mort)")
    ("train.init_params", po::value(&t.init_params)->default_value(t.init_params), "start from parameters (.mort)")
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
    // [ckpt]
    ("ckpt.dir", po::value(&k.dir)->default_value(k.dir), "checkpoint root directory (HDF5 sharded checkpoints)")
    ("ckpt.save_every", po::value(&k.save_every)->default_value(k.save_every), "steps between checkpoints (0 = at the end / on signal only)")
    ("ckpt.keep_last", po::value(&k.keep_last)->default_value(k.keep_last), "complete checkpoints to keep (>= 2)")
    ("ckpt.direct_io", po::value(&k.direct_io)->default_value(k.direct_io),
     "write shard files, and read them back on a same-world-size resume, with O_DIRECT (no page cache) where the file system accepts it; false = buffered")
    ("ckpt.resume", po::value(&k.resume)->default_value(k.resume), "auto | CHECKPOINT_DIR | empty (fresh start)");
}

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
  if (t.gemm != "mixed" && t.gemm != "openblas") throw ConfigError("train.gemm", "unknown value '" + t.gemm + "' (mixed | openblas)");
  if (rc.ckpt.save_every < 0) throw ConfigError("ckpt.save_every", "must be >= 0");
  if (rc.ckpt.keep_last < 2) throw ConfigError("ckpt.keep_last", "must be >= 2 (a crash while pruning must leave one good checkpoint)");
  if (rc.ckpt.resume == "auto" && rc.ckpt.dir.empty()) throw ConfigError("ckpt.resume", "auto needs --ckpt.dir");
}

// Boost reports errors with the option name; rethrow as ConfigError (status 2).
template <class F>
static void as_config_error(F&& f) {
  try {
    f();
  } catch (const po::error_with_option_name& e) {
    std::string opt = e.get_option_name();
    while (!opt.empty() && opt[0] == '-') opt.erase(0, 1);
    throw ConfigError(opt.empty() ? "config" : opt, e.what());
  } catch (const po::error& e) {
    throw ConfigError("config", e.what());
  }
}

bool parse_run_config(int argc, char** argv, RunConfig& rc, const char* usage) {
  OptionTable tab(rc);
  po::options_description cli("command line");
  std::string resume, save_every, keep_last;
  cli.add_options()("help,h", "show this help")("config,c", po::value(&rc.config_path), "INI config file")
    ("resume", po::value(&resume), "shorthand for --ckpt.resume")
    ("save-every", po::value(&save_every), "shorthand for --ckpt.save_every")
    ("keep-last", po::value(&keep_last), "shorthand for --ckpt.keep_last");
  po::options_description all;
  all.add(cli).add(tab.desc);
  po::variables_map vm;
  as_config_error([&] {
    po::store(po::command_line_parser(argc, argv).options(all).run(), vm);  // first store wins: CLI over file
    if (vm.count("help")) return;
    if (vm.count("config")) {
      const std::string path = vm["config"].as<std::string>();
      std::ifstream f(path);
      if (!f) throw ConfigError("config", "cannot open config file '" + path + "'");
      po::store(po::parse_config_file(f, tab.desc, /*allow_unregistered=*/false), vm);
    }
    po::notify(vm);
  });
  if (vm.count("help")) {
    std::cout << usage << "\n" << cli << "\n" << tab.desc << "\n";
    return false;
  }
  auto to_int = [](const std::string& v, const char* opt) {
    try {
      size_t used = 0;
      int x = std::stoi(v, &used);
      if (used != v.size()) throw std::invalid_argument(v);
      return x;
    } catch (const std::exception&) {
      throw ConfigError(opt, "'" + v + "' is not an integer");
    }
  };
  if (vm.count("resume")) rc.ckpt.resume = resume;
  if (vm.count("save-every")) rc.ckpt.save_every = to_int(save_every, "save-every");
  if (vm.count("keep-last")) rc.ckpt.keep_last = to_int(keep_last, "keep-last");
  for (int i = 0; i < argc; ++i) {
    if (i) rc.command_line += ' ';
    rc.command_line += argv[i];
  }
  finish(tab, rc);
  return true;
}

RunConfig load_config_file(const std::string& path) {
  RunConfig rc;
  OptionTable tab(rc);
  po::variables_map vm;
  as_config_error([&] {
    std::ifstream f(path);
    if (!f) throw ConfigError("config", "cannot open config file '" + path + "'");
    po::store(po::parse_config_file(f, tab.desc, false), vm);
    po::notify(vm);
  });
  finish(tab, rc);
  rc.config_path = path;
  return rc;
}

}  // namespace mor
