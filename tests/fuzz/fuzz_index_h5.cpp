// Fuzzes the checkpoint index reader (io/ckpt/checkpoint.h) the way a damaged checkpoint reaches it.
// Input: the seal line (index.h5.xxh3: up to the first newline in the first 128 bytes), then the
// bytes of DIR/index.h5. read_index(DIR) checks the seal before HDF5 parses a byte, so mutated
// inputs exercise the seal parser and check and are rejected there; the seeds (real indexes
// with their real seals) exercise the whole validated parse, check_present included. HDF5 1.10
// itself is not fuzzed: it crashes on arbitrary bytes (found here), which is why the seal exists.
// Invariant: only std::exception (the reader's errors name the file) ever escapes; no crash,
// leak or undefined behaviour.
#include <hdf5.h>

#include <exception>
#include <filesystem>
#include <string>

#include "fuzz_util.h"
#include "io/ckpt/checkpoint.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);  // HDF5's error stack on stderr: noise per input
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace fs = std::filesystem;
  static const std::string dir = mor::fuzz::scratch_dir() + "/ckpt";
  std::error_code ec;
  fs::remove_all(dir, ec);
  fs::create_directory(dir);
  size_t seal = 0;  // bytes of the seal line, newline included; 0 = no seal file
  for (size_t i = 0; i < size && i < 128; ++i)
    if (data[i] == '\n') {
      seal = i + 1;
      break;
    }
  if (seal > 0) mor::fuzz::write_file(dir + "/index.h5.xxh3", data, seal);
  mor::fuzz::write_file(dir + "/index.h5", data + seal, size - seal);
  try {
    const mor::ckpt::Index idx = mor::ckpt::read_index(dir);
    int made = 0;
    for (const std::string& f : idx.files) {
      if (f.empty() || f.size() > 200 || f.find('/') != std::string::npos || f == "." || f == ".." || f == "index.h5" ||
          ++made > 64)
        continue;
      mor::fuzz::write_file(dir + "/" + f, nullptr, 0);
    }
    mor::ckpt::check_present(idx);
  } catch (const std::exception&) {}
  return 0;
}
