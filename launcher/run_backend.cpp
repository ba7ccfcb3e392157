#include "launcher/run_backend.h"

#include <cstdlib>
#include <cstring>
#include <string>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_kernels.h"
#include "kernels/cpu/guarded_backend.h"
#include "launcher/log.h"
#ifdef MOR_HAVE_CUDA
#include "dist/nccl_comm.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/host_helpers.h"
#endif

namespace mor {

namespace {

// --train.device cuda: one GPU per process, picked from MOR_CUDA_DEVICE or the node-local rank;
// --train.attention_kernel picks the attention kernel.
std::unique_ptr<kern::Backend> make_cuda_run_backend(const TrainConfig& t, int world, bool lead) {
#ifdef MOR_HAVE_CUDA
  (void)world;  // several ranks: one GPU each, collectives over NCCL (make_run_comm)
  std::string why;
  const int n = kern::cuda_device_count(&why);
  if (n == 0) throw std::runtime_error("--train.device cuda: no usable CUDA GPU on this machine (" + why + ")");
  std::string source;
  const int dev = kern::cuda::select_device([](const char* v) { return (const char*)std::getenv(v); }, n, &source);
  const kern::CudaDeviceInfo info = kern::cuda_device_info(dev);
  if (info.cc_major < 8)
    throw std::runtime_error("--train.device cuda: " + info.name + " has compute capability " +
                             std::to_string(info.cc_major) + "." + std::to_string(info.cc_minor) +
                             "; the CUDA backend is built for 8.0 (Ampere) and newer");
  kern::CudaOptions opt;
  const bool flash = t.attention_kernel == "flash";
  if (flash) opt.attention = kern::CudaOptions::Attention::Flash;
  std::unique_ptr<kern::Backend> be = kern::make_cuda_backend(dev, opt);
  if (lead)
    logf(
        "device: cuda:%d %s, %.1f GiB, compute capability %d.%d (of %d visible; chosen by %s); attention kernel: "
        "%s\n",
        dev, info.name.c_str(), info.total_bytes / 1073741824.0, info.cc_major, info.cc_minor, n, source.c_str(),
        flash ? "flash (fused tiles for head_dim 64 and 128, simple otherwise)" : "simple");
  return be;
#else
  (void)t;
  (void)world;
  (void)lead;
  throw ConfigError("train.device",
                    "cuda needs a mor-dist built with the CUDA backend (cmake -DMOR_CUDA=ON); this build has only the "
                    "CPU backend");
#endif
}

}  // namespace

std::unique_ptr<kern::Backend> make_run_backend(const TrainConfig& t, int threads, int world, bool lead) {
  if (t.device == "cuda") return make_cuda_run_backend(t, world, lead);
  if (t.attention_kernel != "simple" && lead)
    logf("train.attention_kernel %s: ignored on --train.device cpu (the CPU backend has one attention kernel)\n",
         t.attention_kernel.c_str());
  kern::cpu::set_num_threads(threads);
  // Values checked by the option parser.
  kern::cpu::set_gemm_lib(t.gemm == "openblas" ? kern::cpu::GemmLib::OpenBLAS : kern::cpu::GemmLib::Mixed);
  // Test hook (tests/e2e/device_seam.sh): the CPU kernels on memory the host cannot touch outside
  // the backend, to check on the CPU that the launcher works with a device backend's memory.
  if (const char* g = std::getenv("MOR_TEST_GUARDED_BACKEND"); g && std::strcmp(g, "1") == 0) {
    if (world > 1) throw ConfigError("train.device", "MOR_TEST_GUARDED_BACKEND=1 runs in one process only");
    if (lead) logf("test hook MOR_TEST_GUARDED_BACKEND=1: CPU kernels on guarded memory (host_addressable false)\n");
    return kern::make_guarded_cpu_backend();
  }
  return kern::make_cpu_backend();
}

std::unique_ptr<dist::Communicator> make_run_comm(const TrainConfig& t, dist::Communicator& boot) {
  if (t.device != "cuda" || boot.size() == 1) return nullptr;
#ifdef MOR_HAVE_CUDA
  return dist::make_nccl_comm(boot);
#else
  return nullptr;  // not reached: make_run_backend refused cuda in this build
#endif
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
