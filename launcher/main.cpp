// mor-dist: pretraining Mixture-of-Recursions language models.
#include <malloc.h>

#include <climits>
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>

#include "launcher/train.h"
#include "model/config.h"

static const char* kUsage =
    "usage: mor-dist <command> [options]\n"
    "commands:\n"
    "  train   train a model (mor-dist train --help)\n"
    "  eval    validation loss of saved parameters (mor-dist eval --help)\n"
    "exit status: 0 ok, 1 runtime error, 2 bad option or config\n";

int main(int argc, char** argv) {
  // Keep freed memory in the heap instead of returning it to the kernel: the
  // step's large temporaries would otherwise be mmap'ed and page-faulted anew
  // every step (measured: ~25% of a 135M-model step).
  mallopt(M_MMAP_MAX, 0);
  mallopt(M_TRIM_THRESHOLD, INT_MAX);
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")) {
    std::fputs(kUsage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  const std::string cmd = argv[1];
  try {
    if (cmd == "train") return mor::cmd_train(argc - 1, argv + 1);
    if (cmd == "eval") return mor::cmd_eval(argc - 1, argv + 1);
    std::fprintf(stderr, "mor-dist: unknown command '%s'\n%s", cmd.c_str(), kUsage);
    return 2;
  } catch (const mor::ConfigError& e) {
    std::fprintf(stderr, "mor-dist %s: error: %s\n", cmd.c_str(), e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mor-dist %s: error: %s\n", cmd.c_str(), e.what());
    return 1;
  }
}
