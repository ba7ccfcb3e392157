// The communicator API without MPI: the single-process communicator implements every typed
// collective, and the Work destruction contract (dist/communicator.h) holds for any backend:
// an unfinished handle is waited on when destroyed, a failure nobody saw ends the job through
// abort(), and nothing ever reaches std::terminate. MPI runs: tests/test_comm_mpi.cpp.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "dist/communicator.h"

using namespace mor;
using kern::DType;

TEST(DType, SizesAndNames) {
  EXPECT_EQ(kern::dtype_size(DType::F32), 4u);
  EXPECT_EQ(kern::dtype_size(DType::BF16), 2u);
  EXPECT_EQ(kern::dtype_size(DType::F64), 8u);
  EXPECT_EQ(kern::dtype_size(DType::I32), 4u);
  EXPECT_EQ(kern::dtype_size(DType::I64), 8u);
  EXPECT_EQ(kern::dtype_size(DType::U64), 8u);
  EXPECT_STREQ(kern::to_string(DType::BF16), "bf16");
  EXPECT_STREQ(kern::to_string(DType::U64), "uint64");
  EXPECT_STREQ(dist::to_string(dist::ReduceOp::Max), "max");
}

TEST(SingleProcessComm, EveryCollectiveIsTheIdentityAndSendsNothing) {
  auto c = dist::make_single_process_comm();
  EXPECT_EQ(c->size(), 1);
  EXPECT_STREQ(c->backend(), "single");
  std::vector<uint64_t> a = {1, uint64_t(1) << 63, 7}, b(3, 0);
  c->all_gather(a.data(), b.data(), 3, "allgather/x");
  EXPECT_EQ(a, b);
  std::vector<int32_t> i = {-4, 5}, j(2, 0);
  c->reduce_scatter(i.data(), j.data(), 2, "reducescatter/x");
  EXPECT_EQ(i, j);
  double d[2] = {1.5, -2};
  c->all_reduce_sum(d, 2, "allreduce/x");
  c->all_reduce_max(d, 2, "allreduce/x");
  EXPECT_EQ(d[0], 1.5);
  EXPECT_EQ(d[1], -2);
  uint16_t h[2] = {0x3f80, 0x7fc1};
  c->all_reduce(h, 2, DType::BF16, dist::ReduceOp::Sum, "allreduce/bf16");
  std::vector<uint16_t> hg(2);
  c->iall_gather(h, hg.data(), 2, DType::BF16, "allgather/bf16")->wait();
  EXPECT_EQ(hg[1], 0x7fc1);
  int64_t x = 9;
  c->broadcast(&x, 1, 0, "bcast/x");
  EXPECT_EQ(x, 9);
  kern::Context ctx;
  float f = 2.f, g = 0.f;
  auto w = c->iall_gather(&f, &g, 1, "allgather/ctx", &ctx);
  EXPECT_TRUE(w->test());
  w->wait();
  EXPECT_EQ(g, 2.f);
  c->barrier();
  EXPECT_EQ(c->stats.total_bytes(), 0u);
  EXPECT_EQ(c->stats.calls["allreduce/x"], 2u);
  EXPECT_EQ(c->stats.calls["allgather/x"], 1u);
  EXPECT_THROW(c->broadcast(&x, 1, 1, "bcast/x"), std::invalid_argument);
  EXPECT_THROW(c->all_reduce_sum(d, -1, "allreduce/x"), std::invalid_argument);
}

// ---- the Work destruction contract, on a backend whose handles we control ----------------------
namespace {

struct Script {
  int waits = 0, tests = 0;
  bool fail = false;  // wait() throws
};

class ScriptedWork : public dist::Work {
 public:
  explicit ScriptedWork(Script& s) : s_(s) {}
  void wait() override {
    ++s_.waits;
    if (s_.fail) throw std::runtime_error("link down");
  }
  bool test() override {
    ++s_.tests;
    return false;
  }

 private:
  Script& s_;
};

// A world of two whose collectives never finish by themselves; abort() ends the process.
class ScriptedComm : public dist::Communicator {
 public:
  Script script;
  int rank() const override { return 0; }
  int size() const override { return 2; }
  const char* backend() const override { return "scripted"; }
  void barrier() override {}
  [[noreturn]] void abort(int code) override {
    std::fprintf(stderr, "scripted abort(%d)\n", code);
    std::_Exit(code);
  }

 protected:
  std::unique_ptr<dist::Work> start_all_gather(const void*, void*, int64_t, DType, const std::string&,
                                               kern::Context*) override {
    return std::make_unique<ScriptedWork>(script);
  }
  std::unique_ptr<dist::Work> start_reduce_scatter(const void*, void*, int64_t, DType, dist::ReduceOp,
                                                   const std::string&, kern::Context*) override {
    return std::make_unique<ScriptedWork>(script);
  }
  std::unique_ptr<dist::Work> start_all_reduce(void*, int64_t, DType, dist::ReduceOp, const std::string&,
                                               kern::Context*) override {
    return std::make_unique<ScriptedWork>(script);
  }
  std::unique_ptr<dist::Work> start_broadcast(void*, int64_t, DType, int, const std::string&, kern::Context*) override {
    return std::make_unique<ScriptedWork>(script);
  }
};

}  // namespace

TEST(CommWork, DestroyingAnUnfinishedHandleWaitsForIt) {
  ScriptedComm c;
  float a[2] = {}, b[4] = {};
  {
    auto w = c.iall_gather(a, b, 2, "allgather/t");
    EXPECT_FALSE(w->test());
  }
  EXPECT_EQ(c.script.waits, 1);
  EXPECT_EQ(c.stats.bytes["allgather/t"], 2 * sizeof(float) * 1);
  // Waited once only: a handle waited on explicitly is not waited on again.
  c.iall_gather(a, b, 2, "allgather/t")->wait();
  EXPECT_EQ(c.script.waits, 2);
}

TEST(CommWork, AHandlePendingDuringUnwindingIsWaitedOn) {
  ScriptedComm c;
  float a[2] = {}, b[4] = {};
  EXPECT_THROW(
      {
        auto w = c.ireduce_scatter(b, a, 2, "reducescatter/t");
        throw std::runtime_error("compute failed");
      },
      std::runtime_error);
  EXPECT_EQ(c.script.waits, 1);
}

// The caller saw the failure (wait() threw): the destructor neither waits again nor aborts.
TEST(CommWork, AFailureThrownToTheCallerIsNotReportedAgain) {
  ScriptedComm c;
  c.script.fail = true;
  double d = 1;
  auto w = c.iall_reduce(&d, 1, DType::F64, dist::ReduceOp::Sum, "allreduce/t");
  EXPECT_THROW(w->wait(), std::runtime_error);
  EXPECT_THROW(w->wait(), std::runtime_error);  // still failed, not silently complete
  w.reset();
  EXPECT_EQ(c.script.waits, 1);
}

// A failure that surfaces only in the destructor ends the job (abort), never std::terminate.
TEST(CommWorkDeathTest, AFailureSeenOnlyByTheDestructorEndsTheJob) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        ScriptedComm c;
        c.script.fail = true;
        int64_t x = 0;
        c.ibroadcast(&x, 1, DType::I64, 0, "bcast/t");  // the handle is a temporary: destroyed unfinished
      },
      ::testing::ExitedWithCode(dist::kExitCollectiveFailed),
      "collective 'bcast/t' failed while its handle was destroyed: link down.*scripted abort\\(1\\)");
}
