// main() of the gpu-labelled test binaries: without a usable CUDA GPU they print why and exit 77,
// which ctest reports as Skipped (SKIP_RETURN_CODE), never as a pass.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "kernels/cuda/cuda_backend.h"

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  std::string why;
  const int n = mor::kern::cuda_device_count(&why);
  if (n == 0) {
    std::printf("Skipped: no CUDA GPU on this machine (%s); these tests run the CUDA backend and need one\n",
                why.c_str());
    return 77;
  }
  const char* env = std::getenv("MOR_CUDA_DEVICE");  // the tests' device, as they pick it
  const int dev = env ? std::atoi(env) : 0;
  const mor::kern::CudaDeviceInfo d = mor::kern::cuda_device_info(dev);
  std::printf("CUDA device %d of %d: %s, %.1f GiB, compute capability %d.%d\n", dev, n, d.name.c_str(),
              d.total_bytes / 1073741824.0, d.cc_major, d.cc_minor);
  return RUN_ALL_TESTS();
}
