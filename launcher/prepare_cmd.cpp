#include "launcher/prepare_cmd.h"
#include "launcher/options.h"
#include "launcher/stop_signal.h"

#include <boost/program_options.hpp>
#include <climits>
#include <cstdint>
#include <iostream>
#include <string>
#include <vector>

#include "io/data/prepare.h"
#include "model/config.h"

namespace po = boost::program_options;

namespace mor {

static const char* kPrepareUsage =
    "usage: mor-dist prepare --tokenizer tokenizer.json --input PATTERN [--input PATTERN ...]\n"
    "                        --out DIR --shard-tokens N --val-tokens M [--threads T] [--strict]\n"
    "Tokenizes JSONL documents (one object with a string \"text\" per line; .jsonl, .jsonl.gz,\n"
    ".jsonl.zst, recognised by content) into llm.c token shards: DIR/edu_fineweb_val_000000.bin\n"
    "(the first whole documents, >= M tokens), DIR/edu_fineweb_train_%06d.bin (N tokens each) and\n"
    "DIR/manifest.json (token and document counts, SHA-256 per shard). Each document is preceded\n"
    "by the end-of-text id; special-token text inside documents is ordinary text. Bad lines\n"
    "(malformed JSON, no string \"text\", invalid UTF-8) are skipped, counted and reported.";

int cmd_prepare(int argc, char** argv) {
  // main() routes SIGTERM/SIGUSR1 to the training loop's checkpoint-and-stop
  // flag; nothing here polls it, so let them end the process as usual (shards
  // and manifest.json are written to .tmp and renamed: nothing half-written).
  stop_signals_end_process();
  io::PrepareOptions opt;
  int64_t shard_tokens = 0, val_tokens = -1, batch_bytes = 1 << 20;
  bool quiet = false;
  po::options_description desc("mor-dist prepare options");
  desc.add_options()("help,h", "show this help")("tokenizer", po::value(&opt.tokenizer),
                                                 "Hugging Face tokenizer.json (byte-level BPE)")(
      "input", po::value(&opt.inputs)->composing(), "JSONL file or glob pattern (quote it); repeatable")(
      "out", po::value(&opt.out_dir), "output folder (created if missing)")(
      "shard-tokens", po::value(&shard_tokens), "tokens per training shard (llm.c: 100000000)")(
      "val-tokens", po::value(&val_tokens),
      "validation shard: whole documents until at least this many tokens (0 = none)")(
      "threads", po::value(&opt.threads)->default_value(0), "tokenizer threads (0 = all cores)")(
      "strict", po::bool_switch(&opt.strict), "the first bad line is an error naming file and line")(
      "overwrite", po::bool_switch(&opt.overwrite), "replace shards and manifest.json of an earlier run in --out")(
      "quiet", po::bool_switch(&quiet), "no progress line")(
      "batch-bytes", po::value(&batch_bytes)->default_value(batch_bytes), "input bytes per work item");
  const po::variables_map vm = parse_command_line(argc, argv, desc);  // argv[0] = "prepare"
  if (vm.count("help")) {
    std::cout << kPrepareUsage << "\n\n" << desc << "\n";
    return 0;
  }
  for (const char* req : {"tokenizer", "input", "out", "shard-tokens", "val-tokens"})
    if (!vm.count(req)) throw ConfigError(req, "is required (mor-dist prepare --help)");
  if (opt.tokenizer.empty()) throw ConfigError("tokenizer", "must not be empty");
  if (opt.out_dir.empty()) throw ConfigError("out", "must not be empty");
  for (const auto& p : opt.inputs)
    if (p.empty()) throw ConfigError("input", "must not be empty");
  if (shard_tokens < 1 || shard_tokens > INT32_MAX)
    throw ConfigError("shard-tokens",
                      std::to_string(shard_tokens) + " is not in [1, 2147483647] (the shard header count is an int32)");
  if (val_tokens < 0 || val_tokens > INT32_MAX)
    throw ConfigError("val-tokens", std::to_string(val_tokens) + " is not in [0, 2147483647]");
  if (opt.threads < 0 || opt.threads > 1024)
    throw ConfigError("threads", std::to_string(opt.threads) + " is not in [0, 1024]");
  if (batch_bytes < 1 || batch_bytes > (int64_t{1} << 30))
    throw ConfigError("batch-bytes", std::to_string(batch_bytes) + " is not in [1, 2^30]");
  opt.shard_tokens = static_cast<uint64_t>(shard_tokens);
  opt.val_tokens = static_cast<uint64_t>(val_tokens);
  opt.batch_bytes = static_cast<size_t>(batch_bytes);
  opt.progress = !quiet;
  io::prepare_shards(opt, stderr);
  return 0;
}

}  // namespace mor
