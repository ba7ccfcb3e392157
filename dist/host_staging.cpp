#include "dist/host_staging.h"

#include <stdexcept>

namespace mor::dist {

HostStagedState::HostStagedState(kern::Backend& be, const LocalState& mine)
    : be_(be), mine_(mine), staged_(!be.host_addressable()) {
  if (!staged_) return;
  host_ = mine_;
  for (ShardedTensor& t : host_.tensors) {
    if (t.row1 < t.row0 || t.cols < 0) throw std::logic_error("HostStagedState: tensor '" + t.name + "' has bad rows");
    for (float*& p : t.data) {
      if (!p) continue;  // a group this rank does not hold stays null
      store_.emplace_back((size_t)t.local_numel());
      p = store_.back().data();
    }
  }
}

void HostStagedState::pull() {
  if (!staged_) return;
  for (size_t i = 0; i < mine_.tensors.size(); ++i) {
    const ShardedTensor &d = mine_.tensors[i], &h = host_.tensors[i];
    for (size_t g = 0; g < d.data.size(); ++g)
      if (d.data[g] && d.local_numel()) be_.copy_to_host(h.data[g], d.data[g], (size_t)d.local_numel() * sizeof(float));
  }
}

void HostStagedState::push() {
  if (!staged_) return;
  for (size_t i = 0; i < mine_.tensors.size(); ++i) {
    const ShardedTensor &d = mine_.tensors[i], &h = host_.tensors[i];
    for (size_t g = 0; g < d.data.size(); ++g)
      if (d.data[g] && d.local_numel())
        be_.copy_from_host(d.data[g], h.data[g], (size_t)d.local_numel() * sizeof(float));
  }
}

}  // namespace mor::dist
