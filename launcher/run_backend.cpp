#include "launcher/run_backend.h"

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_kernels.h"

namespace mor {

std::unique_ptr<kern::Backend> make_run_backend(const TrainConfig& t, int threads) {
  kern::cpu::set_num_threads(threads);
  // Values checked by the option parser.
  kern::cpu::set_gemm_lib(t.gemm == "openblas" ? kern::cpu::GemmLib::OpenBLAS : kern::cpu::GemmLib::Mixed);
  return kern::make_cpu_backend();
}

int backend_threads() { return kern::cpu::num_threads(); }

}  // namespace mor
