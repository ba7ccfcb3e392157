// The default thread count (launcher/threads.h): SLURM's compressed task counts, the ranks on
// this node from each launcher's variables, and the arithmetic with its stated reason.
// ThreadsUnderMpirun runs in every rank of `mpirun --oversubscribe -np 4` (ctest threads_mpirun_np4).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sched.h>

#include <cstdlib>
#include <map>

#include "launcher/threads.h"

using namespace mor;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

namespace {

EnvFn fake_env(std::map<std::string, std::string> vars) {
  auto m = std::make_shared<std::map<std::string, std::string>>(std::move(vars));
  return [m](const char* k) -> const char* {
    auto it = m->find(k);
    return it == m->end() ? nullptr : it->second.c_str();
  };
}

TEST(SlurmTasksPerNode, ExpandsTheCompressedForm) {
  EXPECT_THAT(expand_slurm_tasks_per_node("4"), ElementsAre(4));
  EXPECT_THAT(expand_slurm_tasks_per_node("2(x3),1"), ElementsAre(2, 2, 2, 1));
  EXPECT_THAT(expand_slurm_tasks_per_node("1,3(x2)"), ElementsAre(1, 3, 3));
  EXPECT_THAT(expand_slurm_tasks_per_node("16(x1)"), ElementsAre(16));
  EXPECT_THAT(expand_slurm_tasks_per_node("8,8,8"), ElementsAre(8, 8, 8));
}

TEST(SlurmTasksPerNode, RejectsMalformedStrings) {
  for (const char* bad : {"", ",", "2,", ",2", "2(x)", "2(3)", "2(x3", "2x3", "a", "0", "2(x0)", "-1", "2 (x3)",
                          "2(x3),", "99999999999", "1(x99999999)"})
    EXPECT_TRUE(expand_slurm_tasks_per_node(bad).empty()) << "'" << bad << "'";
}

TEST(LocalRanks, OpenMpiFirst) {
  std::string from;
  EXPECT_EQ(
      local_ranks_from_env(fake_env({{"OMPI_COMM_WORLD_LOCAL_SIZE", "4"}, {"SLURM_TASKS_PER_NODE", "8"}}), 4, &from),
      4);
  EXPECT_EQ(from, "OMPI_COMM_WORLD_LOCAL_SIZE");
  EXPECT_EQ(local_ranks_from_env(fake_env({{"MPI_LOCALNRANKS", "3"}}), 6, &from), 3);
  EXPECT_EQ(from, "MPI_LOCALNRANKS");
}

TEST(LocalRanks, SlurmStepCountIndexedByNodeId) {
  std::string from;
  // srun -n 7 over three nodes: 2(x3),1; this is node 3 (0-based) with 1 task, node 1 has 2.
  auto env =
      fake_env({{"SLURM_STEP_TASKS_PER_NODE", "2(x3),1"}, {"SLURM_TASKS_PER_NODE", "4(x2)"}, {"SLURM_NODEID", "3"}});
  EXPECT_EQ(local_ranks_from_env(env, 7, &from), 1);
  EXPECT_EQ(from, "SLURM_STEP_TASKS_PER_NODE");
  EXPECT_EQ(local_ranks_from_env(fake_env({{"SLURM_STEP_TASKS_PER_NODE", "2(x3),1"}, {"SLURM_NODEID", "1"}}), 7, &from),
            2);
  // The job-level count when srun did not set the step's (an MPI launcher inside an allocation).
  EXPECT_EQ(local_ranks_from_env(fake_env({{"SLURM_TASKS_PER_NODE", "4(x2)"}, {"SLURM_NODEID", "1"}}), 8, &from), 4);
  EXPECT_EQ(from, "SLURM_TASKS_PER_NODE");
  // srun -n 4 on one node (the README's example): 4 ranks here.
  EXPECT_EQ(local_ranks_from_env(fake_env({{"SLURM_STEP_TASKS_PER_NODE", "4"}, {"SLURM_NODEID", "0"}}), 4, &from), 4);
}

TEST(LocalRanks, FallbacksAndCaps) {
  std::string from;
  // No node id: usable only if every node has the same count.
  EXPECT_EQ(local_ranks_from_env(fake_env({{"SLURM_STEP_TASKS_PER_NODE", "3(x2)"}}), 6, &from), 3);
  EXPECT_EQ(local_ranks_from_env(fake_env({{"SLURM_STEP_TASKS_PER_NODE", "3,1"}}), 4, &from), 4);
  EXPECT_EQ(from, "the world size; no launcher variable found");
  // A node id outside the list, a malformed list: the next source.
  EXPECT_EQ(
      local_ranks_from_env(
          fake_env({{"SLURM_STEP_TASKS_PER_NODE", "2,2"}, {"SLURM_NODEID", "5"}, {"SLURM_TASKS_PER_NODE", "1,2(x5)"}}),
          11, &from),
      2);
  EXPECT_EQ(from, "SLURM_TASKS_PER_NODE");
  EXPECT_EQ(local_ranks_from_env(fake_env({{"OMPI_COMM_WORLD_LOCAL_SIZE", "x"}, {"MPI_LOCALNRANKS", "2"}}), 2, &from),
            2);
  EXPECT_EQ(from, "MPI_LOCALNRANKS");
  // Never more than the world; a single process is alone whatever its allocation says.
  EXPECT_EQ(local_ranks_from_env(fake_env({{"SLURM_TASKS_PER_NODE", "8"}}), 2, &from), 2);
  EXPECT_EQ(
      local_ranks_from_env(fake_env({{"SLURM_TASKS_PER_NODE", "8"}, {"OMPI_COMM_WORLD_LOCAL_SIZE", "4"}}), 1, &from),
      1);
  EXPECT_EQ(from, "");
}

ThreadInputs inputs(int affinity, int local, const std::string& from = "OMPI_COMM_WORLD_LOCAL_SIZE") {
  ThreadInputs in;
  in.affinity_cpus = affinity;
  in.launcher_cpus = affinity;  // the launcher's mask is the same: not bound per rank
  in.local_ranks = local;
  in.local_ranks_from = local > 1 ? from : "";
  return in;
}

TEST(ChooseThreads, SplitsTheMaskAmongTheRanksOnThisNode) {
  ThreadChoice c = choose_threads(inputs(2, 4));  // the case: 4 ranks on a 2-core node
  EXPECT_EQ(c.threads, 1);
  EXPECT_EQ(c.reason, "2 CPUs in affinity mask / 4 ranks on this node (OMPI_COMM_WORLD_LOCAL_SIZE) → 1");
  c = choose_threads(inputs(16, 4, "SLURM_STEP_TASKS_PER_NODE"));
  EXPECT_EQ(c.threads, 4);
  EXPECT_EQ(c.reason, "16 CPUs in affinity mask / 4 ranks on this node (SLURM_STEP_TASKS_PER_NODE) → 4");
  EXPECT_EQ(choose_threads(inputs(8, 3)).threads, 2);  // rounds down: never more threads than CPUs
  c = choose_threads(inputs(1, 1));
  EXPECT_EQ(c.threads, 1);
  EXPECT_EQ(c.reason, "1 CPU in affinity mask / 1 rank on this node → 1");
  EXPECT_EQ(choose_threads(inputs(2, 1)).threads, 2);
}

TEST(ChooseThreads, OmpNumThreadsWins) {
  ThreadInputs in = inputs(2, 4);
  in.omp_num_threads = 3;
  in.cpus_per_task = 1;
  const ThreadChoice c = choose_threads(in);
  EXPECT_EQ(c.threads, 3);
  EXPECT_EQ(c.reason, "OMP_NUM_THREADS=3");
}

TEST(ChooseThreads, SlurmCpusPerTaskCaps) {
  ThreadInputs in = inputs(8, 2, "SLURM_STEP_TASKS_PER_NODE");
  in.cpus_per_task = 2;  // srun -n 2 -c 2 on an 8-CPU node without binding
  ThreadChoice c = choose_threads(in);
  EXPECT_EQ(c.threads, 2);
  EXPECT_THAT(c.reason, HasSubstr("→ 4, capped by SLURM_CPUS_PER_TASK=2 → 2"));
  in.cpus_per_task = 8;  // more than the share: the share
  EXPECT_EQ(choose_threads(in).threads, 4);
  in = inputs(2, 4, "SLURM_STEP_TASKS_PER_NODE");
  in.cpus_per_task = 2;  // srun -n 4 -c 2 --overcommit on 2 cores
  EXPECT_EQ(choose_threads(in).threads, 1);
}

TEST(ChooseThreads, RanksBoundByTheLauncher) {
  // Each of 4 ranks bound to its own 2 of the launcher's 8 CPUs: the whole mask is its own.
  ThreadInputs in = inputs(2, 4);
  in.launcher_cpus = 8;
  ThreadChoice c = choose_threads(in);
  EXPECT_EQ(c.threads, 2);
  EXPECT_EQ(
      c.reason,
      "2 CPUs in this rank's affinity mask (the launcher's has 8), 4 ranks on this node (OMPI_COMM_WORLD_LOCAL_SIZE) → "
      "1 rank per mask → 2");
  // Bound to a socket (16 of 32 CPUs), two ranks per socket.
  in = inputs(16, 4);
  in.launcher_cpus = 32;
  EXPECT_EQ(choose_threads(in).threads, 8);
  // 4 ranks bound to single cores of a 2-core node (two per core): 1 thread.
  in = inputs(1, 4);
  in.launcher_cpus = 2;
  EXPECT_EQ(choose_threads(in).threads, 1);
  // A single process uses its mask, whatever its parent had.
  in = inputs(2, 1);
  in.launcher_cpus = 8;
  EXPECT_EQ(choose_threads(in).threads, 2);
}

TEST(ChooseThreads, TrainThreadsOptionWins) {
  const ThreadChoice c = default_threads(5, 4);
  EXPECT_EQ(c.threads, 5);
  EXPECT_EQ(c.reason, "train.threads = 5");
}

TEST(ThreadInputs, ReadsThisProcess) {
  cpu_set_t set;
  ASSERT_EQ(sched_getaffinity(0, sizeof set, &set), 0);
  const ThreadInputs in = thread_inputs(1, fake_env({{"OMP_NUM_THREADS", "4,2"}, {"SLURM_CPUS_PER_TASK", "3"}}));
  EXPECT_EQ(in.affinity_cpus, CPU_COUNT(&set));
  EXPECT_EQ(in.omp_num_threads, 4);  // the first level of a nesting list
  EXPECT_EQ(in.cpus_per_task, 3);
  EXPECT_EQ(in.local_ranks, 1);
  EXPECT_EQ(thread_inputs(1, fake_env({{"OMP_NUM_THREADS", "0"}})).omp_num_threads, 0);
  EXPECT_EQ(thread_inputs(1, fake_env({{"OMP_NUM_THREADS", "many"}})).omp_num_threads, 0);
}

// Under `mpirun --oversubscribe -np 4` (ctest threads_mpirun_np4), in every rank: the launcher's
// own variables give 4 ranks on this node, and the default is this rank's share of the CPUs.
TEST(ThreadsUnderMpirun, EachRankTakesItsShare) {
  const char* world = std::getenv("OMPI_COMM_WORLD_SIZE");
  if (!world || std::atoi(world) != 4) GTEST_SKIP() << "runs under mpirun -np 4 only";
  ThreadInputs in = thread_inputs(4);
  in.omp_num_threads = 0;  // what the default would be without OMP_NUM_THREADS
  EXPECT_EQ(in.local_ranks, 4);
  EXPECT_EQ(in.local_ranks_from, "OMPI_COMM_WORLD_LOCAL_SIZE");
  const ThreadChoice c = choose_threads(in);
  std::printf("rank %s: %d threads (%s)\n", std::getenv("OMPI_COMM_WORLD_RANK"), c.threads, c.reason.c_str());
  EXPECT_GE(c.threads, 1);
  EXPECT_LE(c.threads * 4, std::max(4, in.launcher_cpus > 0 ? in.launcher_cpus : in.affinity_cpus))
      << "4 ranks would oversubscribe the node: " << c.reason;
  if (in.launcher_cpus <= 2 && in.affinity_cpus <= 2) {  // the 2-core machine
    EXPECT_EQ(c.threads, 1) << c.reason;
  }
}

}  // namespace
