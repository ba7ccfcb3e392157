// One small typed communicator interface in the spirit of c10d's ProcessGroup: all-gather,
// reduce-scatter, all-reduce (sum, max), broadcast, barrier, abort; non-blocking calls return a
// Work handle. Buffers are typed by a kern::DType (fp32, bf16, fp64, int32, int64, uint64) and
// counted in int64_t elements; every collective takes an optional execution context
// (kern::Context: the stream a device communicator such as NCCL queues on; MPI ignores it).
// Implementations: MPI on host memory (dist/mpi_comm.cpp) and a single-process one
// (dist/communicator.cpp); an NCCL communicator implements the same protected start_* calls.
//
// Every collective counts the bytes this rank sends, per call-site tag (e.g.
// "allgather/shared_block"), using the ring-algorithm volume: an all-gather or reduce-scatter of
// `count` elements per rank sends count*dtype_size*(W-1) bytes, an all-reduce
// 2*count*dtype_size*(W-1)/W, a broadcast count*dtype_size*(W-1) from the root.
#pragma once
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "kernels/dtype.h"

namespace mor::dist {

// Exit status of every rank when a collective made no progress within the timeout.
constexpr int kExitCollectiveTimeout = 5;
// Exit status of the job when a collective failed and nobody could be told (the failure surfaced
// while its Work handle was destroyed): the runtime-error status of `mor-dist`.
constexpr int kExitCollectiveFailed = 1;

enum class ReduceOp : uint8_t { Sum, Max };
const char* to_string(ReduceOp op);

struct CommStats {
  std::map<std::string, uint64_t> bytes;  // bytes sent by this rank, per tag
  std::map<std::string, uint64_t> calls;
  double wait_seconds = 0;                    // time blocked in wait()/blocking collectives
  std::map<std::string, double> wait_by_tag;  // the same, per tag (e.g. all-gather vs reduce-scatter waits)
  uint64_t split_calls = 0;                   // collectives split into several backend calls (count > per-call limit)
  uint64_t total_bytes() const;
  void clear() {
    bytes.clear();
    calls.clear();
    wait_seconds = 0;
    wait_by_tag.clear();
    split_calls = 0;
  }
};

// A pending collective (c10d's Work). The buffers it reads and writes must stay alive until it
// completes, and the handle must not outlive its Communicator.
//
// Destruction contract: destroying a handle whose collective has not completed waits for it
// (bounded by the stall timeout, which ends the job with kExitCollectiveTimeout). The destructor
// never throws and never calls std::terminate: if that wait fails, it prints the collective and
// the error on stderr and ends every rank through Communicator::abort(kExitCollectiveFailed), so
// no other rank is left waiting. A handle whose wait() already threw is not waited on again (the
// caller has the error).
class Work {
 public:
  virtual ~Work() = default;
  // Blocks until the collective completes; throws std::runtime_error when it failed.
  virtual void wait() = 0;
  // Drives progress without blocking (MPI progresses non-blocking collectives only inside MPI
  // calls); true once complete.
  virtual bool test() = 0;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual const char* backend() const = 0;
  // Where the ranks run, e.g. "node1 (ranks 0-1), node2 (ranks 2-3)": the node name of each rank
  // (SLURMD_NODENAME under srun, else the host name), gathered once at start-up. "" for one process.
  virtual std::string placement() const { return {}; }

  // ---- typed collectives ------------------------------------------------------------------------
  // `count` is in elements of `dt`; send and recv must not overlap (except identical pointers in a
  // world of one). Counts above INT_MAX are fine: a backend whose calls take int counts splits them.
  //
  // recv[size() * count] = concatenation of every rank's send[count], in rank order.
  std::unique_ptr<Work> iall_gather(const void* send, void* recv, int64_t count, kern::DType dt, const std::string& tag,
                                    kern::Context* ctx = nullptr);
  // recv[count] = op over ranks of block rank() of their send[size() * count].
  std::unique_ptr<Work> ireduce_scatter(const void* send, void* recv, int64_t count, kern::DType dt, ReduceOp op,
                                        const std::string& tag, kern::Context* ctx = nullptr);
  // data[count] = op over ranks of data[count], in place. bf16 sums add in fp32 and round to
  // nearest even after each pairwise step.
  std::unique_ptr<Work> iall_reduce(void* data, int64_t count, kern::DType dt, ReduceOp op, const std::string& tag,
                                    kern::Context* ctx = nullptr);
  // data[count] on every rank = data[count] of `root`.
  std::unique_ptr<Work> ibroadcast(void* data, int64_t count, kern::DType dt, int root, const std::string& tag,
                                   kern::Context* ctx = nullptr);
  // Blocking forms: the non-blocking call, then wait().
  void all_reduce(void* data, int64_t count, kern::DType dt, ReduceOp op, const std::string& tag,
                  kern::Context* ctx = nullptr) {
    iall_reduce(data, count, dt, op, tag, ctx)->wait();
  }
  void broadcast(void* data, int64_t count, kern::DType dt, int root, const std::string& tag,
                 kern::Context* ctx = nullptr) {
    ibroadcast(data, count, dt, root, tag, ctx)->wait();
  }
  virtual void barrier() = 0;
  // Ends every rank's process with `code` (MPI_Abort): a failing rank must not leave the others hanging.
  [[noreturn]] virtual void abort(int code) = 0;

  // ---- typed convenience forms (T = float, double, int32_t, int64_t, uint64_t) ------------------
  template <class T>
  std::unique_ptr<Work> iall_gather(const T* send, T* recv, int64_t count, const std::string& tag,
                                    kern::Context* ctx = nullptr) {
    return iall_gather(send, recv, count, kern::dtype_of<T>(), tag, ctx);
  }
  template <class T>
  void all_gather(const T* send, T* recv, int64_t count, const std::string& tag, kern::Context* ctx = nullptr) {
    iall_gather(send, recv, count, tag, ctx)->wait();
  }
  template <class T>
  std::unique_ptr<Work> ireduce_scatter(const T* send, T* recv, int64_t count, const std::string& tag,
                                        kern::Context* ctx = nullptr) {
    return ireduce_scatter(send, recv, count, kern::dtype_of<T>(), ReduceOp::Sum, tag, ctx);
  }
  template <class T>
  void reduce_scatter(const T* send, T* recv, int64_t count, const std::string& tag, kern::Context* ctx = nullptr) {
    ireduce_scatter(send, recv, count, tag, ctx)->wait();
  }
  template <class T>
  void all_reduce_sum(T* data, int64_t count, const std::string& tag, kern::Context* ctx = nullptr) {
    all_reduce(data, count, kern::dtype_of<T>(), ReduceOp::Sum, tag, ctx);
  }
  template <class T>
  void all_reduce_max(T* data, int64_t count, const std::string& tag, kern::Context* ctx = nullptr) {
    all_reduce(data, count, kern::dtype_of<T>(), ReduceOp::Max, tag, ctx);
  }
  template <class T>
  void broadcast(T* data, int64_t count, int root, const std::string& tag, kern::Context* ctx = nullptr) {
    broadcast(data, count, kern::dtype_of<T>(), root, tag, ctx);
  }

  // What the caller is doing ("step 12"), named in a stall report.
  void set_context(std::string c) { context_ = std::move(c); }
  const std::string& context() const { return context_; }
  // A collective that makes no progress for this many seconds (a rank stopped, hung or died
  // without the runtime noticing) prints the collective, the context and this rank, and ends
  // every rank with kExitCollectiveTimeout. 0 = wait forever.
  void set_timeout(double seconds) { timeout_s_ = seconds; }
  double timeout() const { return timeout_s_; }

  CommStats stats;

 protected:
  std::string context_;
  double timeout_s_ = 600;

  // What a backend implements. Arguments are validated (count >= 0, 0 <= root < size()) and the
  // bytes counted before these are called; the returned handle is wrapped so that its wait time
  // is added to stats.wait_seconds and the destruction contract above holds.
  virtual std::unique_ptr<Work> start_all_gather(const void* send, void* recv, int64_t count, kern::DType dt,
                                                 const std::string& tag, kern::Context* ctx) = 0;
  virtual std::unique_ptr<Work> start_reduce_scatter(const void* send, void* recv, int64_t count, kern::DType dt,
                                                     ReduceOp op, const std::string& tag, kern::Context* ctx) = 0;
  virtual std::unique_ptr<Work> start_all_reduce(void* data, int64_t count, kern::DType dt, ReduceOp op,
                                                 const std::string& tag, kern::Context* ctx) = 0;
  virtual std::unique_ptr<Work> start_broadcast(void* data, int64_t count, kern::DType dt, int root,
                                                const std::string& tag, kern::Context* ctx) = 0;

  void count_bytes(const std::string& tag, uint64_t bytes);

 private:
  std::unique_ptr<Work> track(std::unique_ptr<Work> w, const std::string& tag);
};

std::unique_ptr<Communicator> make_single_process_comm();
// Initialises MPI (MPI_Init_thread, FUNNELED) on first call; rank/size from the MPI runtime
// (mpirun, or srun --mpi=pmix). `max_chunk` is the most elements one MPI call carries (default,
// 0: INT_MAX, or the test hook MOR_TEST_COMM_MAX_CHUNK from the environment); larger collectives
// are split into several MPI calls under one Work handle.
std::unique_ptr<Communicator> make_mpi_comm(int* argc, char*** argv, int64_t max_chunk = 0);
// True when launched by mpirun/srun with more than one task (environment only).
bool launched_multi_process();

}  // namespace mor::dist
