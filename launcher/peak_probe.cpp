#include "launcher/peak_probe.h"

#include <algorithm>
#include <chrono>
#include <vector>

namespace mor {

PeakProbe measure_gemm_gflops(kern::Backend& be, double min_seconds, bool bf16) {
  using Clock = std::chrono::steady_clock;
  auto since = [](Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); };
  const int n = 1024;
  kern::Buffer<float> a(be), b(be), c(be, (int64_t)n * n);
  kern::Buffer<kern::bf16> a16(be), b16(be);
  a.from_host(std::vector<float>((size_t)n * n, 0.5f));
  b.from_host(std::vector<float>((size_t)n * n, 0.25f));
  if (bf16) {
    a16.from_host(std::vector<kern::bf16>((size_t)n * n, kern::float_to_bf16(0.5f)));
    b16.from_host(std::vector<kern::bf16>((size_t)n * n, kern::float_to_bf16(0.25f)));
  }
  auto run = [&] {
    if (bf16)
      be.linear_forward_bf16(c.data(), a16.data(), b16.data(), n, n, n);
    else
      be.gemm(false, false, n, n, n, 1.f, a.data(), n, b.data(), n, 0.f, c.data(), n);
    be.synchronize();
  };
  run();
  double best = 1e30;
  PeakProbe p;
  const auto t0 = Clock::now();
  while (p.runs < 10 || (since(t0) < min_seconds && p.runs < 1000)) {
    const auto t = Clock::now();
    run();
    best = std::min(best, since(t));
    ++p.runs;
  }
  p.seconds = since(t0);
  p.gflops = 2.0 * n * n * n / best / 1e9;
  return p;
}

}  // namespace mor
