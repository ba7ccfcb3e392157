// Training / validation data loaders over llm.c token shards.
//
// DATA-ORDER CONTRACT — identical for every world
// size, so a run can stop on W ranks and resume on W' ranks at the same step
// and see exactly the same samples:
//
//  * A sample is a window of seq_len + 1 consecutive tokens of one shard
//    (inputs = first seq_len, targets = last seq_len). Shard s holding c_s
//    tokens contributes floor((c_s - 1) / seq_len) samples at token offsets
//    j * seq_len, j = 0, 1, ...; consecutive windows share one token (as in
//    llm.c). Shards are ordered by file name; dataset sample k is found by a
//    prefix sum over the shards' sample counts. A window never crosses a shard
//    boundary (documents may, tokens at the tail of a shard are dropped).
//  * N = number of dataset samples. Global sample g (a counter that runs over
//    all epochs) belongs to epoch e = g / N, position i = g % N, and reads
//    dataset sample perm_e(i). perm_e is a pseudo-random permutation of [0, N)
//    that depends only on (seed, e) — see SamplePermutation — and is the
//    identity when shuffle = false.
//  * Global step s with global batch B uses global samples [s*B, (s+1)*B).
//    Rank r of W takes the contiguous slice
//        [s*B + r*B/W, s*B + (r+1)*B/W)          (B % W must be 0),
//    see rank_slice(). Micro-batches (gradient accumulation) split that slice
//    in order: micro-batch m of size M reads [first + m*M, first + (m+1)*M).
//    Hence B = W * micro * accum, and the concatenation of all ranks' slices
//    of step s is the same list of samples for any W.
//  * The resumable state is LoaderState::next_sample, the first global sample
//    of the next step (= (s+1)*B after step s completes). It is a plain
//    counter: restarting with another W (same B, seed, shards, seq_len)
//    continues the identical sample sequence.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "io/data/token_shard.h"

namespace mor::io {

struct LoaderConfig {
  std::string pattern;      // glob, e.g. "dir/edu_fineweb_train_*.bin"; files sorted by name
  int seq_len = 0;          // tokens per input sequence; a sample has seq_len + 1 tokens
  uint32_t vocab_size = 0;  // every token id must be < vocab_size (checked at open)
  uint64_t seed = 0;
  bool shuffle = true;
};

// Resumable loader position: the global sample counter (see contract above).
struct LoaderState {
  uint64_t next_sample = 0;
  uint64_t epoch(uint64_t num_samples) const { return next_sample / num_samples; }
};

struct SampleRange {
  uint64_t first = 0;
  uint64_t count = 0;
};

// Rank `rank`'s slice of global step `step`: {step*B + rank*B/W, B/W}.
// Throws std::invalid_argument when B % W != 0 (message names both numbers),
// or when B <= 0, W <= 0 or rank is not in [0, W).
SampleRange rank_slice(uint64_t step, int global_batch, int rank, int world);

// Nearly equal contiguous split of [0, total) for rank r of W (the first
// total % W ranks get one more item); for spreading validation over ranks.
SampleRange even_slice(uint64_t total, int rank, int world);

// The files a glob pattern matches, sorted by name (byte order); empty when nothing matches.
// Nothing is dropped silently: std::runtime_error, starting with `what` and naming the pattern,
// when the pattern is itself a directory ("is a directory"), when a directory cannot be read
// while matching, or when any match is not a regular file — each such match is named with what
// it is (a directory, a dangling symlink, a symlink loop, a fifo, ...).
std::vector<std::string> glob_files(const std::string& pattern, const std::string& what);

// glob_files(pattern, "token shards"), and an error naming the pattern when nothing matches.
std::vector<std::string> glob_shards(const std::string& pattern);

// Seeded pseudo-random permutation of [0, n), a function of (seed, epoch)
// only: a balanced Feistel network (8 rounds, splitmix64 round function) over
// the smallest 2^(2h) >= n domain, with cycle-walking back into [0, n). Pure
// 64-bit integer arithmetic: the same on every platform and world size. O(1)
// memory, O(1) expected time per lookup (< 4 Feistel evaluations on average).
class SamplePermutation {
 public:
  SamplePermutation(uint64_t n, uint64_t seed, uint64_t epoch, bool shuffle = true);
  uint64_t size() const { return n_; }
  uint64_t operator()(uint64_t i) const;  // i must be < size()

 private:
  static constexpr int kRounds = 8;
  uint64_t encrypt(uint64_t x) const;
  uint64_t n_ = 0;
  bool identity_ = true;
  int half_bits_ = 0;
  uint64_t half_mask_ = 0;
  uint64_t keys_[kRounds] = {};
};

// All samples of a set of shards, in file-name order (no permutation).
class TokenDataset {
 public:
  // Opens every shard (validating ids < vocab_size; vocab_size 0 skips that
  // check). Throws if seq_len < 1 or if the shards hold no sample at all.
  TokenDataset(const std::vector<std::string>& paths, int seq_len, uint32_t vocab_size);
  // Same, over glob_shards(pattern).
  static TokenDataset from_pattern(const std::string& pattern, int seq_len, uint32_t vocab_size);

  struct Location {
    size_t shard = 0;     // index into shards()
    uint64_t offset = 0;  // first token of the window within that shard
  };

  uint64_t num_samples() const { return prefix_.back(); }
  int seq_len() const { return seq_len_; }
  int sample_len() const { return seq_len_ + 1; }
  uint64_t num_tokens() const { return num_tokens_; }
  size_t num_shards() const { return shards_.size(); }
  const TokenShard& shard(size_t s) const { return shards_[s]; }
  // Samples contributed by shard s: floor((size - 1) / seq_len), 0 for tiny shards.
  uint64_t shard_samples(size_t s) const { return prefix_[s + 1] - prefix_[s]; }
  // Dataset sample k (< num_samples(); else std::out_of_range) -> shard, offset.
  Location locate(uint64_t k) const;
  // Writes the seq_len + 1 tokens of dataset sample k to out.
  void read_sample(uint64_t k, int32_t* out) const;

 private:
  std::vector<TokenShard> shards_;
  std::vector<uint64_t> prefix_;  // prefix_[s] = samples in shards [0, s)
  uint64_t num_tokens_ = 0;
  int seq_len_ = 0;
};

// Training loader: global sample g -> dataset sample perm_{g/N}(g % N).
// Thread-safe: read_samples/prefetch may be called from several threads.
class DataLoader {
 public:
  explicit DataLoader(const LoaderConfig& cfg);
  ~DataLoader();  // stops and joins the prefetch thread
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  const LoaderConfig& config() const { return cfg_; }
  const TokenDataset& dataset() const { return data_; }
  uint64_t num_samples() const { return data_.num_samples(); }  // N, samples per epoch
  int seq_len() const { return cfg_.seq_len; }
  int sample_len() const { return cfg_.seq_len + 1; }
  uint64_t epoch_of(uint64_t global_sample) const { return global_sample / num_samples(); }
  // The dataset sample that global sample g reads: perm_e(g % N), e = g / N.
  uint64_t dataset_index(uint64_t global_sample) const;

  // Writes n * (seq_len + 1) int32 tokens of global samples
  // [first_sample, first_sample + n) to out, sample after sample. If the
  // pending prefetch is exactly this range, its buffer is returned (waiting
  // for it if still running) and consumed; otherwise reads synchronously.
  // Rethrows an error raised while prefetching that range.
  void read_samples(uint64_t first_sample, int n, int32_t* out);

  // Starts filling an internal buffer with samples [first_sample,
  // first_sample + n) on the background thread and returns at once. One
  // prefetch slot: a new prefetch replaces a pending one that has not been
  // read (if the thread is already filling it, that fill completes first).
  void prefetch(uint64_t first_sample, int n);

  // Reads n samples from state.next_sample and advances it by n.
  void read_next(LoaderState& state, int n, int32_t* out);

  // Number of read_samples calls served from the prefetch buffer.
  uint64_t prefetch_hits() const;

 private:
  void read_sync(uint64_t first_sample, int n, int32_t* out) const;
  void worker_loop();

  LoaderConfig cfg_;
  TokenDataset data_;

  // Prefetch slot, guarded by mu_.
  enum class Slot { kEmpty, kPending, kRunning, kReady };
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::thread worker_;
  bool stop_ = false;
  Slot slot_ = Slot::kEmpty;
  uint64_t req_first_ = 0;
  int req_n_ = 0;
  uint64_t req_gen_ = 0;  // bumps on every prefetch() call
  std::vector<int32_t> buf_;
  std::exception_ptr buf_error_;
  uint64_t hits_ = 0;
};

// Validation loader: the shards' samples in order (no shuffle), same windows
// as training (stride seq_len, so every target token after the first of a
// shard is scored once, except a shard's tail shorter than seq_len).
class ValLoader {
 public:
  ValLoader(const std::string& pattern, int seq_len, uint32_t vocab_size);
  int num_samples() const;  // throws if the count does not fit an int
  int seq_len() const { return data_.seq_len(); }
  int sample_len() const { return data_.sample_len(); }
  const TokenDataset& dataset() const { return data_; }
  // Writes n * (seq_len + 1) tokens of samples [first, first + n) (must lie
  // within [0, num_samples()); else std::out_of_range).
  void read_samples(uint64_t first, int n, int32_t* out) const;

 private:
  TokenDataset data_;
};

}  // namespace mor::io
