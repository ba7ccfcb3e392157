// `mor-dist prepare`'s input files: plain, gzip (multi-member) or zstd (multi-frame), recognised by
// their magic bytes, read as one stream of decompressed bytes. Internal to io/data/prepare*.cpp.
#pragma once

#include <zlib.h>
#include <zstd.h>

#include <cstdint>
#include <string>
#include <vector>

namespace mor::io::prep {

class InputFile {
 public:
  explicit InputFile(const std::string& path);
  ~InputFile();
  InputFile(const InputFile&) = delete;
  InputFile& operator=(const InputFile&) = delete;

  // Appends up to `cap` decompressed bytes to out; returns 0 only at the end.
  size_t read(std::string& out, size_t cap);
  uint64_t consumed() const { return consumed_; }  // raw (stored) bytes consumed so far

 private:
  enum Kind { kPlain, kGzip, kZstd };

  void fill();  // refills raw_ when it is used up
  size_t read_plain(unsigned char* dst, size_t cap);
  size_t read_gzip(unsigned char* dst, size_t cap);
  size_t read_zstd(unsigned char* dst, size_t cap);

  std::string path_;
  int fd_ = -1;
  Kind kind_ = kPlain;
  std::vector<unsigned char> raw_;
  size_t raw_pos_ = 0, raw_len_ = 0;
  bool eof_ = false;
  uint64_t consumed_ = 0;
  z_stream zs_{};
  bool in_member_ = false;
  ZSTD_DCtx* zd_ = nullptr;
  bool zstd_pending_ = false;
};

}  // namespace mor::io::prep
