// The MPI communicator (host memory, Open MPI). Non-blocking collectives map
// to MPI_Iallgather / MPI_Ireduce_scatter_block; the caller keeps computing
// and waits when it needs the result. Every wait, including those of the
// blocking calls (all-reduce, broadcast, barrier: non-blocking MPI calls waited
// on at once), polls with a deadline: a collective that makes no progress
// within the timeout ends the job with a message instead of hanging forever.
#include <mpi.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <thread>

#include "dist/communicator.h"

namespace mor::dist {

namespace {

void check(int rc, const char* what) {
  if (rc != MPI_SUCCESS) {
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, msg, &len);
    throw std::runtime_error(std::string(what) + " failed: " + std::string(msg, len));
  }
}

class MpiComm;

// Waits for `req`: spins on MPI_Test first (collectives usually finish within microseconds of
// the last rank arriving), then sleeps between polls so a long wait does not burn a core.
void wait_with_deadline(MPI_Request* req, const MpiComm& comm, const std::string& tag);

class MpiRequest : public Request {
 public:
  MpiRequest(const MpiComm& c, std::string tag) : comm_(c), tag_(std::move(tag)) {}
  MPI_Request req = MPI_REQUEST_NULL;
  void wait() override { wait_with_deadline(&req, comm_, tag_); }
  bool test() override {
    int done = 1;
    if (req != MPI_REQUEST_NULL) check(MPI_Test(&req, &done, MPI_STATUS_IGNORE), "MPI_Test");
    return done != 0;
  }
  ~MpiRequest() override {
    try {
      wait();
    } catch (...) {  // never throw from a destructor (std::terminate would leave the other ranks hanging)
    }
  }

 private:
  const MpiComm& comm_;
  std::string tag_;
};

class MpiComm : public Communicator {
 public:
  MpiComm() {
    MPI_Comm_dup(MPI_COMM_WORLD, &comm_);
    // Errors come back as codes (turned into exceptions naming the call), not silent aborts.
    MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
  }
  ~MpiComm() override {
    MPI_Comm_free(&comm_);
    int fin = 0;
    MPI_Finalized(&fin);
    if (!fin) MPI_Finalize();
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const char* backend() const override { return "mpi"; }

  std::unique_ptr<Request> iall_gather(const float* send, float* recv, size_t n, const std::string& tag) override {
    count(tag, (uint64_t)n * sizeof(float) * (size_ - 1));
    auto r = std::make_unique<MpiRequest>(*this, tag);
    check(MPI_Iallgather(send, (int)n, MPI_FLOAT, recv, (int)n, MPI_FLOAT, comm_, &r->req), "MPI_Iallgather");
    return timed(std::move(r));
  }
  std::unique_ptr<Request> ireduce_scatter(const float* send, float* recv, size_t n, const std::string& tag) override {
    count(tag, (uint64_t)n * sizeof(float) * (size_ - 1));
    auto r = std::make_unique<MpiRequest>(*this, tag);
    check(MPI_Ireduce_scatter_block(send, recv, (int)n, MPI_FLOAT, MPI_SUM, comm_, &r->req), "MPI_Ireduce_scatter_block");
    return timed(std::move(r));
  }
  void all_reduce_sum(double* data, size_t n, const std::string& tag) override {
    count(tag, (uint64_t)(2.0 * n * sizeof(double) * (size_ - 1) / size_));
    auto t = std::chrono::steady_clock::now();
    MPI_Request req = MPI_REQUEST_NULL;
    check(MPI_Iallreduce(MPI_IN_PLACE, data, (int)n, MPI_DOUBLE, MPI_SUM, comm_, &req), "MPI_Iallreduce");
    wait_with_deadline(&req, *this, tag);
    stats.wait_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
  }
  void broadcast(void* data, size_t bytes, int root, const std::string& tag) override {
    count(tag, rank_ == root ? (uint64_t)bytes * (size_ - 1) : 0);
    MPI_Request req = MPI_REQUEST_NULL;
    check(MPI_Ibcast(data, (int)bytes, MPI_BYTE, root, comm_, &req), "MPI_Ibcast");
    wait_with_deadline(&req, *this, tag);
  }
  void barrier() override {
    MPI_Request req = MPI_REQUEST_NULL;
    check(MPI_Ibarrier(comm_, &req), "MPI_Ibarrier");
    wait_with_deadline(&req, *this, "barrier");
  }
  [[noreturn]] void abort(int code) override {
    MPI_Abort(MPI_COMM_WORLD, code);
    std::exit(code);
  }

 private:
  MPI_Comm comm_;
  int rank_ = 0, size_ = 1;
};

void wait_with_deadline(MPI_Request* req, const MpiComm& comm, const std::string& tag) {
  if (*req == MPI_REQUEST_NULL) return;
  const double limit = comm.timeout();
  const auto start = std::chrono::steady_clock::now();
  for (long polls = 0;; ++polls) {
    int done = 0;
    check(MPI_Test(req, &done, MPI_STATUS_IGNORE), "MPI_Test");
    if (done) return;
    if (polls < 20000) continue;  // ~ a few ms of spinning, like MPI_Wait
    std::this_thread::sleep_for(std::chrono::microseconds(polls < 40000 ? 50 : 500));
    const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (limit > 0 && waited > limit) {
      std::fprintf(stderr,
                   "mor-dist [rank %d/%d]: error: collective '%s' made no progress for %.0f s (%s): another rank is "
                   "stopped, hung or dead. Ending the job with exit status %d (--dist.timeout %g)\n",
                   comm.rank(), comm.size(), tag.c_str(), waited, comm.context().empty() ? "outside training" : comm.context().c_str(),
                   kExitCollectiveTimeout, limit);
      std::fflush(stderr);
      MPI_Abort(MPI_COMM_WORLD, kExitCollectiveTimeout);
      std::_Exit(kExitCollectiveTimeout);
    }
  }
}

}  // namespace

std::unique_ptr<Communicator> make_mpi_comm(int* argc, char*** argv) {
  int init = 0;
  MPI_Initialized(&init);
  if (!init) {
    int provided = 0;
    check(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
  }
  return std::make_unique<MpiComm>();
}

}  // namespace mor::dist
