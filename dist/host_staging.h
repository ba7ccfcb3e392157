// The training state's tensors (a LocalState: this rank's rows in backend memory) as host arrays,
// for the checkpoint code, which reads and writes host memory. On a host-addressable backend (the
// CPU) view() is the state itself and pull()/push() do nothing; otherwise (a GPU) view() points into
// host copies that pull() fills from the backend (before a save) and push() copies back (after a
// load), through Backend::copy_to_host / copy_from_host.
#pragma once
#include <vector>

#include "dist/partition.h"
#include "kernels/backend.h"

namespace mor::dist {

class HostStagedState {
 public:
  HostStagedState(kern::Backend& be, const LocalState& mine);
  const LocalState& view() const { return staged_ ? host_ : mine_; }
  bool staged() const { return staged_; }
  void pull();  // backend -> host copies
  void push();  // host copies -> backend

 private:
  kern::Backend& be_;
  LocalState mine_, host_;
  std::vector<std::vector<float>> store_;  // one per (tensor, group) held, in that order
  bool staged_;
};

}  // namespace mor::dist
