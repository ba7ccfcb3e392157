// mor-dist: pretraining Mixture-of-Recursions language models.
#include <malloc.h>

#include <signal.h>
#include <unistd.h>

#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <string>

#include "dist/communicator.h"
#include "io/ckpt/checkpoint.h"
#include "launcher/log.h"

#include "launcher/prepare_cmd.h"
#include "launcher/stop_signal.h"
#include "launcher/options.h"
#include "launcher/train.h"
#include "launcher/version.h"
#include "model/config.h"

static const char* kUsage =
    "usage: mor-dist <command> [options]\n"
    "commands:\n"
    "  train   train a model (mor-dist train --help)\n"
    "  eval    validation loss of saved parameters (mor-dist eval --help)\n"
    "  convert rewrite a checkpoint for another number of shards (mor-dist convert --help)\n"
    "  inspect list and verify a checkpoint (mor-dist inspect CKPT)\n"
    "  export  a checkpoint in the Hugging Face layout: safetensors + config.json (mor-dist export --help)\n"
    "  prepare tokenize JSONL documents into token shards (mor-dist prepare --help)\n"
    "  generate text from a checkpoint: KV cache per recursion, continuous batching (mor-dist generate --help)\n"
    "mor-dist --version: version, git revision and build flags\n"
    "exit status: 0 ok, 1 runtime error, 2 bad option or config, 3 a checkpoint could not be saved (the previous one\n"
    "  is intact), 4 loss or gradients became NaN/inf (nothing saved), 5 a collective stalled (--dist.timeout),\n"
    "  85 saved a checkpoint on SIGUSR1/SIGTERM/SIGINT, 130 eval/convert/generate stopped by a signal\n";

// Transparent huge pages for the heap. mor-dist keeps ~16 bytes of state per parameter plus the
// activations resident and sweeps all of it every step; with 4 KiB pages every first touch is a
// page fault and every sweep walks the TLB. On virtual machines (nested paging) that measured 10 %
// of a 135M-model step and half of a checkpoint load (docs/PERFORMANCE.md). glibc puts its heap on
// huge pages only when GLIBC_TUNABLES says so at start-up, so mor-dist re-executes itself once
// with glibc.malloc.hugetlb=1 added, before anything else runs (same PID, so mpirun/srun do not
// notice). MOR_HUGE_PAGES=0 keeps 4 KiB pages; where THP is "never" the hint is a no-op.
static void reexec_with_huge_pages(char** argv) {
  const char* want = std::getenv("MOR_HUGE_PAGES");
  if ((want && std::strcmp(want, "0") == 0) || std::getenv("MOR_REEXECUTED")) return;
  const char* cur = std::getenv("GLIBC_TUNABLES");
  if (cur && std::strstr(cur, "glibc.malloc.hugetlb")) return;  // the user chose
  const std::string old = cur ? cur : "";
  const std::string tunables = old.empty() ? "glibc.malloc.hugetlb=1" : old + ":glibc.malloc.hugetlb=1";
  setenv("GLIBC_TUNABLES", tunables.c_str(), 1);
  setenv("MOR_REEXECUTED", "1", 1);  // never loop, even if the loader drops the tunable
  // The binary's real path, not /proc/self/exe: the process name (ps, top, pkill) stays mor-dist.
  char self[PATH_MAX];
  const ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  if (n > 0) self[n] = '\0', execv(self, argv);
  // No /proc or exec refused: go on with 4 KiB pages and the environment as it was.
  if (cur)
    setenv("GLIBC_TUNABLES", old.c_str(), 1);
  else
    unsetenv("GLIBC_TUNABLES");
}

int main(int argc, char** argv) {
  reexec_with_huge_pages(argv);
  // Keep freed memory in the heap instead of returning it to the kernel: the
  // step's large temporaries would otherwise be mmap'ed and page-faulted anew
  // every step (measured: ~25% of a 135M-model step).
  mallopt(M_MMAP_MAX, 0);
  mallopt(M_TRIM_THRESHOLD, INT_MAX);
  mor::route_stop_signals();  // before any thread exists; an early signal is never fatal
  // A write past `ulimit -f` fails with EFBIG (reported with the path) instead of killing the process.
  signal(SIGXFSZ, SIG_IGN);
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")) {
    std::fputs(kUsage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  if (!std::strcmp(argv[1], "--version")) {
    std::fputs(mor::version_details().c_str(), stdout);
    return 0;
  }
  const std::string cmd = argv[1];
  // Under mpirun/srun with several tasks, ranks come from the MPI runtime.
  std::unique_ptr<mor::dist::Communicator> comm = mor::dist::launched_multi_process()
                                                      ? mor::dist::make_mpi_comm(&argc, &argv)
                                                      : mor::dist::make_single_process_comm();
  const std::string who =
      comm->size() > 1 ? " [rank " + std::to_string(comm->rank()) + "/" + std::to_string(comm->size()) + "]" : "";
  // Which node each rank runs on (rank 0 prints for all): a multi-node log says where every rank was.
  if (comm->size() > 1 && comm->rank() == 0 && (cmd == "train" || cmd == "convert"))
    mor::logf("nodes: %s\n", comm->placement().c_str());
  int rc = 0;
  try {
    if (cmd == "train")
      rc = mor::cmd_train(argc - 1, argv + 1, *comm);
    else if (cmd == "eval")
      rc = mor::cmd_eval(argc - 1, argv + 1);
    else if (cmd == "convert")
      rc = mor::cmd_convert(argc - 1, argv + 1, *comm);
    else if (cmd == "inspect")
      rc = mor::cmd_inspect(argc - 1, argv + 1);
    else if (cmd == "export")
      rc = mor::cmd_export(argc - 1, argv + 1);
    else if (cmd == "prepare")
      rc = mor::cmd_prepare(argc - 1, argv + 1);
    else if (cmd == "generate")
      rc = mor::cmd_generate(argc - 1, argv + 1);
    else {
      std::fprintf(stderr, "mor-dist: unknown command '%s'\n%s", cmd.c_str(), kUsage);
      rc = 2;
    }
  } catch (const mor::ConfigError& e) {
    std::fprintf(stderr, "%smor-dist %s%s: error: %s\n", mor::run_context().prefix.c_str(), cmd.c_str(), who.c_str(),
                 e.what());
    rc = 2;
  } catch (const mor::ckpt::SaveError& e) {
    std::fprintf(stderr,
                 "%smor-dist %s%s: error: saving failed (the previous checkpoint and 'latest' are intact): %s\n",
                 mor::run_context().prefix.c_str(), cmd.c_str(), who.c_str(), e.what());
    rc = mor::kExitSaveFailed;
  } catch (const mor::ckpt::NonFiniteError& e) {
    std::fprintf(stderr, "%smor-dist %s%s: error: %s\n", mor::run_context().prefix.c_str(), cmd.c_str(), who.c_str(),
                 e.what());
    rc = mor::kExitNonFinite;
  } catch (const mor::ckpt::Interrupted& e) {
    std::fprintf(stderr, "%smor-dist %s%s: %s\n", mor::run_context().prefix.c_str(), cmd.c_str(), who.c_str(),
                 e.what());
    rc = mor::kExitInterrupted;
  } catch (const std::bad_alloc&) {
    std::fprintf(
        stderr,
        "%smor-dist %s%s: error: out of memory (the configuration or an input asks for more than this machine has)\n",
        mor::run_context().prefix.c_str(), cmd.c_str(), who.c_str());
    rc = 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%smor-dist %s%s: error: %s\n", mor::run_context().prefix.c_str(), cmd.c_str(), who.c_str(),
                 e.what());
    rc = 1;
  }
  // A rank that fails alone must not leave the others waiting in a collective.
  // (Exit 85 is not a failure: every rank saved and returns it together.)
  // (Exits 3, 4 and 85 are reached by every rank together: they leave through MPI_Finalize.)
  const bool agreed = rc == mor::kExitSavedOnSignal || rc == mor::kExitSaveFailed || rc == mor::kExitNonFinite;
  if (rc != 0 && !agreed && comm->size() > 1) comm->abort(rc);
  return rc;
}
