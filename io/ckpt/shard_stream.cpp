#include "io/ckpt/shard_stream.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <thread>

namespace mor::ckpt {

namespace {

[[noreturn]] void fail(const std::string& file, const std::string& what) {
  throw std::runtime_error("checkpoint '" + file + "': " + what);
}

constexpr uint64_t kPiece = 16ull << 20;  // unit of I/O: big enough for deep disk queues
constexpr uint64_t kAlign = 4096;         // O_DIRECT: offsets, lengths and buffers

struct Hasher {
  XXH3_state_t* s = XXH3_createState();
  Hasher() { XXH3_64bits_reset(s); }
  ~Hasher() { XXH3_freeState(s); }
  void add(const void* p, size_t n) { XXH3_64bits_update(s, p, n); }
  uint64_t digest() const { return XXH3_64bits_digest(s); }
};

uint64_t file_size(int fd) {
  struct stat st;
  ::fstat(fd, &st);
  return (uint64_t)st.st_size;
}

// The spans sorted, checked, and completed by the gaps between them: the file cut into
// [off, off + len) pieces in order; gap pieces have mem == nullptr.
std::vector<Span> cover(std::vector<Span> spans, uint64_t size, const std::string& path) {
  std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) { return a.off < b.off; });
  std::vector<Span> out;
  uint64_t pos = 0;
  for (const Span& s : spans) {
    if (s.len == 0) continue;
    if (s.off < pos) fail(path, "overlapping datasets");
    if (s.off > pos) out.push_back({pos, s.off - pos, nullptr});
    // Neighbours in the file and in memory (tensors of one arena, written in arena order) become
    // one span: the I/O then runs in uniform 16 MiB requests, as a plain sequential copy would.
    Span* last = out.empty() ? nullptr : &out.back();
    if (last && last->mem && last->off + last->len == s.off && last->mem + last->len == s.mem)
      last->len += s.len;
    else
      out.push_back(s);
    pos = s.off + s.len;
  }
  if (size > pos) out.push_back({pos, size - pos, nullptr});
  return out;
}

void pread_all(int fd, char* dst, uint64_t len, uint64_t off, const std::string& path) {
  for (uint64_t got = 0; got < len;) {
    const ssize_t r = ::pread(fd, dst + got, len - got, (off_t)(off + got));
    if (r <= 0) fail(path, "truncated (read failed at byte " + std::to_string(off + got) + ")");
    got += (uint64_t)r;
  }
}

// Calls f(piece, at, buf_off, take) for every piece overlapping file bytes [off, off + n): the
// piece's bytes [at, at + take) are the window's bytes [buf_off, buf_off + take).
template <class F>
void for_each_overlap(const std::vector<Span>& pieces, uint64_t off, uint64_t n, F f) {
  auto it =
      std::upper_bound(pieces.begin(), pieces.end(), off, [](uint64_t o, const Span& p) { return o < p.off + p.len; });
  for (; it != pieces.end() && it->off < off + n; ++it) {
    const uint64_t a = std::max(off, it->off), b = std::min(off + n, it->off + it->len);
    f(*it, a - it->off, a - off, b - a);
  }
}

struct Free {
  void operator()(char* p) const { std::free(p); }
};
std::unique_ptr<char, Free> aligned_buffer(size_t n) {
  void* p = nullptr;
  if (posix_memalign(&p, kAlign, n) != 0) throw std::bad_alloc();
  return std::unique_ptr<char, Free>(static_cast<char*>(p));
}

}  // namespace

uint64_t stream_write(const std::string& path, std::vector<Span> spans, bool try_direct, bool* used_direct) {
  std::vector<Span> spans_copy = try_direct ? spans : std::vector<Span>{};  // for the fallback below
  const int rfd = ::open(path.c_str(), O_RDONLY);
  if (rfd < 0) fail(path, std::string("cannot open: ") + std::strerror(errno));
  const uint64_t size = file_size(rfd);
  const std::vector<Span> pieces = cover(std::move(spans), size, path);
  if (!pieces.empty() && pieces.back().off + pieces.back().len > size) {
    ::close(rfd);
    fail(path, "a dataset lies past the end of the file");
  }
  // The library's metadata (the gaps, ~1 MB) is read once, before any byte is overwritten.
  std::vector<std::vector<char>> meta(pieces.size());  // per gap piece
  try {
    for (size_t i = 0; i < pieces.size(); ++i) {
      if (pieces[i].mem) continue;
      meta[i].resize(pieces[i].len);
      pread_all(rfd, meta[i].data(), pieces[i].len, pieces[i].off, path);
    }
  } catch (...) {
    ::close(rfd);
    throw;
  }
  ::close(rfd);

  // O_DIRECT: the bytes go from our buffers to the disk, with no page cache to fill (on VMs and
  // busy nodes, fresh page-cache pages cost more than the copy). tmpfs and some others refuse it.
  bool direct = try_direct;
  int fd = direct ? ::open(path.c_str(), O_WRONLY | O_DIRECT) : -1;
  if (fd < 0) direct = false, fd = ::open(path.c_str(), O_WRONLY);
  if (fd < 0) fail(path, std::string("cannot open for writing: ") + std::strerror(errno));
  if (used_direct) *used_direct = direct;

  // Window after window: this thread assembles and hashes window k+1 while a writer writes k.
  const auto buf0 = aligned_buffer(kPiece), buf1 = aligned_buffer(kPiece);
  char* const bufs[2] = {buf0.get(), buf1.get()};
  Hasher hash;
  std::thread writer;
  int write_errno = 0;
  auto join_writer = [&] {
    if (writer.joinable()) writer.join();
  };
  for (uint64_t w = 0, k = 0; w < size; w += kPiece, ++k) {
    const uint64_t n = std::min(kPiece, size - w);
    char* b = bufs[k & 1];
    for_each_overlap(pieces, w, n, [&](const Span& p, uint64_t at, uint64_t bo, uint64_t take) {
      std::memcpy(b + bo, (p.mem ? p.mem : meta[(size_t)(&p - pieces.data())].data()) + at, take);
    });
    hash.add(b, n);
    const uint64_t len = direct ? (n + kAlign - 1) / kAlign * kAlign : n;
    std::memset(b + n, 0, len - n);  // O_DIRECT writes whole blocks; the file is cut back below
    join_writer();                   // the other buffer's write is done: this one may go
    if (write_errno) break;
    writer = std::thread([&, b, len, w] {
      for (uint64_t put = 0; put < len;) {
        const ssize_t r = ::pwrite(fd, b + put, len - put, (off_t)(w + put));
        if (r <= 0) {
          write_errno = r < 0 ? errno : EIO;
          return;
        }
        put += (uint64_t)r;
      }
    });
  }
  join_writer();
  int e = write_errno;
  if (!e && direct && ::ftruncate(fd, (off_t)size) != 0) e = errno;
  if (!e && ::fsync(fd) != 0) e = errno;
  ::close(fd);
  // A file system that opens with O_DIRECT but wants other alignments says EINVAL: write the
  // image again through the page cache (what is on disk so far is already the image's bytes).
  if (e == EINVAL && direct && ::truncate(path.c_str(), (off_t)size) == 0)
    return stream_write(path, std::move(spans_copy), false, used_direct);
  if (e) fail(path, std::string("write failed: ") + std::strerror(e));
  return hash.digest();
}

namespace {

// Through the page cache: a reader thread copies pieces into place while this thread hashes
// what has arrived, in file order, and keeps the kernel reading a window ahead (WILLNEED).
// Deep I/O queues are what make a cold read fast on networked and virtual disks; issuing them
// here rather than in the reader keeps their page-cache allocation off the reader's path.
uint64_t read_buffered(int fd, uint64_t size, const std::vector<Span>& pieces, const std::string& path) {
  // Gaps (HDF5 metadata) into scratch; everything cut into pieces of at most kPiece.
  uint64_t gap_bytes = 0;
  for (const Span& p : pieces) gap_bytes += p.mem ? 0 : p.len;
  std::vector<char> gaps(gap_bytes);
  std::vector<Span> io;
  char* gap = gaps.data();
  for (const Span& p : pieces) {
    char* mem = p.mem ? p.mem : gap;
    if (!p.mem) gap += p.len;
    for (uint64_t done = 0; done < p.len; done += kPiece)
      io.push_back({p.off + done, std::min(kPiece, p.len - done), mem + done});
  }
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
  const size_t kFailed = io.size() + 1;
  std::atomic<size_t> ready{0};  // pieces [0, ready) are in memory; kFailed after a short read
  std::string error;
  std::thread reader([&] {
    for (size_t i = 0; i < io.size(); ++i) {
      try {
        pread_all(fd, io[i].mem, io[i].len, io[i].off, path);
      } catch (const std::exception& e) {
        error = e.what();
        ready.store(kFailed, std::memory_order_release);
        ready.notify_all();
        return;
      }
      ready.store(i + 1, std::memory_order_release);
      ready.notify_all();
    }
  });
  constexpr uint64_t kWindow = 32 * kPiece;
  uint64_t advised = 0;
  Hasher hash;
  for (size_t i = 0; i < io.size(); ++i) {
    for (; advised < std::min(size, io[i].off + kWindow); advised += kPiece)
      ::posix_fadvise(fd, (off_t)advised, (off_t)kPiece, POSIX_FADV_WILLNEED);
    size_t r;
    while ((r = ready.load(std::memory_order_acquire)) <= i) ready.wait(r);
    if (r == kFailed) break;
    hash.add(io[i].mem, io[i].len);
  }
  reader.join();
  if (!error.empty()) throw std::runtime_error(error);
  return hash.digest();
}

// O_DIRECT: the disk's DMA lands in a few reused, aligned 16 MiB windows, so no page-cache pages
// are allocated and filled (on VMs and busy nodes fresh pages cost more than the copy). Two
// readers keep two windows in flight, each copies its window's bytes into place; this thread
// hashes the windows in file order. Returns false, having read nothing into place that a
// buffered read would not overwrite, if the file system refuses O_DIRECT reads (EINVAL).
bool read_direct(int dfd, uint64_t size, const std::vector<Span>& pieces, const std::string& path, uint64_t& digest) {
  constexpr int kReaders = 2, kBuffers = 4;
  const uint64_t windows = (size + kPiece - 1) / kPiece;
  std::vector<std::unique_ptr<char, Free>> bufs;
  for (int b = 0; b < kBuffers; ++b) bufs.push_back(aligned_buffer(kPiece));
  enum : int { kPending = 0, kReady = 1, kFailed = 2 };
  std::vector<std::atomic<int>> state(windows);
  std::atomic<uint64_t> hashed{0};  // windows [0, hashed) are hashed: their buffers are free again
  std::atomic<bool> stop{false};
  std::vector<int> errnos(windows, 0);
  auto reader = [&](int t) {
    for (uint64_t w = (uint64_t)t; w < windows && !stop.load(); w += kReaders) {
      for (uint64_t h; (h = hashed.load(std::memory_order_acquire)) + kBuffers <= w && !stop.load();) hashed.wait(h);
      if (stop.load()) return;
      char* b = bufs[w % kBuffers].get();
      const uint64_t off = w * kPiece, n = std::min(kPiece, size - off);
      uint64_t got = 0;
      while (got < n) {  // whole blocks; the last window's read stops short at the end of the file
        const ssize_t r = ::pread(dfd, b + got, (n - got + kAlign - 1) / kAlign * kAlign, (off_t)(off + got));
        if (r <= 0 || (got + (uint64_t)r < n && r % (ssize_t)kAlign)) {
          errnos[w] = r < 0 ? errno : EIO;
          break;
        }
        got += (uint64_t)r;
      }
      if (!errnos[w])
        for_each_overlap(pieces, off, n, [&](const Span& p, uint64_t at, uint64_t bo, uint64_t take) {
          if (p.mem) std::memcpy(p.mem + at, b + bo, take);
        });
      state[w].store(errnos[w] ? kFailed : kReady, std::memory_order_release);
      state[w].notify_all();
    }
  };
  std::thread r0(reader, 0), r1(reader, 1);
  Hasher hash;
  int err = 0;
  for (uint64_t w = 0; w < windows; ++w) {
    int st;
    while ((st = state[w].load(std::memory_order_acquire)) == kPending) state[w].wait(kPending);
    if (st == kFailed) {
      err = errnos[w];
      break;
    }
    hash.add(bufs[w % kBuffers].get(), std::min(kPiece, size - w * kPiece));
    hashed.store(w + 1, std::memory_order_release);
    hashed.notify_all();
  }
  stop.store(true);
  hashed.notify_all();
  r0.join();
  r1.join();
  if (err == EINVAL) return false;
  if (err) fail(path, std::string("read failed: ") + std::strerror(err));
  digest = hash.digest();
  return true;
}

}  // namespace

uint64_t stream_read(const std::string& path, std::vector<Span> spans, bool try_direct, bool* used_direct) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) fail(path, "shard file is missing");
  const uint64_t size = file_size(fd);
  const int dfd = try_direct ? ::open(path.c_str(), O_RDONLY | O_DIRECT) : -1;
  auto close_both = [&] {
    ::close(fd);
    if (dfd >= 0) ::close(dfd);
  };
  try {
    const std::vector<Span> pieces = cover(std::move(spans), size, path);
    if (!pieces.empty() && pieces.back().off + pieces.back().len > size)
      fail(path, "truncated (" + std::to_string(size) + " bytes, but a dataset ends at byte " +
                     std::to_string(pieces.back().off + pieces.back().len) + ")");
    uint64_t digest = 0;
    const bool direct = dfd >= 0 && read_direct(dfd, size, pieces, path, digest);
    if (!direct) digest = read_buffered(fd, size, pieces, path);
    if (used_direct) *used_direct = direct;
    close_both();
    return digest;
  } catch (...) {
    close_both();
    throw;
  }
}

}  // namespace mor::ckpt
