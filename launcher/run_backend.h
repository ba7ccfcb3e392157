// The backend a run computes on, made from its options: today the CPU, with its thread count and
// GEMM library (train.threads, train.gemm). A CUDA backend will be chosen here too.
#pragma once
#include <memory>

#include "kernels/backend.h"
#include "launcher/options.h"

namespace mor {

std::unique_ptr<kern::Backend> make_run_backend(const TrainConfig& t, int threads);
// Threads the run's backend computes with (for the banner and the MFU note).
int backend_threads();
// --train.precision bf16 on a backend without bf16 hardware (a CPU without AVX512-BF16 or AMX):
// its bf16 GEMMs would be emulated, slower than fp32, so the run is refused (ConfigError) unless
// MOR_ALLOW_EMULATED_BF16=1, and then it says so (lead rank) and goes on.
void check_bf16_hardware(kern::Backend& be, bool lead);

}  // namespace mor
