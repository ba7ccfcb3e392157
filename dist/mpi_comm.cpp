// The MPI communicator (host memory, Open MPI 4.1). Non-blocking collectives map to
// MPI_Iallgather / MPI_Ireduce_scatter_block / MPI_Iallreduce / MPI_Ibcast; the caller keeps
// computing and waits when it needs the result. Every wait, including those of the blocking calls
// (non-blocking MPI calls waited on at once), polls with a deadline: a collective that makes no
// progress within the timeout ends the job with a message instead of hanging forever.
//
// Types: fp32/fp64/int32/int64/uint64 are MPI's own; bf16 travels as MPI_UINT16_T, and its
// reductions are user ops that compute in fp32 and round to nearest even back to bf16.
//
// 64-bit counts: MPI-3 calls take int counts (Open MPI 4.1 has no MPI-4 `_c` functions). A
// collective over more than max_chunk_ elements (INT_MAX unless a test lowers it) is split into
// pieces of at most max_chunk_ elements, all started at once under one Work handle:
// - all-reduce, broadcast: consecutive ranges of the buffer;
// - all-gather: piece [off, off+len) of every rank's block lands at recv + q*count + off through a
//   receive datatype of len elements resized to an extent of `count` elements;
// - reduce-scatter: one MPI_Ireduce per destination rank and piece (each rank's block of the
//   send buffer is contiguous; a strided datatype under a reduction op is not portable MPI).
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

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

// ---- bf16 reductions ------------------------------------------------------------------------------
// kern::bf16 is a 16-bit struct; MPI hands the reductions raw uint16 arrays.
float bf16_to_float(uint16_t b) { return kern::bf16_to_float(kern::bf16{b}); }
uint16_t float_to_bf16(float f) { return kern::float_to_bf16(f).bits; }

void bf16_sum(void* in, void* inout, int* len, MPI_Datatype*) {
  const uint16_t* a = static_cast<const uint16_t*>(in);
  uint16_t* b = static_cast<uint16_t*>(inout);
  for (int i = 0; i < *len; ++i) b[i] = float_to_bf16(bf16_to_float(a[i]) + bf16_to_float(b[i]));
}

// The larger value (exact: no rounding); a NaN wins, so a NaN anywhere is seen everywhere.
void bf16_max(void* in, void* inout, int* len, MPI_Datatype*) {
  const uint16_t* a = static_cast<const uint16_t*>(in);
  uint16_t* b = static_cast<uint16_t*>(inout);
  for (int i = 0; i < *len; ++i) {
    const float x = bf16_to_float(a[i]), y = bf16_to_float(b[i]);
    if (x != x || x > y) b[i] = a[i];
  }
}

MPI_Datatype mpi_type(kern::DType dt) {
  switch (dt) {
    case kern::DType::F32:
      return MPI_FLOAT;
    case kern::DType::BF16:
      return MPI_UINT16_T;
    case kern::DType::F64:
      return MPI_DOUBLE;
    case kern::DType::I32:
      return MPI_INT32_T;
    case kern::DType::I64:
      return MPI_INT64_T;
    case kern::DType::U64:
      return MPI_UINT64_T;
  }
  throw std::invalid_argument("mpi communicator: unknown dtype");
}

class MpiComm;

// Waits for every request: spins on MPI_Testall first (collectives usually finish within
// microseconds of the last rank arriving), then sleeps between polls so a long wait does not burn
// a core; past the communicator's timeout it ends the job with kExitCollectiveTimeout.
void wait_with_deadline(std::vector<MPI_Request>& reqs, const MpiComm& comm, const std::string& tag);

class MpiWork : public Work {
 public:
  MpiWork(const MpiComm& c, std::string tag) : comm_(c), tag_(std::move(tag)) {}
  std::vector<MPI_Request> reqs;
  MPI_Request* add() { return &reqs.emplace_back(MPI_REQUEST_NULL); }
  void wait() override { wait_with_deadline(reqs, comm_, tag_); }
  bool test() override {
    int done = 1;
    if (!reqs.empty()) check(MPI_Testall((int)reqs.size(), reqs.data(), &done, MPI_STATUSES_IGNORE), "MPI_Testall");
    return done != 0;
  }
  // Communicator::track wraps every MpiWork and waits for it before it is destroyed.

 private:
  const MpiComm& comm_;
  std::string tag_;
};

// A derived datatype freed when the scope ends (MPI lets pending operations finish with it).
struct TypeGuard {
  MPI_Datatype t = MPI_DATATYPE_NULL;
  ~TypeGuard() {
    if (t != MPI_DATATYPE_NULL) MPI_Type_free(&t);
  }
};

class MpiComm : public Communicator {
 public:
  explicit MpiComm(int64_t max_chunk) : max_chunk_(max_chunk) {
    MPI_Comm_dup(MPI_COMM_WORLD, &comm_);
    // Errors come back as codes (turned into exceptions naming the call), not silent aborts.
    MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
    check(MPI_Op_create(&bf16_sum, 1, &bf16_sum_), "MPI_Op_create");
    check(MPI_Op_create(&bf16_max, 1, &bf16_max_), "MPI_Op_create");
    placement_ = gather_placement();
  }
  ~MpiComm() override {
    MPI_Op_free(&bf16_sum_);
    MPI_Op_free(&bf16_max_);
    MPI_Comm_free(&comm_);
    int fin = 0;
    MPI_Finalized(&fin);
    if (!fin) MPI_Finalize();
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const char* backend() const override { return "mpi"; }
  std::string placement() const override { return placement_; }

  void barrier() override {
    std::vector<MPI_Request> req(1, MPI_REQUEST_NULL);
    check(MPI_Ibarrier(comm_, &req[0]), "MPI_Ibarrier");
    wait_with_deadline(req, *this, "barrier");
  }
  [[noreturn]] void abort(int code) override {
    MPI_Abort(MPI_COMM_WORLD, code);
    std::exit(code);
  }

 protected:
  std::unique_ptr<Work> start_all_gather(const void* send, void* recv, int64_t n, kern::DType dt,
                                         const std::string& tag, kern::Context*) override {
    const MPI_Datatype t = mpi_type(dt);
    return split(tag, n, [&](int64_t off, int len, MpiWork& w) {
      if (len == n) {
        check(MPI_Iallgather(send, len, t, recv, len, t, comm_, w.add()), "MPI_Iallgather");
        return;
      }
      TypeGuard piece, strided;  // len elements, then the next rank's block `n` elements further
      check(MPI_Type_contiguous(len, t, &piece.t), "MPI_Type_contiguous");
      check(MPI_Type_create_resized(piece.t, 0, (MPI_Aint)(n * kern::dtype_size(dt)), &strided.t),
            "MPI_Type_create_resized");
      check(MPI_Type_commit(&strided.t), "MPI_Type_commit");
      check(MPI_Iallgather(at(send, off, dt), len, t, at(recv, off, dt), 1, strided.t, comm_, w.add()),
            "MPI_Iallgather");
    });
  }

  std::unique_ptr<Work> start_reduce_scatter(const void* send, void* recv, int64_t n, kern::DType dt, ReduceOp op,
                                             const std::string& tag, kern::Context*) override {
    return split(tag, n, [&](int64_t off, int len, MpiWork& w) {
      if (len == n) {
        check(MPI_Ireduce_scatter_block(send, recv, len, mpi_type(dt), mpi_op(dt, op), comm_, w.add()),
              "MPI_Ireduce_scatter_block");
        return;
      }
      for (int q = 0; q < size_; ++q)  // piece `off` of rank q's block goes to rank q
        check(MPI_Ireduce(at(send, (int64_t)q * n + off, dt), q == rank_ ? at(recv, off, dt) : nullptr, len,
                          mpi_type(dt), mpi_op(dt, op), q, comm_, w.add()),
              "MPI_Ireduce");
    });
  }

  std::unique_ptr<Work> start_all_reduce(void* data, int64_t n, kern::DType dt, ReduceOp op, const std::string& tag,
                                         kern::Context*) override {
    return split(tag, n, [&](int64_t off, int len, MpiWork& w) {
      check(MPI_Iallreduce(MPI_IN_PLACE, at(data, off, dt), len, mpi_type(dt), mpi_op(dt, op), comm_, w.add()),
            "MPI_Iallreduce");
    });
  }

  std::unique_ptr<Work> start_broadcast(void* data, int64_t n, kern::DType dt, int root, const std::string& tag,
                                        kern::Context*) override {
    return split(tag, n, [&](int64_t off, int len, MpiWork& w) {
      check(MPI_Ibcast(at(data, off, dt), len, mpi_type(dt), root, comm_, w.add()), "MPI_Ibcast");
    });
  }

 private:
  std::string placement_;
  // Every rank's node name, gathered with a plain MPI call (not a counted collective: the byte
  // counters cover training traffic only), as runs of consecutive ranks per node.
  std::string gather_placement() const {
    constexpr int kLen = 64;
    char mine[kLen] = {};
    if (const char* n = std::getenv("SLURMD_NODENAME"); n && *n) {
      std::snprintf(mine, kLen, "%s", n);
    } else {
      char host[MPI_MAX_PROCESSOR_NAME] = {};
      int len = 0;
      MPI_Get_processor_name(host, &len);
      std::snprintf(mine, kLen, "%s", host);
    }
    std::vector<char> all((size_t)size_ * kLen);
    // non-blocking + the stall deadline, like every other collective: a rank killed at start-up
    // must not leave the others blocked in MPI forever
    std::vector<MPI_Request> req(1, MPI_REQUEST_NULL);
    check(MPI_Iallgather(mine, kLen, MPI_CHAR, all.data(), kLen, MPI_CHAR, comm_, req.data()), "MPI_Iallgather");
    wait_with_deadline(req, *this, "allgather/nodes");
    std::string out;
    for (int r = 0; r < size_;) {
      const std::string node(&all[(size_t)r * kLen]);
      int e = r;
      while (e + 1 < size_ && node == &all[(size_t)(e + 1) * kLen]) ++e;
      out += (out.empty() ? "" : ", ") + node +
             (e == r ? " (rank " + std::to_string(r) + ")"
                     : " (ranks " + std::to_string(r) + "-" + std::to_string(e) + ")");
      r = e + 1;
    }
    return out;
  }

  MPI_Comm comm_;
  int rank_ = 0, size_ = 1;
  int64_t max_chunk_;
  MPI_Op bf16_sum_ = MPI_OP_NULL, bf16_max_ = MPI_OP_NULL;

  // One Work for a collective of n elements: fn(off, len, work) starts the MPI calls of each
  // consecutive piece [off, off + len), at most max_chunk_ long; one piece (len == n, possibly 0)
  // when n fits in one MPI call.
  template <class F>
  std::unique_ptr<Work> split(const std::string& tag, int64_t n, F&& fn) {
    auto w = std::make_unique<MpiWork>(*this, tag);
    if (n > max_chunk_) ++stats.split_calls;
    for (int64_t off = 0; off == 0 || off < n; off += max_chunk_) fn(off, (int)std::min(max_chunk_, n - off), *w);
    return w;
  }
  static char* at(void* p, int64_t elems, kern::DType dt) {
    return static_cast<char*>(p) + elems * (int64_t)kern::dtype_size(dt);
  }
  static const char* at(const void* p, int64_t elems, kern::DType dt) {
    return static_cast<const char*>(p) + elems * (int64_t)kern::dtype_size(dt);
  }

  MPI_Op mpi_op(kern::DType dt, ReduceOp op) const {
    if (dt == kern::DType::BF16) return op == ReduceOp::Sum ? bf16_sum_ : bf16_max_;
    return op == ReduceOp::Sum ? MPI_SUM : MPI_MAX;
  }
};

void wait_with_deadline(std::vector<MPI_Request>& reqs, const MpiComm& comm, const std::string& tag) {
  if (reqs.empty()) return;
  const double limit = comm.timeout();
  const auto start = std::chrono::steady_clock::now();
  for (long polls = 0;; ++polls) {
    int done = 0;
    check(MPI_Testall((int)reqs.size(), reqs.data(), &done, MPI_STATUSES_IGNORE), "MPI_Testall");
    if (done) return;
    if (polls < 20000) continue;  // ~ a few ms of spinning, like MPI_Wait
    std::this_thread::sleep_for(std::chrono::microseconds(polls < 40000 ? 50 : 500));
    const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (limit > 0 && waited > limit) {
      std::fprintf(stderr,
                   "mor-dist [rank %d/%d]: error: collective '%s' made no progress for %.0f s (%s): another rank is "
                   "stopped, hung or dead. Ending the job with exit status %d (--dist.timeout %g)\n",
                   comm.rank(), comm.size(), tag.c_str(), waited,
                   comm.context().empty() ? "outside training" : comm.context().c_str(), kExitCollectiveTimeout, limit);
      std::fflush(stderr);
      MPI_Abort(MPI_COMM_WORLD, kExitCollectiveTimeout);
      std::_Exit(kExitCollectiveTimeout);
    }
  }
}

int64_t chunk_limit(int64_t requested) {
  if (requested > 0) return std::min<int64_t>(requested, INT_MAX);
  if (const char* s = std::getenv("MOR_TEST_COMM_MAX_CHUNK")) {
    char* end = nullptr;
    const long long v = std::strtoll(s, &end, 10);
    if (end == s || *end != '\0' || v < 1)
      throw std::invalid_argument(std::string("MOR_TEST_COMM_MAX_CHUNK='") + s +
                                  "': expected a positive element count");
    return std::min<int64_t>(v, INT_MAX);
  }
  return INT_MAX;
}

}  // namespace

std::unique_ptr<Communicator> make_mpi_comm(int* argc, char*** argv, int64_t max_chunk) {
  const int64_t limit = chunk_limit(max_chunk);
  int init = 0;
  MPI_Initialized(&init);
  if (!init) {
    int provided = 0;
    check(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
  }
  return std::make_unique<MpiComm>(limit);
}

}  // namespace mor::dist
