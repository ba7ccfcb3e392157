// The CPU backend: host memory, operations run when called on the OpenMP thread team (see
// kernels/cpu/cpu_kernels.h for the kernels and the CPU-only choices: threads, GEMM library).
#pragma once
#include <memory>

#include "kernels/backend.h"

namespace mor::kern {

std::unique_ptr<Backend> make_cpu_backend();

// The process's CPU backend: for tests, tools and host-side work that needs a Backend (a
// stateless object: every CPU backend behaves the same).
Backend& cpu_backend();

}  // namespace mor::kern
