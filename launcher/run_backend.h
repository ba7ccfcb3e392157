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

}  // namespace mor
