#include "launcher/metrics_file.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

#include "launcher/log.h"
#include "launcher/options.h"

namespace mor {

namespace {
std::string depth_json(const std::vector<int64_t>& at) {
  std::ostringstream o;
  o << "[";
  for (size_t d = 0; d < at.size(); ++d) o << (d ? "," : "") << at[d];
  return o.str() + "]";
}
}  // namespace

std::string json_num(double v, const char* fmt) {
  if (!std::isfinite(v)) return "null";
  char b[64];
  std::snprintf(b, sizeof b, fmt, v);
  return b;
}

void MetricsFile::open(const std::string& path) {
  out_.open(path, std::ios::app);
  if (!out_) throw ConfigError("train.metrics", "cannot open '" + path + "' for writing");
}

void MetricsFile::window(const LogWindow& w, const WindowRates& r, int world) {
  if (!out_.is_open()) return;
  char json[1024];
  std::snprintf(
      json, sizeof json,
      "{\"step\":%lld,\"loss\":%s,\"ce\":%s,\"aux\":%s,\"bal\":%s,\"z\":%s,\"lr\":%.9g,\"grad_norm\":%s,"
      "\"tokens_per_s\":%.1f,\"gflops\":%.2f,\"mfu\":%.4f,\"world\":%d,\"comm_bytes_per_rank\":%llu,\"comm_wait_s\":%."
      "4f,"
      "\"step_time_s\":%.6f,\"window_time_s\":%.4f,\"window_steps\":%d,\"elapsed_s\":%.3f,\"tokens_seen\":%.0f,"
      "\"skipped_nonfinite\":%lld,\"job_id\":\"%s\",\"restart\":%d,\"depth_tokens\":",
      (long long)w.step, json_num(r.loss).c_str(), json_num(w.loss.ce).c_str(),
      json_num(w.loss.term("aux"), "%.9g").c_str(), json_num(w.loss.term("bal"), "%.9g").c_str(),
      json_num(w.loss.term("z") + w.loss.term("ec_z"), "%.9g").c_str(), w.lr, json_num(w.grad_norm, "%.9g").c_str(),
      r.tokens_per_s, r.gflops, r.mfu, world, (unsigned long long)w.comm_bytes, w.comm_wait_s,
      w.seconds / std::max(1, w.steps), w.seconds, w.steps, r.elapsed_s, r.tokens_seen, (long long)w.skipped_nonfinite,
      run_context().job_id.c_str(), run_context().restart);
  out_ << json << depth_json(w.tokens_at_depth) << ",\"comm\":{";
  bool first = true;  // cumulative bytes sent by this rank, per collective and unit
  for (const auto& [tag, b] : w.comm_by_tag) {
    out_ << (first ? "" : ",") << "\"" << tag << "\":" << b;
    first = false;
  }
  out_ << "},\"comm_wait\":{";  // cumulative seconds this rank was blocked, per collective and unit
  first = true;
  for (const auto& [tag, s] : w.comm_wait_by_tag) {
    out_ << (first ? "" : ",") << "\"" << tag << "\":" << json_num(s, "%.6f");
    first = false;
  }
  out_ << "}}\n" << std::flush;
}

void MetricsFile::eval(int64_t step, double val_loss, double elapsed_s) {
  if (!out_.is_open()) return;
  out_ << "{\"step\":" << step << ",\"val_loss\":" << json_num(val_loss)
       << ",\"elapsed_s\":" << json_num(elapsed_s, "%.3f") << ",\"job_id\":\"" << run_context().job_id
       << "\",\"restart\":" << run_context().restart << "}\n"
       << std::flush;
}

}  // namespace mor
