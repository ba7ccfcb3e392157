// The backend a run computes on, made from its options (train.device): the CPU, with its thread
// count and GEMM library (train.threads, train.gemm), or a CUDA GPU (a -DMOR_CUDA=ON build; the
// lead rank prints the device chosen) with the attention kernel of train.attention_kernel (the CPU
// ignores that option, with a log line). cuda without that build is a ConfigError naming the option;
// without a GPU, a runtime error saying why.
#pragma once
#include <memory>

#include "dist/communicator.h"
#include "kernels/backend.h"
#include "launcher/options.h"

namespace mor {

std::unique_ptr<kern::Backend> make_run_backend(const TrainConfig& t, int threads, int world = 1, bool lead = true);
// The communicator for a run's device buffers, made after make_run_backend picked the device:
// NCCL over `boot` (dist/nccl_comm.h) for cuda with more than one rank, else null (the run uses
// `boot` itself). Collective over `boot`.
std::unique_ptr<dist::Communicator> make_run_comm(const TrainConfig& t, dist::Communicator& boot);
// Threads the run's backend computes with (for the banner and the MFU note).
int backend_threads();
// --train.precision bf16 on a backend without bf16 hardware (a CPU without AVX512-BF16 or AMX):
// its bf16 GEMMs would be emulated, slower than fp32, so the run is refused (ConfigError) unless
// MOR_ALLOW_EMULATED_BF16=1, and then it says so (lead rank) and goes on.
void check_bf16_hardware(kern::Backend& be, bool lead);

}  // namespace mor
