#include "dist/communicator.h"

#include <cstdlib>
#include <cstring>

namespace mor::dist {

uint64_t CommStats::total_bytes() const {
  uint64_t s = 0;
  for (const auto& [k, v] : bytes) s += v;
  return s;
}

void Communicator::count(const std::string& tag, uint64_t b) {
  stats.bytes[tag] += b;
  stats.calls[tag] += 1;
}

namespace {
class TimedRequest : public Request {
 public:
  TimedRequest(std::unique_ptr<Request> r, double* acc) : r_(std::move(r)), acc_(acc) {}
  void wait() override {
    if (!r_) return;
    auto t = std::chrono::steady_clock::now();
    r_->wait();
    *acc_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
    r_.reset();
  }
  bool test() override { return !r_ || r_->test(); }
  // Never throws: a destructor that threw during unwinding would std::terminate this rank and
  // leave the others waiting (a stall still ends the job through the timeout).
  ~TimedRequest() override {
    try {
      wait();
    } catch (...) {
    }
  }

 private:
  std::unique_ptr<Request> r_;
  double* acc_;
};

class DoneRequest : public Request {
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
  std::unique_ptr<Request> iall_gather(const float* send, float* recv, size_t n, const std::string& tag) override {
    if (send != recv) std::memcpy(recv, send, n * sizeof(float));
    count(tag, 0);
    return std::make_unique<DoneRequest>();
  }
  std::unique_ptr<Request> ireduce_scatter(const float* send, float* recv, size_t n, const std::string& tag) override {
    if (send != recv) std::memcpy(recv, send, n * sizeof(float));
    count(tag, 0);
    return std::make_unique<DoneRequest>();
  }
  void all_reduce_sum(double*, size_t, const std::string& tag) override { count(tag, 0); }
  void broadcast(void*, size_t, int, const std::string& tag) override { count(tag, 0); }
  void barrier() override {}
  [[noreturn]] void abort(int code) override { std::exit(code); }
};
}  // namespace

std::unique_ptr<Request> Communicator::timed(std::unique_ptr<Request> r) {
  return std::make_unique<TimedRequest>(std::move(r), &stats.wait_seconds);
}

void Communicator::all_gather(const float* send, float* recv, size_t count, const std::string& tag) {
  iall_gather(send, recv, count, tag)->wait();
}
void Communicator::reduce_scatter(const float* send, float* recv, size_t count, const std::string& tag) {
  ireduce_scatter(send, recv, count, tag)->wait();
}

std::unique_ptr<Communicator> make_single_process_comm() { return std::make_unique<SingleProcessComm>(); }

bool launched_multi_process() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "SLURM_NTASKS", "PMI_SIZE"})
    if (const char* s = std::getenv(v))
      if (std::atoi(s) > 1) return true;
  return false;
}

}  // namespace mor::dist
