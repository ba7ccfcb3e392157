#include "io/data/prepare_input.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>

namespace mor::io::prep {

namespace {
std::string errno_str() { return std::strerror(errno); }
}  // namespace

InputFile::InputFile(const std::string& path) : path_(path) {
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) throw std::runtime_error(path + ": cannot open: " + errno_str());
  raw_.resize(size_t{1} << 20);
  fill();
  if (raw_len_ >= 2 && raw_[0] == 0x1F && raw_[1] == 0x8B) {
    kind_ = kGzip;
    std::memset(&zs_, 0, sizeof zs_);
    if (inflateInit2(&zs_, 15 + 32) != Z_OK) throw std::runtime_error(path + ": inflateInit2 failed");
  } else if (raw_len_ >= 4 && raw_[0] == 0x28 && raw_[1] == 0xB5 && raw_[2] == 0x2F && raw_[3] == 0xFD) {
    kind_ = kZstd;
    zd_ = ZSTD_createDCtx();
    if (!zd_) throw std::runtime_error(path + ": ZSTD_createDCtx failed");
  }
}

InputFile::~InputFile() {
  if (kind_ == kGzip) inflateEnd(&zs_);
  if (zd_) ZSTD_freeDCtx(zd_);
  if (fd_ >= 0) ::close(fd_);
}

size_t InputFile::read(std::string& out, size_t cap) {
  const size_t old = out.size();
  out.resize(old + cap);
  unsigned char* dst = reinterpret_cast<unsigned char*>(out.data()) + old;
  size_t got = 0;
  try {
    got = kind_ == kPlain ? read_plain(dst, cap) : kind_ == kGzip ? read_gzip(dst, cap) : read_zstd(dst, cap);
  } catch (...) {
    out.resize(old);
    throw;
  }
  out.resize(old + got);
  return got;
}

void InputFile::fill() {
  if (raw_pos_ < raw_len_ || eof_) return;
  raw_pos_ = raw_len_ = 0;
  while (true) {
    const ssize_t r = ::read(fd_, raw_.data(), raw_.size());
    if (r < 0) {
      if (errno == EINTR) continue;
      throw std::runtime_error(path_ + ": read failed: " + errno_str());
    }
    if (r == 0) eof_ = true;
    raw_len_ = static_cast<size_t>(r);
    consumed_ += raw_len_;
    return;
  }
}

size_t InputFile::read_plain(unsigned char* dst, size_t cap) {
  if (raw_pos_ >= raw_len_ && !eof_) {  // nothing buffered: read straight into dst
    while (true) {
      const ssize_t r = ::read(fd_, dst, cap);
      if (r < 0) {
        if (errno == EINTR) continue;
        throw std::runtime_error(path_ + ": read failed: " + errno_str());
      }
      if (r == 0) eof_ = true;
      consumed_ += static_cast<uint64_t>(r);
      return static_cast<size_t>(r);
    }
  }
  fill();
  const size_t n = std::min(cap, raw_len_ - raw_pos_);
  std::memcpy(dst, raw_.data() + raw_pos_, n);
  raw_pos_ += n;
  return n;
}

size_t InputFile::read_gzip(unsigned char* dst, size_t cap) {
  size_t got = 0;
  while (got < cap) {
    fill();
    const bool at_eof = raw_pos_ >= raw_len_ && eof_;
    if (at_eof && !in_member_) break;
    const size_t before = got;
    zs_.next_in = raw_.data() + raw_pos_;
    zs_.avail_in = static_cast<uInt>(raw_len_ - raw_pos_);
    zs_.next_out = dst + got;
    zs_.avail_out = static_cast<uInt>(cap - got);
    in_member_ = true;
    const int rc = inflate(&zs_, Z_NO_FLUSH);
    raw_pos_ = raw_len_ - zs_.avail_in;
    got = cap - zs_.avail_out;
    // At the end of the file inflate may still flush output it holds; no progress means truncation.
    if (at_eof && rc != Z_STREAM_END && got == before)
      throw std::runtime_error(path_ + ": truncated gzip data (unexpected end of file)");
    if (rc == Z_STREAM_END) {
      in_member_ = false;
      inflateReset(&zs_);  // another gzip member may follow
      // Trailing zero padding after the last member is ignored.
      fill();
      while (raw_pos_ < raw_len_ && raw_[raw_pos_] == 0) {
        ++raw_pos_;
        fill();
      }
    } else if (rc != Z_OK && rc != Z_BUF_ERROR) {
      throw std::runtime_error(path_ + ": corrupt gzip data: " + (zs_.msg ? zs_.msg : std::to_string(rc)));
    } else if (rc == Z_BUF_ERROR && zs_.avail_out != 0 && raw_pos_ < raw_len_) {
      throw std::runtime_error(path_ + ": corrupt gzip data");
    }
  }
  return got;
}

size_t InputFile::read_zstd(unsigned char* dst, size_t cap) {
  ZSTD_outBuffer ob{dst, cap, 0};
  while (ob.pos < ob.size) {
    fill();
    const bool at_eof = raw_pos_ >= raw_len_ && eof_;
    if (at_eof && !zstd_pending_) break;
    const size_t before = ob.pos;
    ZSTD_inBuffer ib{raw_.data(), raw_len_, raw_pos_};
    const size_t rc = ZSTD_decompressStream(zd_, &ob, &ib);
    if (ZSTD_isError(rc)) throw std::runtime_error(path_ + ": corrupt zstd data: " + ZSTD_getErrorName(rc));
    raw_pos_ = ib.pos;
    zstd_pending_ = rc != 0;
    // At the end of the file the decoder may still flush output it holds; no progress means truncation.
    if (at_eof && zstd_pending_ && ob.pos == before)
      throw std::runtime_error(path_ + ": truncated zstd data (unexpected end of file)");
  }
  return ob.pos;
}

}  // namespace mor::io::prep
