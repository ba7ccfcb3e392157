#include "launcher/log.h"

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <vector>

namespace mor {

static std::string env(const char* k) {
  const char* v = std::getenv(k);
  return v ? v : "";
}

const RunContext& run_context() {
  static const RunContext ctx = [] {
    RunContext c;
    c.job_id = env("SLURM_JOB_ID");
    c.restart = std::atoi(env("SLURM_RESTART_COUNT").c_str());
    c.nodelist = env("SLURM_JOB_NODELIST");
    const std::string lr = !env("SLURM_LOCALID").empty() ? env("SLURM_LOCALID") : env("OMPI_COMM_WORLD_LOCAL_RANK");
    c.local_rank = std::atoi(lr.c_str());
    if (!c.job_id.empty()) c.prefix = "[job " + c.job_id + " restart " + std::to_string(c.restart) + "] ";
    return c;
  }();
  return ctx;
}

bool log_to_stderr = false;

void logf(const char* fmt, ...) {
  va_list ap, ap2;
  va_start(ap, fmt);
  va_copy(ap2, ap);
  const int n = std::vsnprintf(nullptr, 0, fmt, ap);
  va_end(ap);
  std::vector<char> buf(n + 1);
  std::vsnprintf(buf.data(), buf.size(), fmt, ap2);
  va_end(ap2);
  const std::string& p = run_context().prefix;
  bool line_start = true;
  std::string out;
  for (int i = 0; i < n; ++i) {
    if (line_start) out += p;
    out += buf[i];
    line_start = buf[i] == '\n';
  }
  FILE* f = log_to_stderr ? stderr : stdout;
  std::fputs(out.c_str(), f);
  std::fflush(f);
}

}  // namespace mor
