// What a training run tells its user: one console line per logging window (with progress,
// elapsed time and an ETA), the metrics JSONL (one object per window and per evaluation), and the
// summary at the end. Only the lead rank (rank 0) writes; every number arrives already summed over
// ranks. train.cpp measures, this file words and formats.
#pragma once
#include <chrono>
#include <cstdint>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "launcher/options.h"
#include "model/model.h"

namespace mor {

// One logging window: the steps since the previous line.
struct LogWindow {
  int64_t step = 0;         // optimizer steps completed at the end of the window
  int steps = 0;            // steps in the window
  LossParts loss;           // of the window's last step
  double lr = 0, grad_norm = 0;
  double seconds = 0;       // wall time of the window's steps (without saves and evaluations)
  double flops = 0, tokens = 0;  // over all ranks
  double comm_wait_s = 0;   // this rank's time blocked in collectives
  uint64_t comm_bytes = 0;  // cumulative bytes this rank sent
  std::map<std::string, uint64_t> comm_by_tag;
  std::vector<int64_t> tokens_at_depth;  // over all ranks
  int64_t skipped_nonfinite = 0;         // this run so far
};

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
  std::ofstream metrics_;
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
// A JSON number, or null for NaN/inf (JSON has no literal for them).
std::string json_num(double v, const char* fmt = "%.17g");

}  // namespace mor
