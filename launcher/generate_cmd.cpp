// `mor-dist generate`: text from a checkpoint, with recursion-wise KV caching and continuous
// depth-wise batching (model/decode.h, model/generate.h; docs/MODEL.md "Decoding").
//   stdout: a single --prompt's continuation, streamed token by token (then an "ids:" line with
//           --ids); --prompts without --out: one JSON line per prompt, in prompt order;
//   --out:  the JSON lines go to this file instead (for --prompt too);
//   stderr: the log, and a summary with the KV-cache bytes per sequence against a vanilla cache.
// Input errors (options, files, prompts) exit with status 2 naming the option.
#include <sys/stat.h>

#include <algorithm>
#include <boost/program_options.hpp>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "io/ckpt/checkpoint.h"
#include "io/data/tokenizer.h"
#include "launcher/log.h"
#include "launcher/options.h"
#include "launcher/params_io.h"
#include "launcher/run_backend.h"
#include "launcher/stop_signal.h"
#include "launcher/threads.h"
#include "launcher/train.h"
#include "model/generate.h"

namespace po = boost::program_options;

namespace mor {

namespace {

struct GenArgs {
  std::string ckpt, config, tokenizer, prompt, prompts, out;
  int max_new_tokens = 64, top_k = 0, batch = 1, threads = 0;
  float temperature = 1.f, top_p = 1.f, threshold = 0.5f;
  uint64_t seed = 0;
  bool ids = false, capacity_depths = false;
};

struct Prompt {
  std::string text;
  std::vector<int32_t> ids;
};

bool exists(const std::string& p, bool* is_dir = nullptr) {
  struct stat st;
  if (::stat(p.c_str(), &st) != 0) return false;
  if (is_dir) *is_dir = S_ISDIR(st.st_mode);
  return true;
}

// A JSON string of bytes: well-formed UTF-8 as it is, each ill-formed byte as U+FFFD (JSON holds
// only Unicode text; the exact bytes are the "ids").
std::string json_text(const std::string& s) {
  std::string j = "\"";
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  for (size_t i = 0; i < s.size();) {
    const size_t n = io::utf8_sequence_length(p + i, s.size() - i);
    if (n == 0) {
      j += "\xEF\xBF\xBD";
      ++i;
      continue;
    }
    const unsigned char c = p[i];
    if (c == '"' || c == '\\') {
      j += '\\';
      j += (char)c;
    } else if (c == '\n' || c == '\t' || c == '\r') {
      j += c == '\n' ? "\\n" : c == '\t' ? "\\t" : "\\r";
    } else if (c < 0x20) {
      char b[8];
      std::snprintf(b, sizeof b, "\\u%04x", c);
      j += b;
    } else {
      j.append(s, i, n);
    }
    i += n;
  }
  return j + "\"";
}

std::string json_ids(const std::vector<int32_t>& v) {
  std::string j = "[";
  for (size_t i = 0; i < v.size(); ++i) {
    if (i) j += ',';
    j += std::to_string(v[i]);
  }
  return j + "]";
}

// --prompts: one JSON object per line, {"prompt": TEXT} or {"ids": [ID, ...]}; blank lines skipped.
std::vector<Prompt> read_prompts(const std::string& path) {
  bool dir = false;
  if (!exists(path, &dir) || dir) throw ConfigError("prompts", "'" + path + "' is not a file");
  std::ifstream f(path, std::ios::binary);
  if (!f) throw ConfigError("prompts", "cannot open '" + path + "'");
  std::vector<Prompt> out;
  std::string line;
  for (int no = 1; std::getline(f, line); ++no) {
    const std::string at = "'" + path + "' line " + std::to_string(no) + ": ";
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      throw ConfigError("prompts", at + "not JSON (" + clip_message(e.what()) + ")");
    }
    Prompt p;
    if (j.is_object() && j.contains("prompt") && j["prompt"].is_string()) {
      p.text = j["prompt"].get<std::string>();
      if (p.text.empty()) throw ConfigError("prompts", at + "the prompt is empty");
    } else if (j.is_object() && j.contains("ids") && j["ids"].is_array()) {
      for (const auto& x : j["ids"]) {
        if (!x.is_number_integer() || x.get<int64_t>() < 0 || x.get<int64_t>() > INT32_MAX)
          throw ConfigError("prompts", at + "\"ids\" holds " + clip_value(x.dump()) + ", not a token id");
        p.ids.push_back((int32_t)x.get<int64_t>());
      }
      if (p.ids.empty()) throw ConfigError("prompts", at + "\"ids\" is empty");
    } else {
      throw ConfigError("prompts", at + "want an object with \"prompt\": TEXT or \"ids\": [ID, ...]");
    }
    out.push_back(std::move(p));
  }
  if (f.bad()) throw std::runtime_error("reading '" + path + "' failed");
  if (out.empty()) throw ConfigError("prompts", "'" + path + "' holds no prompt");
  return out;
}

// Ids of every prompt (text encoded, or given: then their text decoded), each checked against the
// model's vocabulary and positions.
void tokenize_prompts(std::vector<Prompt>& ps, const io::Tokenizer& tok, const ModelConfig& mc, const char* opt) {
  for (size_t i = 0; i < ps.size(); ++i) {
    Prompt& p = ps[i];
    const std::string which = ps.size() > 1 ? "prompt " + std::to_string(i) + ": " : "";
    if (p.ids.empty()) {
      for (uint32_t id : tok.encode(p.text)) p.ids.push_back((int32_t)id);
    } else {
      for (int32_t id : p.ids)
        if ((uint32_t)id >= tok.vocab_size())
          throw ConfigError(opt, which + "token id " + std::to_string(id) + " is not in the tokenizer (ids 0.." +
                                     std::to_string(tok.vocab_size() - 1) + ")");
      p.text = tok.decode(std::vector<uint32_t>(p.ids.begin(), p.ids.end()));
    }
    for (int32_t id : p.ids)
      if (id >= mc.vocab_size)
        throw ConfigError(opt, which + "token id " + std::to_string(id) + " is outside the model's vocabulary (" +
                                   std::to_string(mc.vocab_size) + " ids)");
    if ((int64_t)p.ids.size() > mc.seq_len)
      throw ConfigError(opt, which + "the prompt is " + std::to_string(p.ids.size()) + " tokens; the model has " +
                                 std::to_string(mc.seq_len) + " positions (seq_len)");
  }
}

// The model and its parameters: an HDF5 checkpoint (step directory or root; its own model config)
// or a .mort file with the --config it was trained with.
std::unique_ptr<Model> load_model(const GenArgs& a, kern::Backend& be) {
  bool dir = false;
  if (!exists(a.ckpt, &dir)) throw ConfigError("ckpt", "'" + a.ckpt + "' does not exist");
  if (!dir) {
    if (a.config.empty())
      throw ConfigError("config", "is required with a .mort file (it records no model config): the training config");
    auto m = std::make_unique<Model>(load_config_file(a.config).model, be, false);
    import_params(*m, io::read_mort(a.ckpt), a.ckpt);
    return m;
  }
  const std::string d = checkpoint_dir(a.ckpt);
  const ckpt::Index idx = ckpt::read_index(d);
  ModelConfig mc;
  try {
    mc = load_config_text(idx.state.model_config).model;
  } catch (const std::exception& e) {
    throw std::runtime_error("checkpoint '" + d + "/index.h5': its model config is not valid: " + e.what());
  }
  auto m = std::make_unique<Model>(mc, be, false);
  if (be.host_addressable()) {
    load_checkpoint_params(d, idx, m->layout, m->params.data());
  } else {
    std::vector<float> host((size_t)m->layout.total);
    load_checkpoint_params(d, idx, m->layout, host.data());
    m->params.from_host(host);
  }
  return m;
}

GenArgs parse_args(int argc, char** argv, bool* help) {
  GenArgs a;
  po::options_description desc(
      "usage: mor-dist generate --ckpt CKPT --tokenizer tokenizer.json (--prompt TEXT | --prompts FILE.jsonl) "
      "[options]");
  desc.add_options()("help,h", "show this help")(
      "ckpt", po::value(&a.ckpt), "checkpoint: a step directory, a checkpoint root (its newest), or a .mort file")(
      "config", po::value(&a.config), "the training config (only with a .mort file, which records none)")(
      "tokenizer", po::value(&a.tokenizer), "the tokenizer.json the training data was prepared with")(
      "prompt", po::value(&a.prompt), "one prompt; its continuation streams to stdout")(
      "prompts", po::value(&a.prompts), "JSONL: one {\"prompt\": TEXT} or {\"ids\": [ID, ...]} per line")(
      "out", po::value(&a.out), "write one JSON line per prompt here (default: stdout for --prompts)")(
      "max-new-tokens", po::value(&a.max_new_tokens)->default_value(a.max_new_tokens), "new tokens at most")(
      "temperature", po::value(&a.temperature)->default_value(a.temperature), "sampling temperature; 0 = greedy")(
      "top-k", po::value(&a.top_k)->default_value(a.top_k), "sample among the k most likely tokens; 0 = all")(
      "top-p", po::value(&a.top_p)->default_value(a.top_p), "then among the fewest whose probability reaches p")(
      "seed", po::value(&a.seed)->default_value(a.seed),
      "sampling seed; prompt i samples from stream (seed, i) whatever the batch")(
      "batch", po::value(&a.batch)->default_value(a.batch), "sequences decoded together (continuous batching)")(
      "ids", po::bool_switch(&a.ids), "also output the token ids")(
      "capacity-depths", po::bool_switch(&a.capacity_depths),
      "throughput benchmarks: token depths in the shares the capacities give, not the router's (the text is "
      "then not the model's)")(
      "mor.infer_threshold", po::value(&a.threshold)->default_value(a.threshold),
      "expert-choice: a token goes on to the next recursion iff sigmoid(router score) >= this")(
      "threads", po::value(&a.threads)->default_value(a.threads), "compute threads; 0 = the default");
  const po::variables_map vm = parse_command_line(argc, argv, desc);
  *help = vm.count("help") > 0;
  if (*help) {
    std::cout << desc << "\n";
    return a;
  }
  if (a.ckpt.empty()) throw ConfigError("ckpt", "is required: the checkpoint to generate from");
  if (a.tokenizer.empty()) throw ConfigError("tokenizer", "is required: the tokenizer.json of the training data");
  if (vm.count("prompt") == vm.count("prompts"))
    throw ConfigError("prompt", "give either --prompt TEXT or --prompts FILE.jsonl (exactly one)");
  if (vm.count("prompt") && a.prompt.empty()) throw ConfigError("prompt", "is empty");
  if (a.max_new_tokens < 1) throw ConfigError("max-new-tokens", "must be >= 1");
  if (a.batch < 1) throw ConfigError("batch", "must be >= 1");
  if (a.threads < 0) throw ConfigError("threads", "must be >= 0");
  if (!(a.threshold >= 0.f && a.threshold <= 1.f)) throw ConfigError("mor.infer_threshold", "must be in [0, 1]");
  try {
    check_sampling({a.temperature, a.top_k, a.top_p, 0});
  } catch (const std::invalid_argument& e) {
    const std::string m = e.what();
    throw ConfigError(m.rfind("temperature", 0) == 0 ? "temperature" : m.rfind("top-k", 0) == 0 ? "top-k" : "top-p", m);
  }
  return a;
}

}  // namespace

namespace {

std::string result_line(int i, const Prompt& p, const GenResult& r, const io::Tokenizer& tok, bool ids) {
  std::string j = "{\"index\": " + std::to_string(i) + ", \"prompt\": " + json_text(p.text) +
                  ", \"text\": " + json_text(tok.decode(std::vector<uint32_t>(r.ids.begin(), r.ids.end())));
  if (ids) j += ", \"prompt_ids\": " + json_ids(p.ids) + ", \"ids\": " + json_ids(r.ids);
  std::string depths = "[";
  for (size_t d = 0; d < r.tokens_at_depth.size(); ++d) {
    if (d) depths += ',';
    depths += std::to_string(r.tokens_at_depth[d]);
  }
  j += ", \"stop\": \"" + std::string(r.stop) + "\", \"prompt_tokens\": " + std::to_string(p.ids.size()) +
       ", \"new_tokens\": " + std::to_string(r.ids.size()) + ", \"tokens_by_recursions\": " + depths +
       "], \"kv_cache_bytes\": " + std::to_string(r.kv_bytes) +
       ", \"vanilla_kv_cache_bytes\": " + std::to_string(r.vanilla_kv_bytes) + "}\n";
  return j;
}

void write_all(FILE* f, const std::string& s, const std::string& what) {
  if (!s.empty() && std::fwrite(s.data(), 1, s.size(), f) != s.size())
    throw std::runtime_error("writing " + what + " failed");
  if (std::fflush(f) != 0) throw std::runtime_error("writing " + what + " failed");
}

// The end-of-run line on stderr: speed, KV-cache bytes per sequence (mean) against a vanilla
// cache of the same depth over the same tokens, and the tokens by recursions received.
void summary(const std::vector<GenResult>& rs, int batch, double seconds) {
  int64_t fresh = 0, kv = 0, vanilla = 0, fed = 0;
  std::vector<int64_t> depth;
  int stops[3] = {0, 0, 0};  // eot, length, context
  for (const GenResult& r : rs) {
    stops[r.stop == std::string("eot") ? 0 : r.stop == std::string("length") ? 1 : 2] += 1;
    fresh += (int64_t)r.ids.size();
    kv += r.kv_bytes;
    vanilla += r.vanilla_kv_bytes;
    fed += r.fed;
    depth.resize(r.tokens_at_depth.size(), 0);
    for (size_t d = 0; d < depth.size(); ++d) depth[d] += r.tokens_at_depth[d];
  }
  std::string hist;
  char b[64];
  for (size_t d = 0; d < depth.size(); ++d) {
    std::snprintf(b, sizeof b, " %zu:%.1f%%", d, fed ? 100.0 * depth[d] / fed : 0.0);
    hist += b;
  }
  const double n = (double)rs.size();
  logf(
      "generate: %zu prompt%s, %lld new tokens in %.2f s (%.1f tokens/s, batch %d); stopped at end-of-text %d, "
      "max-new-tokens %d, context %d; tokens by recursions received%s\n",
      rs.size(), rs.size() == 1 ? "" : "s", (long long)fresh, seconds, seconds > 0 ? fresh / seconds : 0.0, batch,
      stops[0], stops[1], stops[2], hist.c_str());
  logf(
      "generate: KV cache per sequence %.0f bytes (recursion-wise) vs %.0f bytes for a vanilla cache of the same "
      "depth (%.3fx)\n",
      kv / n, vanilla / n, vanilla ? (double)kv / vanilla : 0.0);
}

}  // namespace

int cmd_generate(int argc, char** argv) {
  log_to_stderr = true;  // stdout is the generated text
  bool help = false;
  const GenArgs a = parse_args(argc, argv, &help);
  if (help) return 0;
  bool dir = false;
  if (!exists(a.tokenizer, &dir) || dir) throw ConfigError("tokenizer", "'" + a.tokenizer + "' is not a file");
  const io::Tokenizer tok = io::Tokenizer::from_file(a.tokenizer);
  const bool single = a.prompts.empty();
  std::vector<Prompt> prompts = single ? std::vector<Prompt>{{a.prompt, {}}} : read_prompts(a.prompts);
  const std::unique_ptr<kern::Backend> be = make_run_backend(TrainConfig{}, default_threads(a.threads, 1).threads);
  const std::unique_ptr<Model> model = load_model(a, *be);
  const ModelConfig& mc = model->cfg;
  tokenize_prompts(prompts, tok, mc, single ? "prompt" : "prompts");

  GenOptions o;
  o.max_new_tokens = a.max_new_tokens;
  o.sampling = {a.temperature, a.top_k, a.top_p, (int)std::min<uint32_t>(tok.vocab_size(), (uint32_t)mc.vocab_size)};
  o.seed = a.seed;
  o.capacity_depths = a.capacity_depths;
  if (a.capacity_depths) logf("note: --capacity-depths: depths from the capacities, not the router (benchmark mode)\n");
  try {
    o.eot = (int32_t)tok.eot_id();
  } catch (const std::exception&) {
    logf("note: the tokenizer has no end-of-text token: each sequence runs to --max-new-tokens or the context\n");
  }
  std::vector<GenRequest> reqs;
  for (size_t i = 0; i < prompts.size(); ++i) reqs.push_back({prompts[i].ids, (uint64_t)i});

  FILE* out = a.out.empty() ? (single ? nullptr : stdout) : std::fopen(a.out.c_str(), "wb");
  if (!a.out.empty() && !out) throw ConfigError("out", "cannot write '" + a.out + "'");
  const std::string out_name = a.out.empty() ? "stdout" : "'" + a.out + "'";
  std::vector<std::string> lines(prompts.size());
  std::vector<char> ready(prompts.size(), 0);
  size_t next = 0;  // JSON lines go out in prompt order
  GenCallbacks cb;
  cb.on_token = [&](int, int32_t id) {  // SIGINT/SIGTERM: stop between tokens (exit 130)
    if (single) write_all(stdout, tok.decode({(uint32_t)id}), "stdout");
    if (stop_requested()) throw ckpt::Interrupted("generate: stopped by a signal");
  };
  cb.on_done = [&](int i, const GenResult& r) {
    if (!out) return;
    lines[i] = result_line(i, prompts[i], r, tok, a.ids);
    ready[i] = 1;
    for (; next < lines.size() && ready[next]; ++next) write_all(out, std::exchange(lines[next], {}), out_name);
  };
  Decoder dec(*model, std::min<int>(a.batch, (int)prompts.size()), a.threshold);
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<GenResult> rs;
  try {
    rs = generate(dec, reqs, o, cb);
  } catch (...) {
    if (out && out != stdout) std::fclose(out);
    throw;
  }
  const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (single) write_all(stdout, a.ids ? "\nids: " + json_ids(rs[0].ids) + "\n" : "\n", "stdout");
  if (out && out != stdout && std::fclose(out) != 0) throw std::runtime_error("writing " + out_name + " failed");
  summary(rs, dec.slots(), sec);
  return 0;
}

}  // namespace mor
