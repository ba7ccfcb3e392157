// The Communicator on NCCL (built with -DMOR_CUDA=ON): collectives on GPU memory, queued on a
// communication stream of its own so that the next unit's all-gather overlaps the compute
// stream's kernels. Host buffers (the loss, router counts, byte counters: what the training loop
// reduces on the CPU) go over the bootstrap communicator (MPI) instead, so one communicator serves
// the whole training loop. No CUDA or NCCL header leaks out of this one.
#pragma once
#include <memory>

#include "dist/communicator.h"

namespace mor::dist {

// Collective over `boot` (every rank calls it, after selecting its CUDA device): rank 0 makes the
// NCCL unique id, `boot` broadcasts it (dist/nccl_bootstrap.h), each rank joins with
// ncclCommInitRank. The NCCL communicator keeps `boot` for host buffers, placement and abort:
// `boot` must outlive it.
std::unique_ptr<Communicator> make_nccl_comm(Communicator& boot);

}  // namespace mor::dist
