// `mor-dist prepare`: the in-order writer (token shards), the progress line, manifest.json and
// the final report.
#include <fcntl.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "io/data/prepare_stages.h"
#include "io/data/token_shard.h"

namespace mor::io::prep {

namespace {

std::string errno_str() { return std::strerror(errno); }

std::string token_shard_name(bool val, int index) {
  char buf[96];
  std::snprintf(buf, sizeof buf, "edu_fineweb_%s_%06d.bin", val ? "val" : "train", index);
  return buf;
}

std::string human_bytes(double b) {
  char buf[32];
  if (b >= 1e9)
    std::snprintf(buf, sizeof buf, "%.2f GB", b / 1e9);
  else if (b >= 1e6)
    std::snprintf(buf, sizeof buf, "%.1f MB", b / 1e6);
  else
    std::snprintf(buf, sizeof buf, "%.1f kB", b / 1e3);
  return buf;
}

std::string human_time(double s) {
  char buf[32];
  const long t = static_cast<long>(s + 0.5);
  if (t >= 3600)
    std::snprintf(buf, sizeof buf, "%ldh%02ldm", t / 3600, (t / 60) % 60);
  else
    std::snprintf(buf, sizeof buf, "%ldm%02lds", t / 60, t % 60);
  return buf;
}

// Counts r's bad lines (the first 20 kept as examples); with strict the first one is the error.
void account_bad_lines(const PrepareOptions& opt, const std::string& file, const Result& r, PrepareResult& res) {
  for (const BadRecord& bad : r.bad) {
    const std::string msg = file + ":" + std::to_string(bad.line) + ": " + bad_line_name(bad.kind) + ": " + bad.detail;
    if (opt.strict) throw std::runtime_error(msg + " (--strict)");
    ++res.bad[static_cast<int>(bad.kind)];
    if (res.bad_examples.size() < 20) res.bad_examples.push_back(msg);
  }
}

}  // namespace

std::string sha256_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw std::runtime_error(path + ": cannot open for checksum: " + errno_str());
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr);
  std::vector<unsigned char> buf(size_t{1} << 20);
  while (true) {
    const ssize_t r = ::read(fd, buf.data(), buf.size());
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      EVP_MD_CTX_free(ctx);
      ::close(fd);
      throw std::runtime_error(path + ": read failed: " + errno_str());
    }
    if (r == 0) break;
    EVP_DigestUpdate(ctx, buf.data(), static_cast<size_t>(r));
  }
  ::close(fd);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx, md, &len);
  EVP_MD_CTX_free(ctx);
  static const char* hexd = "0123456789abcdef";
  std::string s;
  for (unsigned int k = 0; k < len; ++k) {
    s += hexd[md[k] >> 4];
    s += hexd[md[k] & 15];
  }
  return s;
}

// ---- progress ----------------------------------------------------------------------------

Progress::Progress(std::FILE* log, const PrepareOptions& opt, Clock::time_point t0,
                   const std::atomic<uint64_t>& raw_consumed, const PrepareResult& res)
    : log_(log), enabled_(log && opt.progress), tty_(log && ::isatty(::fileno(log))), t0_(t0), last_(Clock::now()),
      raw_consumed_(raw_consumed), res_(res) {}

void Progress::print(bool final_line) {
  if (!enabled_) return;
  const double s = std::chrono::duration<double>(Clock::now() - t0_).count();
  const double in_b = static_cast<double>(raw_consumed_.load(std::memory_order_relaxed));
  const double total = static_cast<double>(res_.input_bytes);
  std::string line = "prepare: " + human_bytes(in_b);
  if (total > 0) {
    char pct[32];
    std::snprintf(pct, sizeof pct, " of %s (%.1f%%)", human_bytes(total).c_str(), 100.0 * in_b / total);
    line += pct;
  }
  char buf[160];
  std::snprintf(buf, sizeof buf, " | %llu docs | %.0f docs/s | %.1f MB/s | %.1fM tokens",
                static_cast<unsigned long long>(res_.documents), s > 0 ? res_.documents / s : 0.0,
                s > 0 ? in_b / 1e6 / s : 0.0, res_.tokens / 1e6);
  line += buf;
  if (total > 0 && in_b > 0 && !final_line) line += " | ETA " + human_time(s * (total - in_b) / in_b);
  if (tty_)
    std::fprintf(log_, "\r%s\033[K%s", line.c_str(), final_line ? "\n" : "");
  else
    std::fprintf(log_, "%s\n", line.c_str());
  std::fflush(log_);
}

void Progress::maybe_print() {
  if (Clock::now() - last_ >= tick()) {
    print(false);
    last_ = Clock::now();
  }
}

// ---- writer ------------------------------------------------------------------------------

ShardWriter::ShardWriter(const PrepareOptions& opt, uint32_t vocab_size)
    : opt_(opt), vocab_size_(vocab_size), in_val_(opt.val_tokens > 0) {}

void ShardWriter::add(const Result& r) {
  uint64_t begin = 0;
  for (const uint64_t end : r.doc_ends) {
    if (in_val_) {  // whole documents only: none is split between val and train
      cur_.insert(cur_.end(), r.tokens.begin() + static_cast<ptrdiff_t>(begin),
                  r.tokens.begin() + static_cast<ptrdiff_t>(end));
      ++cur_docs_;
      if (cur_.size() >= opt_.val_tokens) {
        flush(true);
        in_val_ = false;
      }
    } else {
      uint64_t pos = begin;
      while (pos < end) {
        if (pos == begin) ++cur_docs_;
        const uint64_t take = std::min<uint64_t>(end - pos, opt_.shard_tokens - cur_.size());
        cur_.insert(cur_.end(), r.tokens.begin() + static_cast<ptrdiff_t>(pos),
                    r.tokens.begin() + static_cast<ptrdiff_t>(pos + take));
        pos += take;
        if (cur_.size() == opt_.shard_tokens) flush(false);
      }
    }
    begin = end;
  }
}

void ShardWriter::finish_pending() {
  if (!pending_.valid()) return;
  auto [hash, buf] = pending_.get();
  shards_.back().sha256 = std::move(hash);
  spare_ = std::move(buf);
}

void ShardWriter::flush(bool val) {
  finish_pending();
  const std::string name = val ? token_shard_name(true, 0) : token_shard_name(false, next_train_++);
  shards_.push_back(ShardInfo{name, val ? "val" : "train", cur_.size(), cur_docs_, ""});
  const std::string path = (std::filesystem::path(opt_.out_dir) / name).string();
  pending_ = std::async(std::launch::async, [path, toks = std::move(cur_), vocab = vocab_size_]() mutable {
    write_token_shard(path, toks, vocab);
    return std::make_pair(sha256_file(path), std::move(toks));
  });
  cur_ = std::move(spare_);
  cur_.clear();
  cur_.reserve(static_cast<size_t>(std::min<uint64_t>(opt_.shard_tokens, uint64_t{1} << 24)));
  cur_docs_ = 0;
}

std::vector<ShardInfo> ShardWriter::finish() {
  if (!cur_.empty()) flush(in_val_);
  finish_pending();
  return shards_;
}

void ShardWriter::abandon() {
  if (pending_.valid()) pending_.wait();
}

void write_in_order(const PrepareOptions& opt, const std::vector<std::string>& files, WorkQueue& q, ShardWriter& writer,
                    Progress& progress, PrepareResult& res) {
  while (true) {
    Result r;
    if (!q.next(&r, progress.tick(), [&] { progress.maybe_print(); })) return;
    account_bad_lines(opt, files[r.file], r, res);
    res.text_bytes += r.text_bytes;
    res.documents += r.doc_ends.size();
    res.tokens += r.tokens.size();
    writer.add(r);
    q.recycle_tokens(std::move(r.tokens));
    progress.maybe_print();
  }
}

// ---- manifest and report -----------------------------------------------------------------

void write_manifest(const PrepareOptions& opt, const PrepareResult& res, const std::vector<uint64_t>& sizes) {
  nlohmann::ordered_json m;
  m["format"] = "llm.c token shards: 1024-byte header (int32 magic, version, token count), then the tokens";
  m["token_bytes"] = res.token_bytes;
  m["magic"] = res.token_bytes == 2 ? kShardMagicU16 : kShardMagicU32;
  m["version"] = res.token_bytes == 2 ? kShardVersionU16 : kShardVersionU32;
  m["tokenizer"] = {{"file", opt.tokenizer},
                    {"sha256", sha256_file(opt.tokenizer)},
                    {"vocab_size", res.vocab_size},
                    {"eot_id", res.eot_id}};
  m["shard_tokens"] = opt.shard_tokens;
  m["val_tokens"] = opt.val_tokens;
  nlohmann::ordered_json inputs = nlohmann::ordered_json::array();
  for (size_t k = 0; k < res.files.size(); ++k) inputs.push_back({{"file", res.files[k]}, {"bytes", sizes[k]}});
  m["inputs"] = inputs;
  m["documents"] = res.documents;
  m["tokens"] = res.tokens;
  m["text_bytes"] = res.text_bytes;
  m["bad_lines"] = {{"malformed_json", res.bad[0]},
                    {"missing_text", res.bad[1]},
                    {"invalid_utf8", res.bad[2]},
                    {"examples", res.bad_examples}};
  m["checksum"] = "sha256 of the whole shard file (as sha256sum prints it)";
  nlohmann::ordered_json sl = nlohmann::ordered_json::array();
  for (const auto& s : res.shards)
    sl.push_back(
        {{"file", s.file}, {"split", s.split}, {"tokens", s.tokens}, {"documents", s.documents}, {"sha256", s.sha256}});
  m["shards"] = sl;
  const std::string mpath = (std::filesystem::path(opt.out_dir) / "manifest.json").string();
  {
    std::ofstream f(mpath + ".tmp", std::ios::binary | std::ios::trunc);
    f << m.dump(1) << "\n";
    f.close();
    if (!f) throw std::runtime_error(mpath + ".tmp: write failed");
  }
  std::filesystem::rename(mpath + ".tmp", mpath);
}

void print_summary(std::FILE* log, const PrepareOptions& opt, const PrepareResult& res) {
  const double s = res.seconds;
  int nval = 0, ntrain = 0;
  for (const auto& sh : res.shards) (sh.split == "val" ? nval : ntrain)++;
  std::fprintf(log,
               "prepare: %zu files, %llu documents, %llu tokens (uint%d), %s of text in %.1f s "
               "(%.1f MB/s of input, %.0f docs/s)\n",
               res.files.size(), static_cast<unsigned long long>(res.documents),
               static_cast<unsigned long long>(res.tokens), res.token_bytes * 8,
               human_bytes(static_cast<double>(res.text_bytes)).c_str(), s, s > 0 ? res.input_bytes / 1e6 / s : 0.0,
               s > 0 ? res.documents / s : 0.0);
  std::fprintf(log, "prepare: wrote %d val + %d train shards and manifest.json to %s\n", nval, ntrain,
               opt.out_dir.c_str());
  if (opt.val_tokens > 0 && ntrain == 0)
    std::fprintf(log, "prepare: warning: every document went to validation (--val-tokens %llu); no train shard\n",
                 static_cast<unsigned long long>(opt.val_tokens));
  if (res.bad_total() > 0) {
    std::fprintf(log, "prepare: skipped %llu bad lines: %llu malformed JSON, %llu missing text, %llu invalid UTF-8\n",
                 static_cast<unsigned long long>(res.bad_total()), static_cast<unsigned long long>(res.bad[0]),
                 static_cast<unsigned long long>(res.bad[1]), static_cast<unsigned long long>(res.bad[2]));
    for (const auto& e : res.bad_examples) std::fprintf(log, "prepare:   %s\n", e.c_str());
    if (res.bad_total() > res.bad_examples.size())
      std::fprintf(log, "prepare:   ... (%llu more)\n",
                   static_cast<unsigned long long>(res.bad_total() - res.bad_examples.size()));
  } else {
    std::fprintf(log, "prepare: no bad lines\n");
  }
}

}  // namespace mor::io::prep
