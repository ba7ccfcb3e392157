// The machine's practical GEMM peak (fp32, or bf16 operands with fp32 accumulation), for MFU.
#pragma once
#include "kernels/backend.h"

namespace mor {

struct PeakProbe {
  double gflops = 0;
  int runs = 0;  // 0: given by the user (train.peak_gflops), not measured
  double seconds = 0;
};

// The best of at least 10 warm 1024^3 GEMM runs on the backend (fp32 sgemm, or with bf16 the
// backend's bf16 linear layer), spread over at least `min_seconds` (a single short probe measured
// 22-214 GFLOP/s on a busy machine and gave MFU above 100 %). The first call is not timed: it
// starts the thread team and faults in the buffers.
PeakProbe measure_gemm_gflops(kern::Backend& be, double min_seconds, bool bf16);

}  // namespace mor
