// `mor-dist export`: a checkpoint's parameters in the Hugging Face layout (safetensors + config.json).
// A vanilla model (N_r = 1) is a standard LlamaForCausalLM: mor-dist's tensor names already are the
// Hugging Face Llama names (docs/MODEL.md), the head is tied to the embedding. A MoR model keeps
// mor-dist's names (the shared block once, as model.shared_layers.j; the routers) and describes
// its recursion in a "mor" object of config.json (docs/MODEL.md, "Export").
#include <sys/stat.h>

#include <boost/program_options.hpp>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>

#include "io/ckpt/checkpoint.h"
#include "io/ckpt/safetensors.h"
#include "launcher/log.h"
#include "launcher/options.h"
#include "launcher/params_io.h"
#include "launcher/train.h"
#include "model/params.h"

namespace po = boost::program_options;

namespace mor {

namespace {

// The shortest JSON number that reads back as the same value (0.1f prints 0.1, not 0.100000001).
std::string num(double v, bool single) {
  char b[32];
  for (int p = 1; p <= 17; ++p) {
    std::snprintf(b, sizeof b, "%.*g", p, v);
    if (single ? std::strtof(b, nullptr) == (float)v : std::strtod(b, nullptr) == v) break;
  }
  return b;
}
std::string num(float v) { return num(v, true); }
std::string num(double v) { return num(v, false); }

// Bytes from "5GB", "500MB", "1000000" (decimal units, as Hugging Face's max_shard_size).
int64_t parse_size(const std::string& s) {
  size_t used = 0;
  double v = 0;
  try {
    v = std::stod(s, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  const std::string unit = s.substr(used);
  double mult = unit.empty() || unit == "B" ? 1 : unit == "KB" ? 1e3 : unit == "MB" ? 1e6 : unit == "GB" ? 1e9 : -1;
  if (used == 0 || mult < 0 || !(v * mult >= 1) || v * mult > 9e18)
    throw ConfigError("max-shard-size", "'" + s + "' is not a size (e.g. 5GB, 500MB, 1000000)");
  return (int64_t)(v * mult);
}

std::string config_json(const ModelConfig& c, const ParamLayout& L) {
  std::string j = "{\n";
  auto field = [&](const std::string& k, const std::string& v) { j += "  " + io::json_string(k) + ": " + v + ",\n"; };
  const bool vanilla = c.n_recursions == 1;
  field("architectures", vanilla ? "[\"LlamaForCausalLM\"]" : "[\"MoRLlamaForCausalLM\"]");
  field("model_type", "\"llama\"");
  field("vocab_size", std::to_string(c.vocab_size));
  field("hidden_size", std::to_string(c.d_model));
  field("intermediate_size", std::to_string(c.d_ff));
  field("num_hidden_layers", std::to_string(c.n_layers));
  field("num_attention_heads", std::to_string(c.n_heads));
  field("num_key_value_heads", std::to_string(c.n_kv_heads));
  field("head_dim", std::to_string(c.head_dim()));
  field("hidden_act", "\"silu\"");
  field("max_position_embeddings", std::to_string(c.seq_len));
  field("rms_norm_eps", num(c.rms_eps));
  field("rope_theta", num(c.rope_theta));
  field("rope_scaling", "null");
  field("attention_bias", "false");
  field("attention_dropout", "0.0");
  field("mlp_bias", "false");
  field("pretraining_tp", "1");
  field("initializer_range", num(c.init_std));
  field("tie_word_embeddings", "true");
  field("use_cache", "true");
  if (!vanilla) {
    std::string caps = "[";
    for (int r = 0; r < c.n_recursions; ++r) caps += (r ? ", " : "") + num(c.capacity_of(r));
    caps += "]";
    field("mor", "{\"sharing\": " + io::json_string(to_string(c.sharing)) + ", \"num_recursions\": " +
                     std::to_string(c.n_recursions) + ", \"block_size\": " + std::to_string(L.block_size) +
                     ", \"router\": " + io::json_string(to_string(c.router)) +
                     ", \"kv_mode\": " + io::json_string(to_string(c.kv_mode)) + ", \"capacity\": " + caps +
                     ", \"expert_alpha\": " + num(c.ec_alpha) + ", \"token_alpha\": " + num(c.tc_alpha) + "}");
  }
  j += "  \"torch_dtype\": \"float32\"\n}\n";
  return j;
}

}  // namespace

int cmd_export(int argc, char** argv) {
  std::string src, out, max_size = "5GB";
  po::options_description desc("usage: mor-dist export --ckpt CHECKPOINT --out DIR [--max-shard-size 5GB]");
  desc.add_options()("help,h", "show this help")("ckpt", po::value(&src),
                                                 "checkpoint: a step directory, or a checkpoint root (its newest)")(
      "out", po::value(&out), "output directory (must not exist): config.json and safetensors")(
      "max-shard-size", po::value(&max_size)->default_value(max_size),
      "largest safetensors file (decimal units: 5GB, 500MB, bytes); above it the tensors are split over "
      "model-0000K-of-0000N.safetensors files with model.safetensors.index.json, as Hugging Face does");
  const po::variables_map vm = parse_command_line(argc, argv, desc);
  if (vm.count("help")) {
    std::cout << desc << "\n";
    return 0;
  }
  if (src.empty()) throw ConfigError("ckpt", "is required: the checkpoint to export");
  if (out.empty()) throw ConfigError("out", "is required: the directory to write");
  const int64_t max_bytes = parse_size(max_size);
  struct stat st;
  if (::stat(out.c_str(), &st) == 0) throw ConfigError("out", "'" + out + "' exists; export never overwrites");

  const std::string dir = checkpoint_dir(src);
  const ckpt::Index idx = ckpt::read_index(dir);
  ModelConfig mc;
  try {
    mc = load_config_text(idx.state.model_config).model;
  } catch (const std::exception& e) {
    throw std::runtime_error("checkpoint '" + dir + "/index.h5': its model config is not valid: " + e.what());
  }
  const ParamLayout L(mc);
  std::vector<float> arena((size_t)L.total);
  load_checkpoint_params(dir, idx, L, arena.data());

  std::vector<io::SafeTensor> ts;
  for (const TensorInfo& t : L.tensors) {
    std::vector<int64_t> shape = t.is_1d ? std::vector<int64_t>{t.rows} : std::vector<int64_t>{t.rows, t.cols};
    ts.push_back({t.name, shape, arena.data() + t.offset});
  }
  // Written next to the target and renamed at the end: an interrupted export leaves no DIR.
  const std::string tmp = out + ".tmp";
  if (::stat(tmp.c_str(), &st) == 0)
    throw ConfigError("out", "'" + tmp + "' exists (an interrupted export?): remove it");
  if (::mkdir(tmp.c_str(), 0755) != 0) throw std::runtime_error("cannot create '" + tmp + "'");
  std::vector<std::string> files;
  try {
    files = io::write_safetensors(tmp, ts, max_bytes, {{"format", "pt"}, {"source", "mor-dist checkpoint " + dir}});
    io::write_text_file(tmp + "/config.json", config_json(mc, L));
    if (std::rename(tmp.c_str(), out.c_str()) != 0)
      throw std::runtime_error("cannot rename '" + tmp + "' to '" + out + "'");
  } catch (...) {
    std::error_code ec;
    std::filesystem::remove_all(tmp, ec);  // what was written so far; the error that got us here is reported
    throw;
  }
  logf("exported %s (step %lld, %s) to %s: config.json + %zu file%s, %zu tensors, %.1f MB\n", dir.c_str(),
       (long long)idx.state.step, mc.n_recursions == 1 ? "LlamaForCausalLM" : "MoR", out.c_str(), files.size(),
       files.size() == 1 ? "" : "s", ts.size(), 4.0 * L.total / 1e6);
  return 0;
}

}  // namespace mor
