// What a training run tells its user: one console line per logging window (with progress,
// elapsed time and an ETA), the metrics JSONL (launcher/metrics_file.h), and the summary at the
// end. Only the lead rank (rank 0) writes; every number arrives already summed over
// ranks. train.cpp measures, this file words and formats.
#pragma once
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "launcher/metrics_file.h"
#include "launcher/options.h"

namespace mor {

class RunLog {
 public:
  // lead: this rank prints and writes the metrics file. peak_gflops: per rank, for MFU.
  RunLog(const RunConfig& rc, int world, double peak_gflops, bool lead);
  // The run starts (or resumes) at start_step; the clock for elapsed time and the ETA starts now.
  void start(int64_t start_step);
  void window(const LogWindow& w);
  void eval(int64_t step, double val_loss);
  void saved(const std::string& dir, double seconds);
  // Within a step that runs long: "step 12: micro-batch 3/8 (40 s)", at most every ~10 s.
  void micro_progress(int64_t step, int micro_done, int micro_total, double step_seconds);
  // The end: wall time, tokens, mean throughput, final losses, checkpoints written.
  void summary(int64_t end_step);
  double elapsed() const;
  void set_peak(double gflops) { peak_ = gflops; }

 private:
  const RunConfig& rc_;
  int world_;
  double peak_;
  bool lead_;
  MetricsFile metrics_;
  std::chrono::steady_clock::time_point t0_;
  int64_t start_step_ = 0, last_step_ = 0;
  double step_seconds_ = 0, tokens_ = 0;  // over the logged windows of this run
  double last_loss_ = 0, last_val_ = -1;
  int checkpoints_ = 0;
  int64_t micro_step_ = -1;
  double last_micro_note_ = 0;
};

// "1h02m", "3m05s", "42s": short durations for log lines.
std::string short_duration(double seconds);

}  // namespace mor
