// Every option of `mor-dist train` / `eval`, one table (Boost.Program_options)
// shared by the command line and the INI config: `--model.d_model 64` on the
// command line is `d_model = 64` under `[model]` in the file; the command line wins.
#pragma once
#include <boost/program_options.hpp>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/optimizer.h"

namespace mor {

struct TrainConfig {
  int64_t steps = 1000;
  int global_batch = 8;  // sequences per optimizer step, over all ranks
  int micro_batch = 0;   // sequences per forward/backward; 0 = global_batch / world
  uint64_t seed = 42;
  int log_every = 10;
  int eval_every = 0;              // 0 = only at the end (if data.val is set)
  int eval_samples = 64;           // validation windows per evaluation (0 = all)
  int threads = 0;                 // 0 = default_threads() (launcher/threads.h)
  std::string gemm = "mixed";      // GEMM library: mixed (oneDNN + OpenBLAS) | openblas
  std::string device = "cpu";      // backend: cpu | cuda (a -DMOR_CUDA=ON build and a GPU)
  std::string recompute = "none";  // activations: none (keep all for backward) | layer (keep each layer's input)
  std::string precision = "fp32";  // GEMM operands: fp32 | bf16 (fp32 accumulation and fp32 master weights)
  double peak_gflops = 0;          // for MFU; 0 = measure sgemm at start-up
  std::string metrics;             // JSON-lines file ("" = none)
  std::string save_params;         // write final parameters (.mort) here ("" = no)
  std::string init_params;         // start from these parameters (.mort) instead of random init
  std::string nonfinite = "stop";  // a non-finite loss or gradient norm: stop | skip (the update)
  int nonfinite_max = 3;           // skip: stop after this many consecutive skipped steps
  // --train.device cuda's attention kernel: simple | flash (fused tiles for head_dim 64 and 128);
  // the CPU ignores it.
  std::string attention_kernel = "simple";
};

struct DataConfig {
  std::string train;  // glob of training shards
  std::string val;    // glob of validation shards
  bool shuffle = true;
};

struct DistConfig {
  bool regather_per_recursion = false;  // comparison mode: all-gather the shared block for every recursion
  bool keep_shared_gathered = false;    // keep the shared block gathered from forward to backward
  bool overlap = true;                  // prefetch the next unit's all-gather while the current computes
  double timeout = 600;                 // seconds a collective may make no progress before the job is aborted (0 = off)
  std::string param_dtype = "fp32";     // all-gathered parameters travel as fp32 | bf16 (half the bytes)
  std::string reduce_dtype = "fp32";    // gradients are reduce-scattered (and summed) in fp32 | bf16
};

struct CkptConfig {
  std::string dir;                 // checkpoint root ("" = no checkpoints)
  int save_every = 0;              // steps between saves (0 = only at the end and on a signal)
  int keep_last = 2;               // complete checkpoints kept (>= 2)
  bool direct_io = true;           // write/read shards with O_DIRECT where the file system takes it
  std::string resume;              // "auto" (latest under dir, if any) | a checkpoint directory | "" (fresh)
  bool allow_rewind = false;       // resume an older step / start fresh over checkpoints: rename the newer ones aside
  bool allow_seed_change = false;  // resume with another train.seed (changes the data order)
};

// Exit status after saving on SIGUSR1/SIGTERM (SLURM's warning before a time limit):
// the job script requeues on it (slurm.conf RequeueExit=85 works too).
constexpr int kExitSavedOnSignal = 85;
// Exit status when a checkpoint could not be saved (disk full, file size limit, I/O error): the
// previous checkpoint and `latest` are untouched; the run is not requeued blindly.
constexpr int kExitSaveFailed = 3;
// Exit status when the loss or the gradient norm became non-finite (NaN/inf) and the run stopped
// without saving that state.
constexpr int kExitNonFinite = 4;
// Exit status 5: a collective made no progress within --dist.timeout (dist::kExitCollectiveTimeout).
// Exit status after SIGINT/SIGTERM ended a command that does not save (eval, convert, prepare).
constexpr int kExitInterrupted = 130;

struct RunConfig {
  ModelConfig model;
  OptimConfig optim;
  TrainConfig train;
  DataConfig data;
  DistConfig dist;
  CkptConfig ckpt;
  std::string config_path;
  std::string command_line;   // for the checkpoint's record
  bool router_stats = false;  // eval --router-stats
};

// Option table; string-typed options are converted by finish_config().
struct OptionTable {
  static constexpr const char* kCaption = "mor-dist options (INI: [section] key = value)";
  boost::program_options::options_description desc{kCaption};
  std::string sharing = "middle_cycle", router = "none", kv_mode = "recursion", capacity, schedule = "wsd";
  explicit OptionTable(RunConfig& rc);
};

// Parses argv (after the subcommand: argv[0] is "train" or "eval") plus --config FILE; throws
// ConfigError (status 2) naming the option on unknown options, bad values or inconsistency.
// Option names are exact (no prefix guessing); an unknown one gets a "did you mean" suggestion.
// For eval, the command line takes only the options eval reads (the config file may hold any).
// Returns false if --help was printed (defaults as a config file writes them: 3e-3, true).
bool parse_run_config(int argc, char** argv, RunConfig& rc, const char* usage);

// Loads an INI file with the defaults for everything it does not set (tests, tools).
RunConfig load_config_file(const std::string& path);
// The same from INI text (a checkpoint's recorded model config).
RunConfig load_config_text(const std::string& ini);

// A ConfigError (exit status 2) whose message is complete as it stands: Boost's messages name
// the option themselves, so no "--option: " prefix is put in front.
struct OptionError : ConfigError {
  std::string message;
  OptionError(std::string opt, std::string msg) : ConfigError(std::move(opt), msg), message(std::move(msg)) {}
  const char* what() const noexcept override { return message.c_str(); }
};

// Rethrows a Boost.Program_options error as OptionError: the message cut to a sane length
// (clip_message), "; did you mean --x?" added for an unknown option (names from `desc`; phrased
// for an INI file when `where` is not empty), `where` ("config file 'x.ini': ") in front.
[[noreturn]] void throw_option_error(const boost::program_options::error& e,
                                     const boost::program_options::options_description& desc,
                                     const std::string& where = "");

// The command line of a tool command (export, prepare, convert): exact option names only (Boost
// would otherwise take --shard for --shards), errors through throw_option_error. `pos`: optional
// positional arguments.
boost::program_options::variables_map parse_command_line(
    int argc, char** argv, const boost::program_options::options_description& desc,
    const boost::program_options::positional_options_description* pos = nullptr);

// The known names closest to `unknown` (leading dashes and "=value" ignored): the same key in
// another section (--train.lr -> optim.lr), else the smallest edit distance if <= max(2, len/4);
// ties all listed, at most 3. Empty if nothing is close.
std::vector<std::string> suggest_options(const std::string& unknown, const std::vector<std::string>& known);

// `v` itself if at most `keep` bytes, else its first `keep` bytes + "... (N bytes)".
std::string clip_value(const std::string& v, size_t keep = 80);
// An error message with every quoted part longer than 80 bytes clipped (a 10 MB INI line
// stays out of the terminal; unquoted text is cut only beyond 400 bytes, the whole beyond 1000)
// and control bytes replaced by '?'.
std::string clip_message(const std::string& msg);

}  // namespace mor
