#include "dist/nccl_bootstrap.h"

#include <cstring>

namespace mor::dist {

NcclUniqueIdBytes share_unique_id(Communicator& boot, const std::function<NcclUniqueIdBytes()>& make_on_root) {
  static_assert(kNcclUniqueIdBytes % sizeof(uint64_t) == 0);
  NcclUniqueIdBytes id{};
  if (boot.rank() == 0) id = make_on_root();
  // As 64-bit words: the communicators' element types are numeric.
  uint64_t words[kNcclUniqueIdBytes / sizeof(uint64_t)];
  std::memcpy(words, id.data(), sizeof words);
  boot.broadcast(words, (int64_t)(sizeof words / sizeof(uint64_t)), 0, "broadcast/nccl_unique_id");
  std::memcpy(id.data(), words, sizeof words);
  return id;
}

}  // namespace mor::dist
