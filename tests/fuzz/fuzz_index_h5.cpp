// Fuzzes the checkpoint index reader (io/checkpoint.h) on arbitrary bytes as DIR/index.h5:
// read_index(DIR), then — for an index that reads — check_present with an empty placeholder
// for each listed shard file (plain names only), so the shard-map coverage check runs too.
// Invariant: only std::exception (the reader's errors name the file) ever escapes; no crash,
// leak or undefined behaviour in our code or in HDF5 underneath.
#include <hdf5.h>

#include <exception>
#include <filesystem>
#include <string>

#include "fuzz_util.h"
#include "io/checkpoint.h"

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
  mor::fuzz::write_file(dir + "/index.h5", data, size);
  try {
    const mor::ckpt::Index idx = mor::ckpt::read_index(dir);
    int made = 0;
    for (const std::string& f : idx.files) {
      if (f.empty() || f.size() > 200 || f.find('/') != std::string::npos || f == "." || f == ".." ||
          f == "index.h5" || ++made > 64)
        continue;
      mor::fuzz::write_file(dir + "/" + f, nullptr, 0);
    }
    mor::ckpt::check_present(idx);
  } catch (const std::exception&) {
  }
  return 0;
}
