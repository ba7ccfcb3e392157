// Run context from the launcher's environment (SLURM or MPI) and the log
// function that stamps it on every line: under SLURM each line starts with
// "[job <id> restart <n>]" so a requeued run's log tells its attempts apart.
#pragma once
#include <string>

namespace mor {

struct RunContext {
  std::string job_id;    // SLURM_JOB_ID ("" outside SLURM)
  int restart = 0;       // SLURM_RESTART_COUNT: how often the job was requeued
  std::string nodelist;  // SLURM_JOB_NODELIST
  int local_rank = 0;    // rank on this node: SLURM_LOCALID / OMPI_COMM_WORLD_LOCAL_RANK (GPU choice)
  std::string prefix;    // "[job 123 restart 1] " or ""
};
const RunContext& run_context();

// printf to stdout (stderr when log_to_stderr) with the run-context prefix on every line; flushes.
void logf(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
// Set by commands whose stdout is their data (generate): the log goes to stderr instead.
extern bool log_to_stderr;

}  // namespace mor
