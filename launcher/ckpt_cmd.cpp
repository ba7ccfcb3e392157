// `mor-dist convert` and `mor-dist inspect`: offline tools for HDF5 checkpoints.
#include <boost/program_options.hpp>
#include <cstdio>
#include <iostream>

#include <sys/stat.h>

#include "io/ckpt/checkpoint.h"
#include "launcher/options.h"
#include "launcher/stop_signal.h"
#include "model/params.h"
#include "launcher/train.h"
#include "model/config.h"

namespace po = boost::program_options;

namespace mor {

namespace {
// The tensors (names and shapes) the checkpoint's own model config implies.
std::vector<ckpt::TensorMeta> expected_tensors(const std::string& dir) {
  const ckpt::Index idx = ckpt::read_index(dir);
  ModelConfig mc;
  try {
    mc = load_config_text(idx.state.model_config).model;
  } catch (const std::exception& e) {
    throw std::runtime_error("checkpoint '" + dir +
                             "/index.h5': its model config is not valid: " + std::string(e.what()));
  }
  std::vector<ckpt::TensorMeta> v;
  for (const auto& t : ParamLayout(mc).tensors) v.push_back({t.name, t.rows, t.cols, t.is_1d});
  return v;
}
}  // namespace

int cmd_convert(int argc, char** argv, dist::Communicator& comm) {
  std::string in, out;
  int shards = 0;
  po::options_description desc("usage: [mpirun -np N] mor-dist convert --in CKPT --out CKPT2 --shards M");
  desc.add_options()("help,h", "show this help")("in", po::value(&in), "input checkpoint directory (step_NNNNNNNN)")(
      "out", po::value(&out), "output checkpoint directory (must not exist)")(
      "shards", po::value(&shards), "number of shard files to write (1 = one consolidated file)");
  auto vm = parse_command_line(argc, argv, desc, nullptr);
  if (vm.count("help")) {
    std::cout << desc << "\n";
    return 0;
  }
  if (in.empty()) throw ConfigError("in", "is required");
  if (out.empty()) throw ConfigError("out", "is required");
  if (!vm.count("shards")) throw ConfigError("shards", "is required: the number of shard files to write");
  if (shards < 1) throw ConfigError("shards", "must be >= 1, got " + std::to_string(shards));
  ckpt::convert(in, out, shards, comm, [] { return stop_requested(); });
  if (comm.rank() == 0)
    std::printf("converted %s -> %s (%d shard%s)\n", in.c_str(), out.c_str(), shards, shards > 1 ? "s" : "");
  return 0;
}

int cmd_inspect(int argc, char** argv) {
  std::string dir;
  bool quick = false;
  po::options_description desc(
      "usage: mor-dist inspect [--quick] CKPT   (CKPT: a checkpoint directory, or a root holding 'latest')");
  desc.add_options()("help,h", "show this help")("ckpt", po::value(&dir),
                                                 "checkpoint directory (or ROOT: its newest checkpoint)")(
      "quick", po::bool_switch(&quick),
      "skip reading every value to check it is finite (checksums are still verified)");
  po::positional_options_description pos;
  pos.add("ckpt", 1);
  auto vm = parse_command_line(argc, argv, desc, &pos);
  if (vm.count("help")) {
    std::cout << desc << "\n";
    return 0;
  }
  if (dir.empty()) throw ConfigError("ckpt", "is required: mor-dist inspect CKPT");
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0) throw std::runtime_error("'" + dir + "' does not exist");
  if (::stat((dir + "/index.h5").c_str(), &st) != 0) {  // a checkpoint root: what `--resume auto` would load
    std::string note;
    const std::string found = ckpt::resolve(dir, "auto", &note);
    if (found.empty()) throw std::runtime_error("'" + dir + "' is neither a checkpoint nor a root holding one");
    if (!note.empty()) std::printf("%s\n", note.c_str());
    dir = found;
  }
  std::fputs(ckpt::inspect(dir, quick, expected_tensors(dir)).c_str(), stdout);
  return 0;
}

}  // namespace mor
