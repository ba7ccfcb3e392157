// `mor-dist convert` and `mor-dist inspect`: offline tools for HDF5 checkpoints.
#include <boost/program_options.hpp>
#include <cstdio>
#include <iostream>

#include "io/checkpoint.h"
#include "launcher/train.h"
#include "model/config.h"

namespace po = boost::program_options;

namespace mor {

namespace {
po::variables_map parse(int argc, char** argv, po::options_description& desc, po::positional_options_description* pos) {
  po::variables_map vm;
  try {
    auto p = po::command_line_parser(argc, argv).options(desc);
    if (pos) p.positional(*pos);
    po::store(p.run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    throw ConfigError("options", e.what());
  }
  return vm;
}
}  // namespace

int cmd_convert(int argc, char** argv, dist::Communicator& comm) {
  std::string in, out;
  int shards = 0;
  po::options_description desc("usage: [mpirun -np N] mor-dist convert --in CKPT --out CKPT2 --shards M");
  desc.add_options()("help,h", "show this help")("in", po::value(&in), "input checkpoint directory (step_NNNNNNNN)")(
      "out", po::value(&out), "output checkpoint directory (must not exist)")(
      "shards", po::value(&shards), "number of shard files to write (1 = one consolidated file)");
  auto vm = parse(argc, argv, desc, nullptr);
  if (vm.count("help")) {
    std::cout << desc << "\n";
    return 0;
  }
  if (in.empty()) throw ConfigError("in", "is required");
  if (out.empty()) throw ConfigError("out", "is required");
  if (shards < 1) throw ConfigError("shards", "must be >= 1, got " + std::to_string(shards));
  ckpt::convert(in, out, shards, comm);
  if (comm.rank() == 0) std::printf("converted %s -> %s (%d shard%s)\n", in.c_str(), out.c_str(), shards, shards > 1 ? "s" : "");
  return 0;
}

int cmd_inspect(int argc, char** argv) {
  std::string dir;
  po::options_description desc("usage: mor-dist inspect CKPT");
  desc.add_options()("help,h", "show this help")("ckpt", po::value(&dir), "checkpoint directory (or ROOT/latest's target)");
  po::positional_options_description pos;
  pos.add("ckpt", 1);
  auto vm = parse(argc, argv, desc, &pos);
  if (vm.count("help")) {
    std::cout << desc << "\n";
    return 0;
  }
  if (dir.empty()) throw ConfigError("ckpt", "is required: mor-dist inspect CKPT");
  std::fputs(ckpt::inspect(dir).c_str(), stdout);
  return 0;
}

}  // namespace mor
