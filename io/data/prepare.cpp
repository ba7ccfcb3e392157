// prepare_shards: runs the stages of io/data/prepare_stages.h — a reader thread, N tokenizer
// threads, the in-order writer on this thread — then writes manifest.json.
#include "io/data/prepare.h"

#include <sched.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <filesystem>
#include <optional>
#include <set>
#include <stdexcept>
#include <thread>

#include "io/data/loader.h"
#include "io/data/prepare_stages.h"
#include "io/data/tokenizer.h"

namespace mor::io {

namespace {

std::vector<std::string> expand_inputs(const std::vector<std::string>& patterns) {
  std::vector<std::string> files;
  std::set<std::string> seen;
  for (const std::string& pat : patterns) {
    // A directory, dangling symlink or symlink loop among the matches is an error naming it.
    std::vector<std::string> found = glob_files(pat, "--input");
    if (found.empty()) throw std::runtime_error("--input '" + pat + "': no file matches");
    for (auto& f : found)
      if (seen.insert(f).second) files.push_back(std::move(f));
  }
  return files;
}

// The stored size of every input (the progress line's total and the manifest).
std::vector<uint64_t> input_sizes(const std::vector<std::string>& files, uint64_t* total) {
  std::vector<uint64_t> sizes;
  for (const auto& f : files) {
    struct stat st {};
    if (::stat(f.c_str(), &st) != 0) throw std::runtime_error(f + ": cannot stat: " + std::strerror(errno));
    sizes.push_back(static_cast<uint64_t>(st.st_size));
    *total += static_cast<uint64_t>(st.st_size);
  }
  return sizes;
}

// Cores this process may run on (its affinity mask: taskset, SLURM cpusets).
int available_cores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof set, &set) == 0) return std::max(1, CPU_COUNT(&set));
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

// Existing outputs of an earlier run in out_dir.
std::vector<std::filesystem::path> old_outputs(const std::string& dir) {
  std::vector<std::filesystem::path> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    const std::string n = e.path().filename().string();
    const bool shard =
        n.rfind("edu_fineweb_", 0) == 0 && (n.size() > 4 && (n.ends_with(".bin") || n.ends_with(".bin.tmp")));
    if (shard || n == "manifest.json" || n == "manifest.json.tmp") out.push_back(e.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

// Creates out_dir; outputs of an earlier run there are an error, or removed with overwrite.
void prepare_out_dir(const PrepareOptions& opt) {
  std::error_code ec;
  std::filesystem::create_directories(opt.out_dir, ec);
  if (!std::filesystem::is_directory(opt.out_dir))
    throw std::runtime_error(opt.out_dir + ": cannot create output folder" + (ec ? ": " + ec.message() : ""));
  const auto old = old_outputs(opt.out_dir);
  if (old.empty()) return;
  if (!opt.overwrite)
    throw std::runtime_error(opt.out_dir + ": already holds " + old.front().filename().string() +
                             (old.size() > 1 ? " and " + std::to_string(old.size() - 1) + " more" : "") +
                             " from an earlier run; use an empty folder or --overwrite");
  for (const auto& p : old) std::filesystem::remove(p);
}

}  // namespace

PrepareResult prepare_shards(const PrepareOptions& opt, std::FILE* log) {
  const auto t0 = prep::Clock::now();
  if (opt.shard_tokens < 1 || opt.shard_tokens > static_cast<uint64_t>(INT32_MAX))
    throw std::invalid_argument("shard_tokens must be in [1, 2^31 - 1]");
  PrepareResult res;
  // The tokenizer loads (~0.1-0.3 s for 50k merges) while the reader starts.
  auto tok_future = std::async(std::launch::async, [&] { return Tokenizer::from_file(opt.tokenizer); });
  res.files = expand_inputs(opt.inputs);
  const std::vector<uint64_t> sizes = input_sizes(res.files, &res.input_bytes);
  prepare_out_dir(opt);

  const int threads = opt.threads > 0 ? opt.threads : available_cores();
  prep::WorkQueue q(static_cast<uint64_t>(2 * threads + 2));
  std::atomic<uint64_t> raw_consumed{0};
  std::thread reader([&] { prep::read_inputs(opt, res.files, sizes, q, raw_consumed); });

  std::optional<Tokenizer> tok;
  try {
    tok.emplace(tok_future.get());
    res.vocab_size = tok->vocab_size();
    res.eot_id = tok->eot_id();  // throws when the tokenizer has no end-of-text token
  } catch (...) {
    q.fail(std::current_exception());
    reader.join();
    throw;
  }
  res.token_bytes = res.vocab_size <= 65536u ? 2 : 4;

  std::vector<std::thread> workers;
  for (int w = 0; w < threads; ++w) workers.emplace_back([&] { prep::tokenize_batches(opt, *tok, res.eot_id, q); });

  prep::Progress progress(log, opt, t0, raw_consumed, res);
  prep::ShardWriter writer(opt, res.vocab_size);
  try {
    prep::write_in_order(opt, res.files, q, writer, progress, res);
  } catch (...) {
    q.fail(std::current_exception());
  }
  reader.join();
  for (auto& w : workers) w.join();
  if (std::exception_ptr e = q.error()) {
    writer.abandon();
    std::rethrow_exception(e);
  }
  if (res.documents == 0) {
    throw std::runtime_error("no documents in the input (" + std::to_string(res.bad_total()) + " bad lines" +
                             (res.bad_examples.empty() ? "" : ", first: " + res.bad_examples.front()) + ")");
  }
  res.shards = writer.finish();
  res.seconds = std::chrono::duration<double>(prep::Clock::now() - t0).count();
  progress.print(true);
  prep::write_manifest(opt, res, sizes);
  if (log) prep::print_summary(log, opt, res);
  return res;
}

}  // namespace mor::io
