// Test tool: makes an index.h5 that a test edited on purpose consistent again, so the test reaches
// the check it is after (a field's validation, a NaN in a tensor) instead of stopping at the seal.
//   ckpt_reseal DIR            rewrite DIR/index.h5.xxh3 for the index.h5 there now
//   ckpt_reseal DIR --shards   first record the current checksum and size of every shard file
#include <hdf5.h>

#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <vector>

#include "io/ckpt/checkpoint.h"

namespace {
bool rewrite_shard_records(const std::string& dir) {
  const mor::ckpt::Index idx = mor::ckpt::read_index(dir);
  std::vector<uint64_t> sums, bytes;
  for (const auto& f : idx.files) {
    sums.push_back(mor::ckpt::detail::file_checksum(dir + "/" + f));
    bytes.push_back(std::filesystem::file_size(dir + "/" + f));
  }
  hid_t file = H5Fopen((dir + "/index.h5").c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  if (file < 0) return false;
  bool ok = true;
  for (auto [name, v] : {std::pair{"shards/xxh3_64", &sums}, std::pair{"shards/bytes", &bytes}}) {
    hid_t d = H5Dopen2(file, name, H5P_DEFAULT);
    ok = ok && d >= 0 && H5Dwrite(d, H5T_NATIVE_UINT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, v->data()) >= 0;
    if (d >= 0) H5Dclose(d);
  }
  return H5Fclose(file) >= 0 && ok;
}
}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || argc > 3 || (argc == 3 && std::strcmp(argv[2], "--shards") != 0)) {
    std::fprintf(stderr, "usage: ckpt_reseal CHECKPOINT_DIR [--shards]\n");
    return 2;
  }
  try {
    if (argc == 3 && !rewrite_shard_records(argv[1])) {
      std::fprintf(stderr, "ckpt_reseal: cannot rewrite the shard records of %s\n", argv[1]);
      return 1;
    }
    mor::ckpt::seal_index(argv[1]);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ckpt_reseal: %s\n", e.what());
    return 1;
  }
  return 0;
}
