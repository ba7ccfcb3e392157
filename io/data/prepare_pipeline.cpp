// `mor-dist prepare`: the queue between the stages, the reader and the tokenizer workers.
#include <algorithm>
#include <cstring>

#include "io/data/prepare_input.h"
#include "io/data/prepare_stages.h"
#include "io/data/tokenizer.h"

namespace mor::io::prep {

// ---- WorkQueue ---------------------------------------------------------------------------

bool WorkQueue::submit(Batch&& b) {
  std::unique_lock<std::mutex> lk(mu_);
  cv_space_.wait(lk, [&] { return stop_ || submitted_ - written_ < max_inflight_; });
  if (stop_) return false;
  b.seq = submitted_++;
  work_.push_back(std::move(b));
  cv_work_.notify_one();
  return true;
}

std::string WorkQueue::spare_data() {
  std::lock_guard<std::mutex> lk(mu_);
  if (free_data_.empty()) return {};
  std::string d = std::move(free_data_.back());
  free_data_.pop_back();
  return d;
}

void WorkQueue::reader_finished() {
  std::lock_guard<std::mutex> lk(mu_);
  reader_done_ = true;
  cv_done_.notify_all();
  cv_work_.notify_all();
}

bool WorkQueue::take(Batch* b) {
  std::unique_lock<std::mutex> lk(mu_);
  cv_work_.wait(lk, [&] { return stop_ || !work_.empty() || reader_done_; });
  if (stop_ || (work_.empty() && reader_done_)) return false;
  *b = std::move(work_.front());
  work_.pop_front();
  return true;
}

std::vector<uint32_t> WorkQueue::spare_tokens() {
  std::lock_guard<std::mutex> lk(mu_);
  if (free_tokens_.empty()) return {};
  std::vector<uint32_t> t = std::move(free_tokens_.back());
  free_tokens_.pop_back();
  return t;
}

void WorkQueue::finish(Batch&& b, Result&& r) {
  std::lock_guard<std::mutex> lk(mu_);
  b.data.clear();
  free_data_.push_back(std::move(b.data));
  done_.emplace(b.seq, std::move(r));
  cv_done_.notify_all();
}

bool WorkQueue::next(Result* r, std::chrono::milliseconds tick, const std::function<void()>& idle) {
  std::unique_lock<std::mutex> lk(mu_);
  while (!stop_ && done_.find(written_) == done_.end() && !(reader_done_ && written_ == submitted_)) {
    if (cv_done_.wait_for(lk, tick) == std::cv_status::timeout) {
      lk.unlock();
      idle();
      lk.lock();
    }
  }
  if (stop_) return false;
  auto it = done_.find(written_);
  if (it == done_.end()) return false;  // all batches consumed
  *r = std::move(it->second);
  done_.erase(it);
  ++written_;
  cv_space_.notify_one();
  return true;
}

void WorkQueue::recycle_tokens(std::vector<uint32_t>&& tokens) {
  std::lock_guard<std::mutex> lk(mu_);
  free_tokens_.push_back(std::move(tokens));
}

void WorkQueue::fail(std::exception_ptr e) {
  std::lock_guard<std::mutex> lk(mu_);
  if (!error_) error_ = e;
  stop_ = true;
  cv_work_.notify_all();
  cv_done_.notify_all();
  cv_space_.notify_all();
}

std::exception_ptr WorkQueue::error() {
  std::lock_guard<std::mutex> lk(mu_);
  return error_;
}

// ---- reader ------------------------------------------------------------------------------

namespace {

// Where the reader is in one file: b.data[line_start, scan) holds no '\n' yet.
struct LineScan {
  Batch b;
  size_t scan = 0, line_start = 0;
  uint64_t line_no = 0;

  // Records every complete line of b.data (and at eof the last one, without '\n').
  void split(bool eof) {
    const char* d = b.data.data();
    while (true) {
      const void* nl = scan < b.data.size() ? std::memchr(d + scan, '\n', b.data.size() - scan) : nullptr;
      if (!nl) break;
      const size_t e = static_cast<size_t>(static_cast<const char*>(nl) - d);
      b.lines.emplace_back(line_start, e - line_start);
      b.line_no.push_back(++line_no);
      line_start = scan = e + 1;
    }
    scan = b.data.size();
    if (eof && line_start < b.data.size()) {  // last line without '\n'
      b.lines.emplace_back(line_start, b.data.size() - line_start);
      b.line_no.push_back(++line_no);
      line_start = b.data.size();
    }
  }
};

// One file -> batches; false when the queue stopped.
bool read_file(const PrepareOptions& opt, uint32_t fi, const std::string& path, uint64_t base, WorkQueue& q,
               std::atomic<uint64_t>& raw_consumed) {
  InputFile in(path);
  LineScan ls;
  while (true) {
    const size_t got = in.read(ls.b.data, std::max<size_t>(opt.batch_bytes, 4096));
    raw_consumed.store(base + in.consumed(), std::memory_order_relaxed);
    const bool eof = got == 0;
    ls.split(eof);
    if ((eof || ls.line_start >= opt.batch_bytes) && !ls.b.lines.empty()) {
      // The partial line after the last '\n' starts the next batch.
      Batch next;
      next.data = q.spare_data();
      next.data.assign(ls.b.data, ls.line_start, std::string::npos);
      ls.b.data.resize(ls.line_start);
      ls.b.file = fi;
      if (!q.submit(std::move(ls.b))) return false;
      ls.b = std::move(next);
      ls.scan = ls.b.data.size();
      ls.line_start = 0;
    }
    if (eof) return true;
  }
}

bool blank(std::string_view s) {
  for (const char c : s)
    if (c != ' ' && c != '\t' && c != '\r' && c != '\n') return false;
  return true;
}

// One batch -> its documents' tokens and its bad lines (with strict, up to the first bad one).
void tokenize_batch(const PrepareOptions& opt, const Tokenizer& tok, uint32_t eot, const Batch& b, Result& r,
                    std::string& text, std::string& detail) {
  r.tokens.clear();
  r.tokens.reserve(b.data.size() / 3 + 16);
  for (size_t k = 0; k < b.lines.size(); ++k) {
    const std::string_view line(b.data.data() + b.lines[k].first, b.lines[k].second);
    if (blank(line)) continue;
    BadLine kind;
    if (!parse_jsonl_text(line, &text, &kind, &detail)) {
      r.bad.push_back(BadRecord{b.line_no[k], kind, detail});
      if (opt.strict) break;  // the writer stops at the first one
      continue;
    }
    r.tokens.push_back(eot);
    tok.encode_append(text, r.tokens);
    r.doc_ends.push_back(r.tokens.size());
    r.text_bytes += text.size();
  }
}

}  // namespace

void read_inputs(const PrepareOptions& opt, const std::vector<std::string>& files, const std::vector<uint64_t>& sizes,
                 WorkQueue& q, std::atomic<uint64_t>& raw_consumed) {
  try {
    uint64_t base = 0;
    for (uint32_t fi = 0; fi < files.size(); ++fi) {
      if (!read_file(opt, fi, files[fi], base, q, raw_consumed)) return;
      base += sizes[fi];
    }
    q.reader_finished();
  } catch (...) {
    q.fail(std::current_exception());
  }
}

// ---- workers -----------------------------------------------------------------------------

void tokenize_batches(const PrepareOptions& opt, const Tokenizer& tok, uint32_t eot, WorkQueue& q) {
  try {
    std::string text;
    std::string detail;
    while (true) {
      Batch b;
      if (!q.take(&b)) return;
      Result r;
      r.file = b.file;
      r.tokens = q.spare_tokens();
      tokenize_batch(opt, tok, eot, b, r, text, detail);
      q.finish(std::move(b), std::move(r));
    }
  } catch (...) {
    q.fail(std::current_exception());
  }
}

}  // namespace mor::io::prep
