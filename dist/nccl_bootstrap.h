// How NCCL communicators find each other, kept apart from NCCL itself so that the CPU build tests
// it under mpirun: rank 0 makes the unique id (ncclGetUniqueId), every rank receives it over the
// bootstrap communicator (MPI), and then all call ncclCommInitRank with it (dist/nccl_comm.cpp).
#pragma once
#include <array>
#include <cstdint>
#include <functional>

#include "dist/communicator.h"

namespace mor::dist {

// NCCL_UNIQUE_ID_BYTES (nccl.h; a static_assert in nccl_comm.cpp keeps them equal).
constexpr size_t kNcclUniqueIdBytes = 128;
using NcclUniqueIdBytes = std::array<uint8_t, kNcclUniqueIdBytes>;

// make_on_root runs on rank 0 only; every rank returns rank 0's bytes. Collective over `boot`.
NcclUniqueIdBytes share_unique_id(Communicator& boot, const std::function<NcclUniqueIdBytes()>& make_on_root);

}  // namespace mor::dist
