// `mor-dist export`: a checkpoint's parameters in the Hugging Face layout (safetensors + config.json).
// A vanilla model (N_r = 1) is a standard LlamaForCausalLM: mor-dist's tensor names already are the
// Hugging Face Llama names (docs/MODEL.md), the head is tied to the embedding. A model with
// recursions is written under the state-dict names of the upstream MoR code (its Llama model after
// the sharing strategy and the MoR transform), every alias of a shared tensor included, and
// config.json carries the upstream config groups (recursive, mor, kv_sharing) next to the Llama
// fields (docs/MODEL.md, "Export").
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

// A float as Python's repr writes it (upstream's capacity string is ",".join(str(float))): the
// shortest round-trip digits, with ".0" on integral values (1.0, not 1).
std::string py_float(double v) {
  std::string s = num(v);
  if (s.find_first_of(".eEni") == std::string::npos) s += ".0";
  return s;
}

// One tensor of the export: its name there and the mor-dist tensor whose data it carries.
struct Exported {
  std::string name;
  const TensorInfo* src;
};

// The names a model is exported under (docs/MODEL.md, "Export"). N_r = 1: mor-dist's own names,
// which are LlamaForCausalLM's. N_r > 1: the state dict of the upstream MoR code's model, where a
// shared tensor appears once per position that uses it:
//   no router (upstream's recursive Llama, every sharing): model.layers.{l} for every unrolled l;
//   expert, middle_cycle: model.layers.0, model.layers.{1+r}.block.{j}, model.layers.{1+r}.mor_router.router,
//     model.layers.{N_r+1};  expert, cycle: model.layers.{r}.block.{j}, model.layers.{r}.mor_router.router;
//   token, middle_cycle: model.layers.0, model.layers.1.block_list.{r}.{j}, model.layers.1.mor_router.router,
//     model.layers.2;  token, cycle: model.layers.block_list.{r}.{j}, model.layers.mor_router.router;
// plus lm_head.weight (tied to the embedding upstream, so a copy of it in the file).
std::vector<Exported> export_names(const ModelConfig& c, const ParamLayout& L) {
  std::vector<Exported> out;
  if (c.n_recursions == 1) {
    for (const TensorInfo& t : L.tensors) out.push_back({t.name, &t});
    return out;
  }
  constexpr int kPerLayer = 9;  // tensors of one unique layer, in ParamLayout's order
  auto layer = [&](const std::string& prefix, int ul) {
    for (int t = 0; t < kPerLayer; ++t) {
      const TensorInfo& ti = L.tensors[(size_t)(1 + kPerLayer * ul + t)];
      // mor-dist's name is model.{layers|shared_layers}.{i}.SUFFIX: keep SUFFIX.
      size_t dot = ti.name.find('.', ti.name.find('.', ti.name.find('.') + 1) + 1);
      out.push_back({prefix + ti.name.substr(dot + 1), &ti});
    }
  };
  auto named = [&](const std::string& name, const std::string& mine) {
    const TensorInfo* t = L.find(mine);
    if (!t) throw std::logic_error("export: no tensor " + mine);
    out.push_back({name, t});
  };
  const int R = c.n_recursions, B = L.block_size;
  const bool mid = c.middle();
  const std::string Ls = "model.layers.";
  named("model.embed_tokens.weight", "model.embed_tokens.weight");
  if (c.router == RouterKind::None) {
    for (int l = 0; l < c.n_layers; ++l) {
      int ul = mid && l == 0 ? L.prelude : mid && l == c.n_layers - 1 ? L.coda : L.section_layer(l - (mid ? 1 : 0), c);
      layer(Ls + std::to_string(l) + ".", ul);
    }
  } else {
    if (mid) layer(Ls + "0.", L.prelude);
    if (c.router == RouterKind::Expert) {
      for (int r = 0; r < R; ++r) {
        const std::string p = Ls + std::to_string(r + (mid ? 1 : 0)) + ".";
        for (int j = 0; j < B; ++j) layer(p + "block." + std::to_string(j) + ".", L.block_first + j);
        named(p + "mor_router.router.weight", "model.routers." + std::to_string(r) + ".weight");
      }
    } else {
      const std::string p = mid ? Ls + "1." : Ls;
      for (int r = 0; r < R; ++r)
        for (int j = 0; j < B; ++j)
          layer(p + "block_list." + std::to_string(r) + "." + std::to_string(j) + ".", L.block_first + j);
      named(p + "mor_router.router.weight", "model.router.weight");
    }
    // The coda follows the MoR layers: N_r of them for expert-choice, one for token-choice.
    if (mid) layer(Ls + std::to_string(c.router == RouterKind::Expert ? R + 1 : 2) + ".", L.coda);
  }
  named("model.norm.weight", "model.norm.weight");
  named("lm_head.weight", "model.embed_tokens.weight");
  return out;
}

std::string config_json(const ModelConfig& c, const ParamLayout& L) {
  std::string j = "{\n";
  auto field = [&](const std::string& k, const std::string& v) { j += "  " + io::json_string(k) + ": " + v + ",\n"; };
  const bool vanilla = c.n_recursions == 1, routed = c.router != RouterKind::None;
  field("architectures", routed && !vanilla ? "[\"MoRLlamaForCausalLM\"]" : "[\"LlamaForCausalLM\"]");
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
    const std::string R = std::to_string(c.n_recursions), B = std::to_string(L.block_size);
    const std::string sharing = io::json_string(to_string(c.sharing));
    const bool share = c.kv_mode == KvMode::Share;
    // The upstream config groups, under upstream's names and value formats.
    field("recursive", "{\"enable\": true, \"sharing\": " + sharing + ", \"num_recursion\": " + R +
                           ", \"base_depth\": " + B + ", \"ln_share\": true}");
    if (routed) {
      std::string caps;
      for (int r = 0; r < c.n_recursions; ++r) {
        if (r) caps += ',';
        caps += py_float(c.capacity_of(r));
      }
      const bool z = c.router == RouterKind::Expert ? c.ec_z_coeff > 0 : c.tc_z_coeff > 0;
      field("mor", std::string("{\"enable\": true, \"type\": ") + io::json_string(to_string(c.router)) +
                       ", \"capacity\": " + io::json_string(caps) +
                       ", \"rand_router\": false, \"router_type\": \"linear\", \"temp\": 1.0, \"z_loss\": " +
                       (z ? "true" : "false") +
                       ", \"z_coeff\": " + num(c.router == RouterKind::Expert ? c.ec_z_coeff : c.tc_z_coeff) +
                       ", \"expert\": {\"router_func\": \"sigmoid\", \"alpha\": " + num(c.ec_alpha) +
                       ", \"sampling\": \"aux_loss\", \"coeff\": " + num(c.aux_coeff) +
                       ", \"gating\": \"weighted\", \"cap_warmup_step\": 0}" +
                       ", \"token\": {\"router_func\": \"softmax\", \"alpha\": " + num(c.tc_alpha) +
                       ", \"balancing\": \"loss\", \"coeff\": " + num(c.bal_coeff) +
                       ", \"gating\": \"weighted\", \"bal_warmup_step\": 0}}");
    } else {
      field("mor", "{\"enable\": false}");
    }
    field("kv_sharing", std::string("{\"enable\": ") + (share ? "true" : "false") + ", \"sharing\": " +
                            (share ? sharing : "null") + ", \"num_recursion\": " + (share ? R : "null") +
                            ", \"base_depth\": " + (share ? B : "null") + ", \"update_cache\": false}");
    // mor-dist's own [mor] options, verbatim: what the upstream groups cannot say (the per-recursion
    // capacities as numbers, the z-loss coefficient of the router not in use, the kv_mode name).
    std::string caps = "[";
    for (int r = 0; r < c.n_recursions; ++r) {
      if (r) caps += ", ";
      caps += num(c.capacity_of(r));
    }
    caps += "]";
    field("mor_dist", "{\"sharing\": " + sharing + ", \"n_recursions\": " + R + ", \"block_size\": " + B +
                          ", \"router\": " + io::json_string(to_string(c.router)) +
                          ", \"kv_mode\": " + io::json_string(to_string(c.kv_mode)) + ", \"capacity\": " + caps +
                          ", \"ec_alpha\": " + num(c.ec_alpha) + ", \"aux_coeff\": " + num(c.aux_coeff) +
                          ", \"ec_z_coeff\": " + num(c.ec_z_coeff) + ", \"tc_alpha\": " + num(c.tc_alpha) +
                          ", \"bal_coeff\": " + num(c.bal_coeff) + ", \"tc_z_coeff\": " + num(c.tc_z_coeff) + "}");
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
  for (const Exported& e : export_names(mc, L)) {
    const TensorInfo& t = *e.src;
    std::vector<int64_t> shape = t.is_1d ? std::vector<int64_t>{t.rows} : std::vector<int64_t>{t.rows, t.cols};
    ts.push_back({e.name, shape, arena.data() + t.offset});  // an alias reads the same floats again
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
  int64_t floats = 0;
  for (const io::SafeTensor& t : ts) {
    int64_t n = 1;
    for (int64_t d : t.shape) n *= d;
    floats += n;
  }
  const char* kind = mc.n_recursions == 1            ? "LlamaForCausalLM"
                     : mc.router == RouterKind::None ? "upstream recursive Llama names"
                                                     : "upstream MoR names";
  logf("exported %s (step %lld, %s) to %s: config.json + %zu file%s, %zu tensors (%lld distinct), %.1f MB\n",
       dir.c_str(), (long long)idx.state.step, kind, out.c_str(), files.size(), files.size() == 1 ? "" : "s", ts.size(),
       (long long)L.tensors.size(), 4.0 * floats / 1e6);
  return 0;
}

}  // namespace mor
