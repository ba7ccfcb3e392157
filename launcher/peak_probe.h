// The machine's practical fp32 peak, for MFU.
#pragma once
#include "kernels/backend.h"

namespace mor {

struct PeakProbe {
  double gflops = 0;
  int runs = 0;  // 0: given by the user (train.peak_gflops), not measured
  double seconds = 0;
};

// The best of at least 10 warm 1024^3 sgemm runs on the backend, spread over at least
// `min_seconds` (a single short probe measured 22-214 GFLOP/s on a busy machine and gave MFU above
// 100 %). The first call is not timed: it starts the thread team and faults in the buffers.
PeakProbe measure_sgemm_gflops(kern::Backend& be, double min_seconds);

}  // namespace mor
