// The MPI communicator (host memory, Open MPI). Non-blocking collectives map
// to MPI_Iallgather / MPI_Ireduce_scatter_block; the caller keeps computing
// and waits when it needs the result.
#include <mpi.h>

#include <stdexcept>
#include <string>

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

class MpiRequest : public Request {
 public:
  MPI_Request req = MPI_REQUEST_NULL;
  void wait() override {
    if (req != MPI_REQUEST_NULL) check(MPI_Wait(&req, MPI_STATUS_IGNORE), "MPI_Wait");
  }
  bool test() override {
    int done = 1;
    if (req != MPI_REQUEST_NULL) check(MPI_Test(&req, &done, MPI_STATUS_IGNORE), "MPI_Test");
    return done != 0;
  }
  ~MpiRequest() override {
    if (req != MPI_REQUEST_NULL) MPI_Wait(&req, MPI_STATUS_IGNORE);
  }
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
    auto r = std::make_unique<MpiRequest>();
    check(MPI_Iallgather(send, (int)n, MPI_FLOAT, recv, (int)n, MPI_FLOAT, comm_, &r->req), "MPI_Iallgather");
    return timed(std::move(r));
  }
  std::unique_ptr<Request> ireduce_scatter(const float* send, float* recv, size_t n, const std::string& tag) override {
    count(tag, (uint64_t)n * sizeof(float) * (size_ - 1));
    auto r = std::make_unique<MpiRequest>();
    check(MPI_Ireduce_scatter_block(send, recv, (int)n, MPI_FLOAT, MPI_SUM, comm_, &r->req), "MPI_Ireduce_scatter_block");
    return timed(std::move(r));
  }
  void all_reduce_sum(double* data, size_t n, const std::string& tag) override {
    count(tag, (uint64_t)(2.0 * n * sizeof(double) * (size_ - 1) / size_));
    auto t = std::chrono::steady_clock::now();
    check(MPI_Allreduce(MPI_IN_PLACE, data, (int)n, MPI_DOUBLE, MPI_SUM, comm_), "MPI_Allreduce");
    stats.wait_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
  }
  void broadcast(void* data, size_t bytes, int root, const std::string& tag) override {
    count(tag, rank_ == root ? (uint64_t)bytes * (size_ - 1) : 0);
    check(MPI_Bcast(data, (int)bytes, MPI_BYTE, root, comm_), "MPI_Bcast");
  }
  void barrier() override { check(MPI_Barrier(comm_), "MPI_Barrier"); }
  [[noreturn]] void abort(int code) override {
    MPI_Abort(MPI_COMM_WORLD, code);
    std::exit(code);
  }

 private:
  MPI_Comm comm_;
  int rank_ = 0, size_ = 1;
};

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
