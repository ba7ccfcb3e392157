#include "launcher/threads.h"

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>

namespace mor {

namespace {

// A positive decimal integer filling the whole string (leading/trailing blanks allowed); 0 otherwise.
int positive_int(const char* s) {
  if (!s) return 0;
  while (std::isspace((unsigned char)*s)) ++s;
  if (!std::isdigit((unsigned char)*s)) return 0;
  char* end = nullptr;
  const long v = std::strtol(s, &end, 10);
  while (std::isspace((unsigned char)*end)) ++end;
  if (*end != '\0' || v < 1 || v > 1 << 20) return 0;
  return (int)v;
}

// CPUs in the affinity mask of `pid` (0 = this process); 0 if it cannot be read.
int affinity_count(pid_t pid) {
  // Start with 1024 CPUs and grow: sched_getaffinity fails with EINVAL when the mask is too small.
  for (size_t ncpu = 1024; ncpu <= (size_t{1} << 20); ncpu *= 4) {
    cpu_set_t* set = CPU_ALLOC(ncpu);
    if (!set) return 0;
    const size_t bytes = CPU_ALLOC_SIZE(ncpu);
    CPU_ZERO_S(bytes, set);
    const int rc = sched_getaffinity(pid, bytes, set);
    const int n = rc == 0 ? CPU_COUNT_S(bytes, set) : 0;
    CPU_FREE(set);
    if (rc == 0) return n;
    if (errno != EINVAL) return 0;
  }
  return 0;
}

std::string plural(int n, const char* one, const char* many) { return std::to_string(n) + " " + (n == 1 ? one : many); }

}  // namespace

std::vector<int> expand_slurm_tasks_per_node(const std::string& s) {
  // Grammar: item (',' item)*, item = count | count '(x' repeat ')'.
  std::vector<int> out;
  size_t i = 0;
  auto number = [&](int& v) {
    const size_t start = i;
    long x = 0;
    while (i < s.size() && std::isdigit((unsigned char)s[i]) && x <= 1 << 20) x = 10 * x + (s[i++] - '0');
    if (i == start || x < 1 || x > 1 << 20) return false;
    v = (int)x;
    return true;
  };
  while (true) {
    int count = 0, repeat = 1;
    if (!number(count)) return {};
    if (i < s.size() && s[i] == '(') {
      if (s.compare(i, 2, "(x") != 0) return {};
      i += 2;
      if (!number(repeat) || i >= s.size() || s[i] != ')') return {};
      ++i;
    }
    if (out.size() + repeat > (1 << 20)) return {};
    out.insert(out.end(), repeat, count);
    if (i == s.size()) return out;
    if (s[i] != ',') return {};
    ++i;
  }
}

int local_ranks_from_env(const EnvFn& env, int world, std::string* from) {
  auto done = [&](int n, const std::string& name) {
    if (from) *from = name;
    return n;
  };
  if (world <= 1) return done(1, "");
  // Launcher-specific counts first: they are exact for the processes they started. SLURM's
  // step-level count next (srun), then the job-level one (an MPI launcher inside an allocation
  // that did not say).
  for (const char* v : {"OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS"})
    if (const int n = positive_int(env(v))) return done(std::min(n, world), v);
  for (const char* v : {"SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE"}) {
    const char* s = env(v);
    if (!s) continue;
    const std::vector<int> per_node = expand_slurm_tasks_per_node(s);
    if (per_node.empty()) continue;
    const char* node_id = env("SLURM_NODEID");
    int n = 0;
    if (node_id && std::isdigit((unsigned char)node_id[0])) {
      const long id = std::strtol(node_id, nullptr, 10);
      if (id >= 0 && id < (long)per_node.size()) n = per_node[id];
    } else if (std::all_of(per_node.begin(), per_node.end(), [&](int x) { return x == per_node[0]; })) {
      n = per_node[0];  // no node id, but every node has the same count
    }
    if (n > 0) return done(std::min(n, world), v);
  }
  // Several ranks but no launcher variable says how they are spread: assume all on this node
  // (fewer threads than possible rather than oversubscribed cores).
  return done(world, "the world size; no launcher variable found");
}

ThreadInputs thread_inputs(int world, const EnvFn& env) {
  ThreadInputs in;
  if (const char* omp = env("OMP_NUM_THREADS")) {  // "4" or a nesting list "4,2": the first level
    const std::string first = std::string(omp).substr(0, std::string(omp).find(','));
    in.omp_num_threads = positive_int(first.c_str());
  }
  in.affinity_cpus = affinity_count(0);
  if (in.affinity_cpus < 1) in.affinity_cpus = std::max(1L, sysconf(_SC_NPROCESSORS_ONLN));
  const pid_t parent = getppid();
  in.launcher_cpus = parent > 1 ? affinity_count(parent) : 0;  // 1: orphaned, init's mask says nothing
  in.cpus_per_task = positive_int(env("SLURM_CPUS_PER_TASK"));
  in.local_ranks = local_ranks_from_env(env, world, &in.local_ranks_from);
  return in;
}

ThreadChoice choose_threads(const ThreadInputs& in) {
  ThreadChoice c;
  if (in.omp_num_threads > 0) {
    c.threads = in.omp_num_threads;
    c.reason = "OMP_NUM_THREADS=" + std::to_string(in.omp_num_threads);
    return c;
  }
  const int a = std::max(1, in.affinity_cpus), n = std::max(1, in.local_ranks);
  const std::string ranks = plural(n, "rank", "ranks") + " on this node" +
                            (in.local_ranks_from.empty() ? "" : " (" + in.local_ranks_from + ")");
  if (n > 1 && in.launcher_cpus > a) {
    // The launcher bound this rank to part of its own CPUs: the ranks are spread over the
    // launcher's CPUs, so about n * a / launcher_cpus of them share this rank's mask.
    const int sharing = std::clamp((int)(((long)n * a + in.launcher_cpus - 1) / in.launcher_cpus), 1, n);
    c.threads = std::max(1, a / sharing);
    c.reason = plural(a, "CPU", "CPUs") + " in this rank's affinity mask (the launcher's has " +
               std::to_string(in.launcher_cpus) + "), " + ranks + " → " + plural(sharing, "rank", "ranks") +
               " per mask → " + std::to_string(c.threads);
  } else {
    c.threads = std::max(1, a / n);
    c.reason = plural(a, "CPU", "CPUs") + " in affinity mask / " + ranks + " → " + std::to_string(c.threads);
  }
  if (in.cpus_per_task > 0 && in.cpus_per_task < c.threads) {
    c.threads = in.cpus_per_task;
    c.reason +=
        ", capped by SLURM_CPUS_PER_TASK=" + std::to_string(in.cpus_per_task) + " → " + std::to_string(c.threads);
  }
  return c;
}

ThreadChoice default_threads(int requested, int world) {
  if (requested > 0) return {requested, "train.threads = " + std::to_string(requested)};
  return choose_threads(thread_inputs(world));
}

}  // namespace mor
