#include "io/data/loader.h"

#include <glob.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <stdexcept>
#include <utility>

namespace mor::io {

namespace {

constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ull;

// splitmix64 finalizer: a bijection on 64-bit words with good avalanche.
inline uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

}  // namespace

SampleRange rank_slice(uint64_t step, int global_batch, int rank, int world) {
  if (global_batch <= 0)
    throw std::invalid_argument("rank_slice: global batch " + std::to_string(global_batch) + " must be positive");
  if (world <= 0) throw std::invalid_argument("rank_slice: world size " + std::to_string(world) + " must be positive");
  if (rank < 0 || rank >= world)
    throw std::invalid_argument("rank_slice: rank " + std::to_string(rank) + " is not in [0, " + std::to_string(world) +
                                ")");
  if (global_batch % world != 0)
    throw std::invalid_argument("rank_slice: global batch " + std::to_string(global_batch) +
                                " is not divisible by world size " + std::to_string(world));
  const uint64_t B = static_cast<uint64_t>(global_batch);
  const uint64_t per = B / static_cast<uint64_t>(world);
  return {step * B + static_cast<uint64_t>(rank) * per, per};
}

SampleRange even_slice(uint64_t total, int rank, int world) {
  if (world <= 0 || rank < 0 || rank >= world)
    throw std::invalid_argument("even_slice: rank " + std::to_string(rank) + " is not in [0, " + std::to_string(world) +
                                ")");
  const uint64_t W = static_cast<uint64_t>(world), r = static_cast<uint64_t>(rank);
  const uint64_t base = total / W, extra = total % W;
  const uint64_t first = r * base + std::min(r, extra);
  return {first, base + (r < extra ? 1 : 0)};
}

namespace {

// What a path that is not a regular file is, for error messages.
std::string not_regular_kind(const std::string& p) {
  struct stat lst {
  }, st{};
  if (::lstat(p.c_str(), &lst) != 0) return std::string("cannot stat: ") + std::strerror(errno);
  if (::stat(p.c_str(), &st) != 0) {
    const int e = errno;
    if (S_ISLNK(lst.st_mode)) {
      if (e == ELOOP) return "a symlink loop";
      std::string target(4096, '\0');
      const ssize_t n = ::readlink(p.c_str(), target.data(), target.size());
      target.resize(n > 0 ? static_cast<size_t>(n) : 0);
      if (e == ENOENT) return "a dangling symlink to '" + target + "'";
      return "a symlink to '" + target + "' that cannot be followed: " + std::strerror(e);
    }
    return std::string("cannot stat: ") + std::strerror(e);
  }
  const std::string via = S_ISLNK(lst.st_mode) ? " (through a symlink)" : "";
  if (S_ISDIR(st.st_mode)) return "a directory" + via;
  if (S_ISFIFO(st.st_mode)) return "a fifo" + via;
  if (S_ISSOCK(st.st_mode)) return "a socket" + via;
  if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)) return "a device" + via;
  return "not a regular file" + via;
}

thread_local std::string g_glob_error;  // glob's error callback cannot carry a context pointer

int on_glob_error(const char* path, int err) {
  g_glob_error = std::string(path) + ": " + std::strerror(err);
  return 1;  // stop matching (GLOB_ABORTED)
}

}  // namespace

std::vector<std::string> glob_files(const std::string& pattern, const std::string& what) {
  if (pattern.empty()) throw std::runtime_error(what + ": empty file pattern");
  g_glob_error.clear();
  glob_t g{};
  const int rc = ::glob(pattern.c_str(), GLOB_ERR, on_glob_error, &g);
  std::vector<std::string> out, bad;
  if (rc == 0) {
    for (size_t i = 0; i < g.gl_pathc; ++i) {
      struct stat st {};
      if (::stat(g.gl_pathv[i], &st) == 0 && S_ISREG(st.st_mode))
        out.emplace_back(g.gl_pathv[i]);
      else
        bad.emplace_back(g.gl_pathv[i]);
    }
  }
  ::globfree(&g);
  if (rc == GLOB_ABORTED)
    throw std::runtime_error(what + ": cannot read a directory while matching pattern '" + pattern + "'" +
                             (g_glob_error.empty() ? "" : ": " + g_glob_error));
  if (rc != 0 && rc != GLOB_NOMATCH)
    throw std::runtime_error(what + ": glob failed for pattern '" + pattern + "'" +
                             (rc == GLOB_NOSPACE ? " (out of memory)" : ""));
  if (bad.size() == 1 && out.empty() && bad[0] == pattern && not_regular_kind(bad[0]).rfind("a directory", 0) == 0)
    throw std::runtime_error(what + ": '" + pattern + "' is a directory; give a pattern of files in it, e.g. '" +
                             pattern + (pattern.ends_with("/") ? "" : "/") + "*'");
  if (!bad.empty()) {
    std::sort(bad.begin(), bad.end());
    std::string list;
    for (size_t i = 0; i < bad.size() && i < 10; ++i)
      list += (i ? "; '" : "'") + bad[i] + "' is " + not_regular_kind(bad[i]);
    if (bad.size() > 10) list += "; and " + std::to_string(bad.size() - 10) + " more";
    throw std::runtime_error(
        what + ": pattern '" + pattern + "' matches " + std::to_string(bad.size()) +
        (bad.size() == 1 ? " path that is not a regular file: " : " paths that are not regular files: ") + list);
  }
  std::sort(out.begin(), out.end());  // byte order, independent of locale
  return out;
}

std::vector<std::string> glob_shards(const std::string& pattern) {
  auto files = glob_files(pattern, "token shards");
  if (files.empty()) throw std::runtime_error("token shards: no files match pattern '" + pattern + "'");
  return files;
}

// ---------------------------------------------------------------------------
// SamplePermutation

SamplePermutation::SamplePermutation(uint64_t n, uint64_t seed, uint64_t epoch, bool shuffle)
    : n_(n), identity_(!shuffle || n <= 1) {
  if (identity_) return;
  int bits = 0;  // bits needed for n - 1
  for (uint64_t v = n - 1; v != 0; v >>= 1) ++bits;
  half_bits_ = std::max(1, (bits + 1) / 2);
  half_mask_ = (half_bits_ >= 64) ? ~0ull : ((1ull << half_bits_) - 1);
  const uint64_t base = mix64(mix64(seed ^ 0x6A09E667F3BCC908ull) + (epoch + 1) * kGolden);
  for (int r = 0; r < kRounds; ++r) keys_[r] = mix64(base + static_cast<uint64_t>(r + 1) * kGolden);
}

uint64_t SamplePermutation::encrypt(uint64_t x) const {
  uint64_t left = x >> half_bits_, right = x & half_mask_;
  for (int r = 0; r < kRounds; ++r) {
    const uint64_t f = mix64(right ^ keys_[r]) & half_mask_;
    const uint64_t nl = right;
    right = left ^ f;
    left = nl;
  }
  return (left << half_bits_) | right;
}

uint64_t SamplePermutation::operator()(uint64_t i) const {
  if (i >= n_)
    throw std::out_of_range("SamplePermutation: index " + std::to_string(i) + " out of range [0, " +
                            std::to_string(n_) + ")");
  if (identity_) return i;
  // Domain 2^(2h) < 4n, so the walk takes < 4 steps on average; it ends
  // because x lies on a cycle of the domain permutation that contains i < n.
  uint64_t x = encrypt(i);
  while (x >= n_) x = encrypt(x);
  return x;
}

// ---------------------------------------------------------------------------
// TokenDataset

TokenDataset::TokenDataset(const std::vector<std::string>& paths, int seq_len, uint32_t vocab_size)
    : seq_len_(seq_len) {
  if (seq_len < 1) throw std::invalid_argument("token dataset: seq_len " + std::to_string(seq_len) + " must be >= 1");
  if (paths.empty()) throw std::runtime_error("token dataset: no shard files given");
  shards_.reserve(paths.size());
  prefix_.reserve(paths.size() + 1);
  prefix_.push_back(0);
  for (const auto& p : paths) {
    shards_.emplace_back(p, vocab_size);
    const uint64_t c = shards_.back().size();
    num_tokens_ += c;
    const uint64_t s = c == 0 ? 0 : (c - 1) / static_cast<uint64_t>(seq_len);
    prefix_.push_back(prefix_.back() + s);
  }
  if (prefix_.back() == 0)
    throw std::runtime_error("token dataset: " + std::to_string(paths.size()) + " shard(s) starting with '" +
                             paths.front() + "' hold " + std::to_string(num_tokens_) +
                             " tokens but no shard has seq_len + 1 = " + std::to_string(seq_len + 1) +
                             " tokens; no samples");
}

TokenDataset TokenDataset::from_pattern(const std::string& pattern, int seq_len, uint32_t vocab_size) {
  return TokenDataset(glob_shards(pattern), seq_len, vocab_size);
}

TokenDataset::Location TokenDataset::locate(uint64_t k) const {
  if (k >= num_samples())
    throw std::out_of_range("token dataset: sample " + std::to_string(k) + " out of range [0, " +
                            std::to_string(num_samples()) + ")");
  // First s with prefix_[s + 1] > k.
  const auto it = std::upper_bound(prefix_.begin() + 1, prefix_.end(), k);
  const size_t s = static_cast<size_t>(it - (prefix_.begin() + 1));
  return {s, (k - prefix_[s]) * static_cast<uint64_t>(seq_len_)};
}

void TokenDataset::read_sample(uint64_t k, int32_t* out) const {
  const Location loc = locate(k);
  shards_[loc.shard].copy_tokens(loc.offset, static_cast<uint64_t>(seq_len_) + 1, out);
}

// ---------------------------------------------------------------------------
// DataLoader

namespace {
LoaderConfig checked(const LoaderConfig& cfg) {
  if (cfg.vocab_size == 0)
    throw std::invalid_argument("data loader: vocab_size must be > 0 (pattern '" + cfg.pattern + "')");
  return cfg;
}
}  // namespace

DataLoader::DataLoader(const LoaderConfig& cfg)
    : cfg_(checked(cfg)), data_(TokenDataset::from_pattern(cfg.pattern, cfg.seq_len, cfg.vocab_size)) {}

DataLoader::~DataLoader() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (worker_.joinable()) worker_.join();
}

uint64_t DataLoader::dataset_index(uint64_t g) const {
  const uint64_t N = num_samples();
  return SamplePermutation(N, cfg_.seed, g / N, cfg_.shuffle)(g % N);
}

void DataLoader::read_sync(uint64_t first, int n, int32_t* out) const {
  if (n < 0) throw std::invalid_argument("data loader: negative sample count " + std::to_string(n));
  const uint64_t N = num_samples();
  const size_t len = static_cast<size_t>(sample_len());
  uint64_t cached_epoch = ~0ull;
  SamplePermutation perm(N, cfg_.seed, first / N, cfg_.shuffle);
  for (int j = 0; j < n; ++j) {
    const uint64_t g = first + static_cast<uint64_t>(j);
    const uint64_t e = g / N;
    if (e != cached_epoch) {
      perm = SamplePermutation(N, cfg_.seed, e, cfg_.shuffle);
      cached_epoch = e;
    }
    data_.read_sample(perm(g % N), out + static_cast<size_t>(j) * len);
  }
}

void DataLoader::read_samples(uint64_t first, int n, int32_t* out) {
  if (n < 0) throw std::invalid_argument("data loader: negative sample count " + std::to_string(n));
  {
    std::unique_lock<std::mutex> lk(mu_);
    if (slot_ != Slot::kEmpty && req_first_ == first && req_n_ == n) {
      const uint64_t gen = req_gen_;
      // Also stop waiting when another thread consumed the buffer (kEmpty)
      // or a newer prefetch replaced this request.
      cv_.wait(lk, [&] { return slot_ == Slot::kReady || slot_ == Slot::kEmpty || req_gen_ != gen; });
      if (slot_ == Slot::kReady && req_gen_ == gen) {
        std::vector<int32_t> buf = std::move(buf_);
        std::exception_ptr err = std::exchange(buf_error_, nullptr);
        buf_.clear();
        slot_ = Slot::kEmpty;
        if (!err) ++hits_;
        lk.unlock();
        cv_.notify_all();  // wake other readers waiting on this range
        if (err) std::rethrow_exception(err);
        if (!buf.empty()) std::memcpy(out, buf.data(), buf.size() * sizeof(int32_t));
        return;
      }
      // Consumed or replaced while we waited: read it ourselves.
    }
  }
  read_sync(first, n, out);
}

void DataLoader::prefetch(uint64_t first, int n) {
  if (n < 0) throw std::invalid_argument("data loader: negative sample count " + std::to_string(n));
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (!worker_.joinable()) worker_ = std::thread([this] { worker_loop(); });
    // A fill in progress (kRunning) finishes, then sees the new generation
    // and leaves the slot kPending for this request.
    req_first_ = first;
    req_n_ = n;
    ++req_gen_;
    if (slot_ != Slot::kRunning) slot_ = Slot::kPending;
    buf_error_ = nullptr;
  }
  cv_.notify_all();
}

void DataLoader::worker_loop() {
  std::vector<int32_t> work;
  std::unique_lock<std::mutex> lk(mu_);
  for (;;) {
    cv_.wait(lk, [&] { return stop_ || slot_ == Slot::kPending; });
    if (stop_) return;
    const uint64_t first = req_first_;
    const int n = req_n_;
    const uint64_t gen = req_gen_;
    slot_ = Slot::kRunning;
    lk.unlock();
    std::exception_ptr err;
    try {
      work.resize(static_cast<size_t>(n) * static_cast<size_t>(sample_len()));
      read_sync(first, n, work.data());
    } catch (...) {
      err = std::current_exception();
    }
    lk.lock();
    if (req_gen_ == gen) {
      std::swap(buf_, work);
      buf_error_ = err;
      slot_ = Slot::kReady;
    } else {
      slot_ = Slot::kPending;  // a newer prefetch arrived during the fill
    }
    cv_.notify_all();
  }
}

void DataLoader::read_next(LoaderState& state, int n, int32_t* out) {
  read_samples(state.next_sample, n, out);
  state.next_sample += static_cast<uint64_t>(n);
}

uint64_t DataLoader::prefetch_hits() const {
  std::lock_guard<std::mutex> lk(mu_);
  return hits_;
}

// ---------------------------------------------------------------------------
// ValLoader

ValLoader::ValLoader(const std::string& pattern, int seq_len, uint32_t vocab_size)
    : data_(TokenDataset::from_pattern(pattern, seq_len, vocab_size)) {}

int ValLoader::num_samples() const {
  if (data_.num_samples() > static_cast<uint64_t>(INT_MAX))
    throw std::runtime_error("validation loader: " + std::to_string(data_.num_samples()) +
                             " samples do not fit an int");
  return static_cast<int>(data_.num_samples());
}

void ValLoader::read_samples(uint64_t first, int n, int32_t* out) const {
  if (n < 0) throw std::invalid_argument("validation loader: negative sample count " + std::to_string(n));
  if (first > data_.num_samples() || static_cast<uint64_t>(n) > data_.num_samples() - first)
    throw std::out_of_range("validation loader: samples [" + std::to_string(first) + ", " +
                            std::to_string(first + static_cast<uint64_t>(n)) + ") out of range [0, " +
                            std::to_string(data_.num_samples()) + ")");
  const size_t len = static_cast<size_t>(data_.sample_len());
  for (int j = 0; j < n; ++j) data_.read_sample(first + static_cast<uint64_t>(j), out + static_cast<size_t>(j) * len);
}

}  // namespace mor::io
