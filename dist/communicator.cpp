#include "dist/communicator.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <stdexcept>

namespace mor::dist {

const char* to_string(ReduceOp op) {
  switch (op) {
    case ReduceOp::Sum:
      return "sum";
    case ReduceOp::Max:
      return "max";
  }
  return "?";
}

uint64_t CommStats::total_bytes() const {
  uint64_t s = 0;
  for (const auto& [k, v] : bytes) s += v;
  return s;
}

void Communicator::count_bytes(const std::string& tag, uint64_t b) {
  stats.bytes[tag] += b;
  stats.calls[tag] += 1;
}

namespace {

void check_count(int64_t n, const std::string& tag) {
  if (n < 0) throw std::invalid_argument("collective '" + tag + "': negative count " + std::to_string(n));
}

// Every handle a Communicator returns: adds its wait time to stats.wait_seconds and holds the
// destruction contract of communicator.h.
class TrackedWork : public Work {
 public:
  TrackedWork(std::unique_ptr<Work> w, Communicator& comm, std::string tag)
      : w_(std::move(w)), comm_(comm), tag_(std::move(tag)) {}
  void wait() override {
    if (!w_) return;
    if (failed_) throw std::runtime_error("collective '" + tag_ + "' failed earlier");
    auto t = std::chrono::steady_clock::now();
    try {
      w_->wait();
    } catch (...) {
      failed_ = true;
      throw;
    }
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
    comm_.stats.wait_seconds += dt;
    comm_.stats.wait_by_tag[tag_] += dt;
    w_.reset();
  }
  bool test() override {
    if (!w_ || failed_) return !w_;
    try {
      return w_->test();
    } catch (...) {
      failed_ = true;
      throw;
    }
  }
  ~TrackedWork() override {
    if (!w_ || failed_) return;  // complete, or its failure was already thrown to the caller
    try {
      wait();
      return;
    } catch (const std::exception& e) {
      std::fprintf(stderr,
                   "mor-dist [rank %d/%d]: error: collective '%s' failed while its handle was destroyed: %s. "
                   "Ending the job with exit status %d\n",
                   comm_.rank(), comm_.size(), tag_.c_str(), e.what(), kExitCollectiveFailed);
    } catch (...) {
      std::fprintf(stderr,
                   "mor-dist [rank %d/%d]: error: collective '%s' failed while its handle was destroyed. "
                   "Ending the job with exit status %d\n",
                   comm_.rank(), comm_.size(), tag_.c_str(), kExitCollectiveFailed);
    }
    std::fflush(stderr);
    comm_.abort(kExitCollectiveFailed);
  }

 private:
  std::unique_ptr<Work> w_;
  Communicator& comm_;
  std::string tag_;
  bool failed_ = false;
};

class DoneWork : public Work {
 public:
  void wait() override {}
  bool test() override { return true; }
};

// World of one: collectives are copies; nothing is sent.
class SingleProcessComm : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  const char* backend() const override { return "single"; }
  void barrier() override {}
  [[noreturn]] void abort(int code) override { std::exit(code); }

 protected:
  std::unique_ptr<Work> start_all_gather(const void* send, void* recv, int64_t n, kern::DType dt, const std::string&,
                                         kern::Context*) override {
    if (send != recv) std::memcpy(recv, send, (size_t)n * kern::dtype_size(dt));
    return std::make_unique<DoneWork>();
  }
  std::unique_ptr<Work> start_reduce_scatter(const void* send, void* recv, int64_t n, kern::DType dt, ReduceOp,
                                             const std::string&, kern::Context*) override {
    if (send != recv) std::memcpy(recv, send, (size_t)n * kern::dtype_size(dt));
    return std::make_unique<DoneWork>();
  }
  std::unique_ptr<Work> start_all_reduce(void*, int64_t, kern::DType, ReduceOp, const std::string&,
                                         kern::Context*) override {
    return std::make_unique<DoneWork>();
  }
  std::unique_ptr<Work> start_broadcast(void*, int64_t, kern::DType, int, const std::string&, kern::Context*) override {
    return std::make_unique<DoneWork>();
  }
};
}  // namespace

std::unique_ptr<Work> Communicator::track(std::unique_ptr<Work> w, const std::string& tag) {
  return std::make_unique<TrackedWork>(std::move(w), *this, tag);
}

std::unique_ptr<Work> Communicator::iall_gather(const void* send, void* recv, int64_t n, kern::DType dt,
                                                const std::string& tag, kern::Context* ctx) {
  check_count(n, tag);
  count_bytes(tag, (uint64_t)n * kern::dtype_size(dt) * (size() - 1));
  return track(start_all_gather(send, recv, n, dt, tag, ctx), tag);
}

std::unique_ptr<Work> Communicator::ireduce_scatter(const void* send, void* recv, int64_t n, kern::DType dt,
                                                    ReduceOp op, const std::string& tag, kern::Context* ctx) {
  check_count(n, tag);
  count_bytes(tag, (uint64_t)n * kern::dtype_size(dt) * (size() - 1));
  return track(start_reduce_scatter(send, recv, n, dt, op, tag, ctx), tag);
}

std::unique_ptr<Work> Communicator::iall_reduce(void* data, int64_t n, kern::DType dt, ReduceOp op,
                                                const std::string& tag, kern::Context* ctx) {
  check_count(n, tag);
  count_bytes(tag, (uint64_t)(2.0 * (double)n * (double)kern::dtype_size(dt) * (size() - 1) / size()));
  return track(start_all_reduce(data, n, dt, op, tag, ctx), tag);
}

std::unique_ptr<Work> Communicator::ibroadcast(void* data, int64_t n, kern::DType dt, int root, const std::string& tag,
                                               kern::Context* ctx) {
  check_count(n, tag);
  if (root < 0 || root >= size())
    throw std::invalid_argument("broadcast '" + tag + "': root " + std::to_string(root) + " outside a world of " +
                                std::to_string(size()));
  count_bytes(tag, rank() == root ? (uint64_t)n * kern::dtype_size(dt) * (size() - 1) : 0);
  return track(start_broadcast(data, n, dt, root, tag, ctx), tag);
}

std::unique_ptr<Communicator> make_single_process_comm() { return std::make_unique<SingleProcessComm>(); }

bool launched_multi_process() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "SLURM_NTASKS", "PMI_SIZE"})
    if (const char* s = std::getenv(v))
      if (std::atoi(s) > 1) return true;
  return false;
}

}  // namespace mor::dist
