// The NCCL communicator (dist/nccl_comm.cpp) on real GPUs under `mpirun -np N` (label gpu): each
// rank picks its GPU as training does (kern::cuda::select_device: MOR_CUDA_DEVICE, else the
// node-local rank), makes the CUDA backend for device buffers and joins NCCL through MPI. Every
// collective the training loop uses, on device buffers, fp32 and bf16, against its definition;
// the byte counters; host buffers over the bootstrap (MPI) communicator; a host/device mix
// refused; a non-blocking all-gather ordered after work on the compute stream. Values are small
// integers, exact in bf16 and in any summation order. Without a GPU, or with fewer GPUs than ranks,
// every rank prints why and exits 77 (ctest: Skipped).
#include <gtest/gtest.h>
#include <mpi.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "dist/communicator.h"
#include "dist/nccl_comm.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/host_helpers.h"

using namespace mor;
using kern::bf16;
using kern::Buffer;

namespace {

dist::Communicator* g_comm = nullptr;  // NCCL
kern::Backend* g_be = nullptr;         // this rank's GPU

template <class T>
T val(float f);
template <>
float val<float>(float f) {
  return f;
}
template <>
bf16 val<bf16>(float f) {
  return kern::float_to_bf16(f);
}
float as_float(float f) { return f; }
float as_float(bf16 b) { return kern::bf16_to_float(b); }

template <class T>
Buffer<T> device(const std::vector<float>& v) {
  std::vector<T> h;
  for (float f : v) h.push_back(val<T>(f));
  Buffer<T> b(*g_be, (int64_t)h.size());
  b.from_host(h);
  return b;
}
template <class T>
std::vector<float> host(const Buffer<T>& b) {
  std::vector<float> out;
  for (const T& x : b.to_host_vector()) out.push_back(as_float(x));
  return out;
}

template <class T>
void all_gather_case() {
  auto& c = *g_comm;
  const int W = c.size(), n = 1000;
  std::vector<float> send(n);
  for (int i = 0; i < n; ++i) send[i] = (float)(c.rank() * 7 + i % 100);
  Buffer<T> s = device<T>(send), r(*g_be, (int64_t)n * W);
  c.stats.clear();
  c.all_gather(s.data(), r.data(), n, "t/ag");
  const std::vector<float> got = host(r);
  for (int q = 0; q < W; ++q)
    for (int i = 0; i < n; ++i) ASSERT_EQ(got[(size_t)q * n + i], (float)(q * 7 + i % 100)) << q << "," << i;
  EXPECT_EQ(c.stats.bytes["t/ag"], (uint64_t)n * sizeof(T) * (W - 1));
}

template <class T>
void reduce_scatter_case() {
  auto& c = *g_comm;
  const int W = c.size(), n = 777;
  std::vector<float> send((size_t)n * W);
  for (int q = 0; q < W; ++q)
    for (int i = 0; i < n; ++i) send[(size_t)q * n + i] = (float)((c.rank() + 1) * ((q + i) % 8));
  Buffer<T> s = device<T>(send), r(*g_be, n);
  c.reduce_scatter(s.data(), r.data(), n, "t/rs");
  const std::vector<float> got = host(r);
  const float ranks = (float)(W * (W + 1) / 2);
  for (int i = 0; i < n; ++i) ASSERT_EQ(got[i], ranks * (float)((c.rank() + i) % 8)) << i;
}

}  // namespace

TEST(NcclComm, Names) {
  EXPECT_STREQ(g_comm->backend(), "nccl");
  EXPECT_EQ(g_comm->size(), [] {
    int w = 0;
    MPI_Comm_size(MPI_COMM_WORLD, &w);
    return w;
  }());
}

TEST(NcclComm, AllGatherFp32) { all_gather_case<float>(); }
TEST(NcclComm, AllGatherBf16HalvesTheBytes) { all_gather_case<bf16>(); }
TEST(NcclComm, ReduceScatterSumFp32) { reduce_scatter_case<float>(); }
TEST(NcclComm, ReduceScatterSumBf16) { reduce_scatter_case<bf16>(); }

TEST(NcclComm, AllReduceSumAndMaxAndBroadcast) {
  auto& c = *g_comm;
  const int W = c.size(), n = 4099;
  std::vector<float> v(n);
  for (int i = 0; i < n; ++i) v[i] = (float)(c.rank() + i % 5);
  Buffer<float> sum = device<float>(v), mx = device<float>(v);
  c.all_reduce_sum(sum.data(), n, "t/ar");
  c.all_reduce_max(mx.data(), n, "t/max");
  const std::vector<float> s = host(sum), m = host(mx);
  for (int i = 0; i < n; ++i) {
    ASSERT_EQ(s[i], (float)(W * (W - 1) / 2 + W * (i % 5))) << i;
    ASSERT_EQ(m[i], (float)(W - 1 + i % 5)) << i;
  }
  std::vector<float> b(n, (float)c.rank());
  Buffer<float> bb = device<float>(b);
  c.broadcast(bb.data(), n, W - 1, "t/bc");
  for (float x : host(bb)) ASSERT_EQ(x, (float)(W - 1));
}

// The training loop's host values (loss sums, router counts) go over MPI through the same object.
TEST(NcclComm, HostBuffersGoOverTheBootstrap) {
  auto& c = *g_comm;
  std::vector<double> h = {1.0 * c.rank(), 2.0};
  c.all_reduce_sum(h.data(), 2, "t/host");
  EXPECT_EQ(h[0], c.size() * (c.size() - 1) / 2.0);
  EXPECT_EQ(h[1], 2.0 * c.size());
}

TEST(NcclComm, HostAndDeviceMixedIsRefused) {
  auto& c = *g_comm;
  Buffer<float> d(*g_be, 4);
  std::vector<float> h(4 * c.size());
  EXPECT_THROW(c.all_gather(d.data(), h.data(), 4, "t/mixed"), std::invalid_argument);
}

// A non-blocking all-gather queued with the compute stream's context starts after the work
// queued there before it (the copy that fills `send`), and the result is there after wait().
TEST(NcclComm, NonBlockingAllGatherFollowsTheComputeStream) {
  auto& c = *g_comm;
  const int W = c.size(), n = 1 << 20;
  std::vector<float> v(n, (float)(c.rank() + 1));
  Buffer<float> src = device<float>(v), send(*g_be, n), recv(*g_be, (int64_t)n * W);
  g_be->zero(send.data(), (size_t)n * sizeof(float));
  g_be->copy(send.data(), src.data(), (size_t)n * sizeof(float));  // queued on the compute stream
  auto work = c.iall_gather(send.data(), recv.data(), n, "t/iag", &g_be->context());
  work->wait();
  const std::vector<float> got = host(recv);
  for (int q = 0; q < W; ++q) ASSERT_EQ(got[(size_t)q * n + n - 1], (float)(q + 1)) << q;
}

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  auto boot = dist::make_mpi_comm(&argc, &argv);
  std::string why;
  const int gpus = kern::cuda_device_count(&why);
  // Every rank sees the same node here (mpirun on one machine): the same decision everywhere.
  if (gpus < boot->size()) {
    if (boot->rank() == 0)
      std::printf("Skipped: %d rank(s) need one CUDA GPU each, %d usable here%s%s\n", boot->size(), gpus,
                  why.empty() ? "" : ": ", why.c_str());
    boot.reset();
    return 77;
  }
  std::string source;
  const int dev = kern::cuda::select_device([](const char* v) { return (const char*)std::getenv(v); }, gpus, &source);
  std::unique_ptr<kern::Backend> be = kern::make_cuda_backend(dev);
  g_be = be.get();
  std::unique_ptr<dist::Communicator> nccl = dist::make_nccl_comm(*boot);
  g_comm = nccl.get();
  const kern::CudaDeviceInfo info = kern::cuda_device_info(dev);
  std::printf("rank %d of %d: CUDA device %d (%s, by %s)\n", boot->rank(), boot->size(), dev, info.name.c_str(),
              source.c_str());
  if (boot->rank() != 0) {  // only rank 0 prints the gtest report; every rank's failures count
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  int failed = RUN_ALL_TESTS() != 0, any = 0;
  MPI_Allreduce(&failed, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  nccl.reset();
  be.reset();
  boot.reset();
  return any;
}
