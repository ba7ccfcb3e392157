// The NCCL communicator (dist/nccl_comm.h). One ncclComm_t per process, one non-blocking CUDA
// stream for its collectives. A collective on device memory:
//   1. records an event on the caller's stream (Context::stream; the legacy default stream when
//      none is given) and makes the communication stream wait for it: the data is ready;
//   2. queues the NCCL call on the communication stream and records a completion event;
//   3. Work::wait() polls that event with the communicator's deadline (spinning briefly, then
//      sleeping), checking ncclCommGetAsyncError: a peer that died or hung ends the job with
//      kExitCollectiveTimeout after aborting the NCCL communicator, instead of hanging forever.
// Work::wait() returns once the collective has completed on the device, so kernels queued on any
// stream afterwards see its result.
//
// Types: fp32, bf16 (NCCL reduces bf16 in fp32 and rounds per step, as the interface says), fp64,
// int32, int64, uint64 are NCCL's own; counts are size_t (no splitting).
#include "dist/nccl_comm.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <thread>

#include "dist/nccl_bootstrap.h"

namespace mor::dist {

static_assert(kNcclUniqueIdBytes == NCCL_UNIQUE_ID_BYTES, "nccl_bootstrap.h's id size is NCCL's");

namespace {

void check_cuda(cudaError_t rc, const char* what) {
  if (rc != cudaSuccess) throw std::runtime_error(std::string(what) + " failed: " + cudaGetErrorString(rc));
}
void check_nccl(ncclResult_t rc, const char* what) {
  if (rc != ncclSuccess) throw std::runtime_error(std::string(what) + " failed: " + ncclGetErrorString(rc));
}

ncclDataType_t nccl_type(kern::DType dt) {
  switch (dt) {
    case kern::DType::F32:
      return ncclFloat32;
    case kern::DType::BF16:
      return ncclBfloat16;
    case kern::DType::F64:
      return ncclFloat64;
    case kern::DType::I32:
      return ncclInt32;
    case kern::DType::I64:
      return ncclInt64;
    case kern::DType::U64:
      return ncclUint64;
  }
  throw std::invalid_argument("nccl communicator: unknown dtype");
}

ncclRedOp_t nccl_op(ReduceOp op) { return op == ReduceOp::Max ? ncclMax : ncclSum; }

// Device (or managed) memory goes over NCCL; host memory over the bootstrap communicator.
bool on_device(const void* p) {
  if (!p) return false;
  cudaPointerAttributes a{};
  if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
    cudaGetLastError();  // an unregistered host pointer on older runtimes: clear the sticky error
    return false;
  }
  return a.type == cudaMemoryTypeDevice || a.type == cudaMemoryTypeManaged;
}

cudaStream_t stream_of(kern::Context* ctx) {
  return ctx && ctx->stream ? static_cast<cudaStream_t>(ctx->stream) : cudaStreamLegacy;
}

class NcclComm;

class NcclWork : public Work {
 public:
  NcclWork(NcclComm& c, std::string tag) : comm_(c), tag_(std::move(tag)) {
    check_cuda(cudaEventCreateWithFlags(&done_, cudaEventDisableTiming), "cudaEventCreateWithFlags");
  }
  ~NcclWork() override {
    if (done_) cudaEventDestroy(done_);
  }
  cudaEvent_t event() const { return done_; }
  void wait() override;
  bool test() override;

 private:
  NcclComm& comm_;
  std::string tag_;
  cudaEvent_t done_ = nullptr;
};

class NcclComm : public Communicator {
 public:
  explicit NcclComm(Communicator& boot) : boot_(boot) {
    timeout_s_ = boot.timeout();
    const NcclUniqueIdBytes bytes = share_unique_id(boot, [] {
      ncclUniqueId id;
      check_nccl(ncclGetUniqueId(&id), "ncclGetUniqueId");
      NcclUniqueIdBytes b;
      std::memcpy(b.data(), id.internal, b.size());
      return b;
    });
    ncclUniqueId id;
    std::memcpy(id.internal, bytes.data(), bytes.size());
    check_nccl(ncclCommInitRank(&comm_, boot.size(), id, boot.rank()), "ncclCommInitRank");
    check_cuda(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
    check_cuda(cudaEventCreateWithFlags(&ready_, cudaEventDisableTiming), "cudaEventCreateWithFlags");
  }
  ~NcclComm() override {
    if (stream_) cudaStreamSynchronize(stream_);
    if (comm_) ncclCommDestroy(comm_);
    if (ready_) cudaEventDestroy(ready_);
    if (stream_) cudaStreamDestroy(stream_);
  }

  int rank() const override { return boot_.rank(); }
  int size() const override { return boot_.size(); }
  const char* backend() const override { return "nccl"; }
  std::string placement() const override { return boot_.placement(); }
  void barrier() override {
    check_cuda(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
    sync_boot();
    boot_.barrier();
  }
  [[noreturn]] void abort(int code) override {
    if (comm_) ncclCommAbort(comm_);  // unblocks kernels waiting on dead peers
    boot_.abort(code);
    std::_Exit(code);  // not reached: boot_.abort ends the process
  }

  // Polled by NcclWork::wait: the async error of the communicator (a peer failed).
  ncclResult_t async_error() const {
    ncclResult_t e = ncclSuccess;
    if (ncclCommGetAsyncError(comm_, &e) != ncclSuccess) return ncclSystemError;
    return e;
  }

 protected:
  std::unique_ptr<Work> start_all_gather(const void* send, void* recv, int64_t count, kern::DType dt,
                                         const std::string& tag, kern::Context* ctx) override {
    if (!on_device(recv)) return host(tag, send)->iall_gather(send, recv, count, dt, tag);
    return launch(tag, ctx, [&] { return ncclAllGather(send, recv, (size_t)count, nccl_type(dt), comm_, stream_); });
  }
  std::unique_ptr<Work> start_reduce_scatter(const void* send, void* recv, int64_t count, kern::DType dt, ReduceOp op,
                                             const std::string& tag, kern::Context* ctx) override {
    if (!on_device(recv)) return host(tag, send)->ireduce_scatter(send, recv, count, dt, op, tag);
    return launch(tag, ctx, [&] {
      return ncclReduceScatter(send, recv, (size_t)count, nccl_type(dt), nccl_op(op), comm_, stream_);
    });
  }
  std::unique_ptr<Work> start_all_reduce(void* data, int64_t count, kern::DType dt, ReduceOp op, const std::string& tag,
                                         kern::Context* ctx) override {
    if (!on_device(data)) return host(tag)->iall_reduce(data, count, dt, op, tag);
    return launch(tag, ctx,
                  [&] { return ncclAllReduce(data, data, (size_t)count, nccl_type(dt), nccl_op(op), comm_, stream_); });
  }
  std::unique_ptr<Work> start_broadcast(void* data, int64_t count, kern::DType dt, int root, const std::string& tag,
                                        kern::Context* ctx) override {
    if (!on_device(data)) return host(tag)->ibroadcast(data, count, dt, root, tag);
    return launch(tag, ctx,
                  [&] { return ncclBroadcast(data, data, (size_t)count, nccl_type(dt), root, comm_, stream_); });
  }

 private:
  Communicator& boot_;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  cudaEvent_t ready_ = nullptr;

  // The bootstrap communicator, for host buffers, with this communicator's deadline and context.
  // A collective between host and device memory is refused (neither side could run it).
  Communicator* host(const std::string& tag, const void* a = nullptr, const void* b = nullptr) {
    if (on_device(a) || on_device(b))
      throw std::invalid_argument("collective '" + tag + "': one buffer in device memory, one in host memory");
    sync_boot();
    return &boot_;
  }
  void sync_boot() {
    boot_.set_timeout(timeout_s_);
    boot_.set_context(context_);
  }

  template <class Call>
  std::unique_ptr<Work> launch(const std::string& tag, kern::Context* ctx, Call call) {
    auto w = std::make_unique<NcclWork>(*this, tag);
    check_cuda(cudaEventRecord(ready_, stream_of(ctx)), "cudaEventRecord");
    check_cuda(cudaStreamWaitEvent(stream_, ready_, 0), "cudaStreamWaitEvent");
    check_nccl(call(), ("NCCL collective '" + tag + "'").c_str());
    check_cuda(cudaEventRecord(w->event(), stream_), "cudaEventRecord");
    return w;
  }
};

bool NcclWork::test() {
  const cudaError_t rc = cudaEventQuery(done_);
  if (rc == cudaErrorNotReady) return false;
  check_cuda(rc, "cudaEventQuery");
  return true;
}

void NcclWork::wait() {
  const double limit = comm_.timeout();
  const auto start = std::chrono::steady_clock::now();
  for (long polls = 0;; ++polls) {
    if (test()) return;
    const ncclResult_t err = comm_.async_error();
    if (err != ncclSuccess && err != ncclInProgress)
      throw std::runtime_error("NCCL collective '" + tag_ + "' failed: " + ncclGetErrorString(err));
    if (polls < 20000) continue;  // a few ms of spinning, then sleep between polls
    std::this_thread::sleep_for(std::chrono::microseconds(polls < 40000 ? 50 : 500));
    const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (limit > 0 && waited > limit) {
      std::fprintf(stderr,
                   "mor-dist [rank %d/%d]: error: NCCL collective '%s' made no progress for %.0f s (%s): another "
                   "rank is stopped, hung or dead. Ending the job with exit status %d (--dist.timeout %g)\n",
                   comm_.rank(), comm_.size(), tag_.c_str(), waited,
                   comm_.context().empty() ? "outside training" : comm_.context().c_str(), kExitCollectiveTimeout,
                   limit);
      std::fflush(stderr);
      comm_.abort(kExitCollectiveTimeout);
    }
  }
}

}  // namespace

std::unique_ptr<Communicator> make_nccl_comm(Communicator& boot) { return std::make_unique<NcclComm>(boot); }

}  // namespace mor::dist
