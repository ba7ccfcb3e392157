#include "launcher/run_backend.h"

#include <cstdlib>
#include <cstring>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_kernels.h"
#include "launcher/log.h"

namespace mor {

std::unique_ptr<kern::Backend> make_run_backend(const TrainConfig& t, int threads) {
  kern::cpu::set_num_threads(threads);
  // Values checked by the option parser.
  kern::cpu::set_gemm_lib(t.gemm == "openblas" ? kern::cpu::GemmLib::OpenBLAS : kern::cpu::GemmLib::Mixed);
  return kern::make_cpu_backend();
}

int backend_threads() { return kern::cpu::num_threads(); }

void check_bf16_hardware(kern::Backend& be, bool lead) {
  if (be.fast_bf16()) return;
  const char* allow = std::getenv("MOR_ALLOW_EMULATED_BF16");
  if (!allow || std::strcmp(allow, "1") != 0)
    throw ConfigError("train.precision",
                      "bf16 needs bf16 instructions (AVX512-BF16 or AMX-BF16), which this CPU lacks: its bf16 GEMMs "
                      "would be emulated, slower than fp32. Use --train.precision fp32 (or set "
                      "MOR_ALLOW_EMULATED_BF16=1 to run emulated anyway, e.g. to test)");
  if (lead)
    logf(
        "warning: this CPU has no bf16 instructions; bf16 GEMMs run emulated, slower than fp32 "
        "(MOR_ALLOW_EMULATED_BF16=1)\n");
}

}  // namespace mor
