// The stages of `mor-dist prepare` (prepare_shards, io/data/prepare.cpp) and what connects them:
//   reader   files -> batches of whole lines               (prepare_pipeline.cpp)
//   workers  batches -> tokens, bad lines recorded          (prepare_pipeline.cpp)
//   writer   results in input order -> val / train shards  (prepare_output.cpp)
//   manifest manifest.json and the final report             (prepare_output.cpp)
// Internal to io/data/prepare*.cpp.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <exception>
#include <functional>
#include <future>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "io/data/prepare.h"

namespace mor::io {
class Tokenizer;
}

namespace mor::io::prep {

using Clock = std::chrono::steady_clock;

struct Batch {
  uint64_t seq = 0;
  uint32_t file = 0;
  std::string data;
  std::vector<std::pair<size_t, size_t>> lines;  // offset, length (without '\n')
  std::vector<uint64_t> line_no;                 // 1-based
};

struct BadRecord {
  uint64_t line = 0;
  BadLine kind{};
  std::string detail;
};

struct Result {
  uint32_t file = 0;
  std::vector<uint32_t> tokens;    // documents, each starting with the EOT id
  std::vector<uint64_t> doc_ends;  // end offset of each document in tokens
  uint64_t text_bytes = 0;
  std::vector<BadRecord> bad;
};

// Everything the reader, the workers and the writer share, behind one mutex. At most max_inflight
// batches are between the reader and the writer; batch texts and token vectors are recycled (they
// keep their capacity, so steady state allocates and page-faults nothing new). The first error
// any stage reports stops them all.
class WorkQueue {
 public:
  explicit WorkQueue(uint64_t max_inflight) : max_inflight_(max_inflight) {}

  // Reader: waits for room; false once stopped.
  bool submit(Batch&& b);
  std::string spare_data();  // a recycled batch text (empty when none)
  void reader_finished();

  // Workers: the next batch; false when stopped or none will come.
  bool take(Batch* b);
  std::vector<uint32_t> spare_tokens();  // a recycled token vector (empty when none)
  void finish(Batch&& b, Result&& r);    // recycles b's text, hands r to the writer

  // Writer: the next result in input order; false when stopped or every batch is written.
  // While waiting, calls idle() every `tick`.
  bool next(Result* r, std::chrono::milliseconds tick, const std::function<void()>& idle);
  void recycle_tokens(std::vector<uint32_t>&& tokens);

  void fail(std::exception_ptr e);  // the first error wins
  std::exception_ptr error();

 private:
  const uint64_t max_inflight_;
  std::mutex mu_;
  std::condition_variable cv_work_, cv_done_, cv_space_;
  std::deque<Batch> work_;
  std::map<uint64_t, Result> done_;
  uint64_t submitted_ = 0, written_ = 0;
  bool reader_done_ = false, stop_ = false;
  std::exception_ptr error_;
  std::vector<std::string> free_data_;
  std::vector<std::vector<uint32_t>> free_tokens_;
};

// Reader thread: the files in order -> batches of about opt.batch_bytes of whole lines.
// raw_consumed counts the stored (compressed) bytes read so far, for the progress line.
void read_inputs(const PrepareOptions& opt, const std::vector<std::string>& files, const std::vector<uint64_t>& sizes,
                 WorkQueue& q, std::atomic<uint64_t>& raw_consumed);

// Worker thread: batches -> documents (end-of-text id, then the text's tokens) and bad lines.
void tokenize_batches(const PrepareOptions& opt, const Tokenizer& tok, uint32_t eot, WorkQueue& q);

// The progress line on `log` (a terminal: rewritten in place every 0.5 s; else a line every 10 s).
class Progress {
 public:
  Progress(std::FILE* log, const PrepareOptions& opt, Clock::time_point t0, const std::atomic<uint64_t>& raw_consumed,
           const PrepareResult& res);
  std::chrono::milliseconds tick() const { return std::chrono::milliseconds(tty_ ? 500 : 10000); }
  void print(bool final_line);
  void maybe_print();  // when a tick has passed since the last line

 private:
  std::FILE* log_;
  bool enabled_, tty_;
  Clock::time_point t0_, last_;
  const std::atomic<uint64_t>& raw_consumed_;
  const PrepareResult& res_;
};

// Writer: documents in input order -> the validation shard (whole documents until val_tokens),
// then train shards of exactly shard_tokens. Each full shard is written and hashed in the
// background while the next one fills.
class ShardWriter {
 public:
  ShardWriter(const PrepareOptions& opt, uint32_t vocab_size);
  void add(const Result& r);
  std::vector<ShardInfo> finish();  // writes the last, partial shard; waits for every write
  void abandon();                   // on an error: waits for the write in flight

 private:
  void flush(bool val);
  void finish_pending();

  const PrepareOptions& opt_;
  const uint32_t vocab_size_;
  std::vector<uint32_t> cur_;
  uint64_t cur_docs_ = 0;
  bool in_val_;
  int next_train_ = 1;
  // The shard being written: returns its SHA-256 and the token buffer for reuse.
  std::future<std::pair<std::string, std::vector<uint32_t>>> pending_;
  std::vector<uint32_t> spare_;
  std::vector<ShardInfo> shards_;
};

// The writer's loop: results in input order -> bad-line accounting, totals, shards.
void write_in_order(const PrepareOptions& opt, const std::vector<std::string>& files, WorkQueue& q, ShardWriter& writer,
                    Progress& progress, PrepareResult& res);

// manifest.json (no times, thread counts or output paths: identical for any thread count).
void write_manifest(const PrepareOptions& opt, const PrepareResult& res, const std::vector<uint64_t>& sizes);
// The final lines on `log`: totals, shards written, bad lines with their first examples.
void print_summary(std::FILE* log, const PrepareOptions& opt, const PrepareResult& res);

std::string sha256_file(const std::string& path);

}  // namespace mor::io::prep
