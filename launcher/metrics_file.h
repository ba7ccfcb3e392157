// The metrics JSONL a run appends to (--train.metrics): one object per logging window and one per
// evaluation, flushed line by line so a crash never leaves half a line behind a good one. Values
// that are not finite are written as null: the file stays valid JSON. docs/CONFIG.md lists the fields.
#pragma once
#include <cstdint>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "model/model.h"

namespace mor {

// One logging window: the steps since the previous line.
struct LogWindow {
  int64_t step = 0;  // optimizer steps completed at the end of the window
  int steps = 0;     // steps in the window
  LossParts loss;    // of the window's last step
  double lr = 0, grad_norm = 0;
  double seconds = 0;            // wall time of the window's steps (without saves and evaluations)
  double flops = 0, tokens = 0;  // over all ranks
  double comm_wait_s = 0;        // this rank's time blocked in collectives
  uint64_t comm_bytes = 0;       // cumulative bytes this rank sent
  std::map<std::string, uint64_t> comm_by_tag;
  std::map<std::string, double> comm_wait_by_tag;  // cumulative seconds blocked, per tag
  std::vector<int64_t> tokens_at_depth;            // over all ranks
  int64_t skipped_nonfinite = 0;                   // this run so far
};

// What the console line and the metrics line both derive from a window.
struct WindowRates {
  double loss = 0;  // total, with the router's terms
  double tokens_per_s = 0, gflops = 0, mfu = 0;
  double elapsed_s = 0, tokens_seen = 0;
};

// A JSON number, or null for NaN/inf (JSON has no literal for them).
std::string json_num(double v, const char* fmt = "%.17g");

class MetricsFile {
 public:
  // Opens `path` for appending; throws ConfigError(train.metrics) when it cannot.
  void open(const std::string& path);
  explicit operator bool() const { return out_.is_open(); }
  void window(const LogWindow& w, const WindowRates& r, int world);
  void eval(int64_t step, double val_loss, double elapsed_s);

 private:
  std::ofstream out_;
};

}  // namespace mor
