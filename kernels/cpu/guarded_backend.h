// A test backend: the CPU backend's kernels on memory that the host cannot touch outside the
// backend's own operations, as if it were a GPU's. Every buffer lives on whole pages of one
// reserved mapping, kept PROT_NONE between operations; each operation opens them, runs the CPU
// kernel and closes them again. host_addressable() is false. Any read or write of a buffer by
// model/, dist/, io/ or the launcher that bypasses copy_to_host / copy_from_host faults (SIGSEGV)
// at that instruction, so the CPU can check on the host that the engine and the launcher would work
// on a device backend. Results are bitwise the CPU backend's. Slower (two mprotect calls per
// operation): tests only (tests/test_device_seam.cpp; MOR_TEST_GUARDED_BACKEND=1 for the binary).
#pragma once
#include <memory>

#include "kernels/backend.h"

namespace mor::kern {

std::unique_ptr<Backend> make_guarded_cpu_backend();

}  // namespace mor::kern
