// How many CPU threads a rank uses when --train.threads is 0 (the default).
//
// OMP_NUM_THREADS wins when set. Otherwise: the CPUs this process may run on (its affinity
// mask, sched_getaffinity), shared fairly among the ranks of this job on this node, and at most
// SLURM_CPUS_PER_TASK. The ranks on this node come from the launcher's environment: Open MPI's
// OMPI_COMM_WORLD_LOCAL_SIZE, MPICH's MPI_LOCALNRANKS, or SLURM's SLURM_STEP_TASKS_PER_NODE /
// SLURM_TASKS_PER_NODE (compressed "2(x3),1", indexed by SLURM_NODEID). A launcher that binds
// each rank to its own CPUs leaves a smaller mask than its own: the rank then shares its mask only
// with the ranks bound to the same CPUs (local ranks x mask / launcher's mask).
#pragma once
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

namespace mor {

struct ThreadChoice {
  int threads = 1;
  std::string reason;  // e.g. "2 CPUs in affinity mask / 4 ranks on this node (OMPI_COMM_WORLD_LOCAL_SIZE) → 1"
};

// What the default depends on; read from the process by thread_inputs(), made up by the tests.
struct ThreadInputs {
  int omp_num_threads = 0;       // OMP_NUM_THREADS (0: unset or not a positive number)
  int affinity_cpus = 1;         // CPUs in this process's affinity mask
  int launcher_cpus = 0;         // CPUs in the parent process's (mpirun, orted, slurmstepd) mask; 0 = unknown
  int cpus_per_task = 0;         // SLURM_CPUS_PER_TASK (0: unset)
  int local_ranks = 1;           // ranks of this job on this node
  std::string local_ranks_from;  // the variable local_ranks came from ("" = a single process)
};

// SLURM's compressed per-node task counts, "2(x3),1" -> {2, 2, 2, 1}; empty if malformed.
std::vector<int> expand_slurm_tasks_per_node(const std::string& s);

using EnvFn = std::function<const char*(const char*)>;

// Ranks of this job on this node, from the launcher's environment (see above), at most `world`
// (a single process is 1 whatever an enclosing allocation says). *from names the variable.
int local_ranks_from_env(const EnvFn& env, int world, std::string* from);

// Everything the choice needs, from this process (environment, affinity masks).
ThreadInputs thread_inputs(
    int world, const EnvFn& env = [](const char* k) { return static_cast<const char*>(std::getenv(k)); });

// The arithmetic, with the reason spelled out.
ThreadChoice choose_threads(const ThreadInputs& in);

// What `mor-dist train` uses: --train.threads when > 0, else choose_threads(thread_inputs(world)).
ThreadChoice default_threads(int requested, int world);

}  // namespace mor
