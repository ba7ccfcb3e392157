// One small communicator interface (in the spirit of c10d's ProcessGroup):
// all-gather, reduce-scatter, all-reduce, broadcast, barrier; blocking and
// non-blocking. Implementations: MPI on host memory (dist/mpi_comm.cpp) and a
// single-process one; NCCL on device memory fits the same calls.
// Every collective counts the bytes this rank sends, per call-site tag (e.g.
// "allgather/shared_block"), using the ring-algorithm volume: an all-gather or
// reduce-scatter of `count` floats per rank sends count*(W-1) floats.
#pragma once
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>

namespace mor::dist {

// Exit status of every rank when a collective made no progress within the timeout.
constexpr int kExitCollectiveTimeout = 5;

struct CommStats {
  std::map<std::string, uint64_t> bytes;  // bytes sent by this rank, per tag
  std::map<std::string, uint64_t> calls;
  double wait_seconds = 0;                // time blocked in wait()/blocking collectives
  uint64_t total_bytes() const;
  void clear() { bytes.clear(); calls.clear(); wait_seconds = 0; }
};

// A pending non-blocking collective.
class Request {
 public:
  virtual ~Request() = default;
  virtual void wait() = 0;
  // Drives progress without blocking (MPI progresses non-blocking collectives
  // only inside MPI calls); true once complete.
  virtual bool test() { return false; }
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual const char* backend() const = 0;

  // recv[size() * count] = concatenation of every rank's send[count], in rank order.
  virtual std::unique_ptr<Request> iall_gather(const float* send, float* recv, size_t count, const std::string& tag) = 0;
  // recv[count] = sum over ranks of block rank() of their send[size() * count].
  virtual std::unique_ptr<Request> ireduce_scatter(const float* send, float* recv, size_t count, const std::string& tag) = 0;
  // In-place sum over ranks.
  virtual void all_reduce_sum(double* data, size_t n, const std::string& tag) = 0;
  virtual void broadcast(void* data, size_t bytes, int root, const std::string& tag) = 0;
  virtual void barrier() = 0;
  // Ends every rank's process with `code` (MPI_Abort): a failing rank must not leave the others hanging.
  [[noreturn]] virtual void abort(int code) = 0;

  void all_gather(const float* send, float* recv, size_t count, const std::string& tag);
  void reduce_scatter(const float* send, float* recv, size_t count, const std::string& tag);

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

  void count(const std::string& tag, uint64_t bytes);
  // Wraps a request so its wait time is added to stats.wait_seconds.
  std::unique_ptr<Request> timed(std::unique_ptr<Request> r);
};

std::unique_ptr<Communicator> make_single_process_comm();
// Initialises MPI (MPI_Init_thread, FUNNELED) on first call; rank/size from the
// MPI runtime (mpirun, or srun --mpi=pmix).
std::unique_ptr<Communicator> make_mpi_comm(int* argc, char*** argv);
// True when launched by mpirun/srun with more than one task (environment only).
bool launched_multi_process();

}  // namespace mor::dist
