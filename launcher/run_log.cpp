#include "launcher/run_log.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <sstream>

#include "launcher/log.h"

namespace mor {

namespace {

std::string depth_histogram(const std::vector<int64_t>& at) {
  int64_t tot = 0;
  for (auto v : at) tot += v;
  std::ostringstream o;
  for (size_t d = 0; d < at.size(); ++d) {
    if (d == 0 && at[0] == 0) continue;  // depth 0 only exists with c_0 < 1
    o << (o.tellp() ? " " : "") << d << ":" << std::fixed;
    o.precision(1);
    o << (tot ? 100.0 * at[d] / tot : 0.0) << "%";
  }
  return o.str();
}

// 1234567 -> "1.23M", for the tokens-seen column.
std::string short_count(double n) {
  char b[32];
  if (n >= 1e9)
    std::snprintf(b, sizeof b, "%.2fB", n / 1e9);
  else if (n >= 1e6)
    std::snprintf(b, sizeof b, "%.2fM", n / 1e6);
  else if (n >= 1e3)
    std::snprintf(b, sizeof b, "%.1fk", n / 1e3);
  else
    std::snprintf(b, sizeof b, "%.0f", n);
  return b;
}

}  // namespace

std::string short_duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  const long t = std::lround(s);
  char b[32];
  if (t >= 3600)
    std::snprintf(b, sizeof b, "%ldh%02ldm", t / 3600, t / 60 % 60);
  else if (t >= 60)
    std::snprintf(b, sizeof b, "%ldm%02lds", t / 60, t % 60);
  else
    std::snprintf(b, sizeof b, "%lds", t);
  return b;
}

RunLog::RunLog(const RunConfig& rc, int world, double peak_gflops, bool lead)
    : rc_(rc), world_(world), peak_(peak_gflops), lead_(lead), t0_(std::chrono::steady_clock::now()) {
  if (lead_ && !rc.train.metrics.empty()) metrics_.open(rc.train.metrics);
}

void RunLog::start(int64_t start_step) {
  start_step_ = last_step_ = start_step;
  t0_ = std::chrono::steady_clock::now();
}

double RunLog::elapsed() const { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count(); }

void RunLog::window(const LogWindow& w) {
  step_seconds_ += w.seconds;
  tokens_ += w.tokens;
  last_step_ = w.step;
  last_loss_ = w.loss.total();
  if (!lead_) return;
  const int64_t total_steps = rc_.train.steps;
  const double tps = w.tokens / w.seconds, gflops = w.flops / w.seconds / 1e9, mfu = gflops / (peak_ * world_);
  const double tokens_seen = (double)w.step * rc_.train.global_batch * rc_.model.seq_len;
  const double done = (double)(w.step - start_step_), left = (double)(total_steps - w.step);
  const double el = elapsed(), eta = done > 0 ? el / done * left : NAN;
  char line[768];
  int n = std::snprintf(
      line, sizeof line,
      "step %6lld/%lld %5.1f%% | loss %.6f | ce %.6f | lr %.3e | gnorm %.4f | %.0f tok/s | %.1f GFLOP/s | MFU %.1f%%",
      (long long)w.step, (long long)total_steps, 100.0 * w.step / total_steps, last_loss_, w.loss.ce, w.lr, w.grad_norm,
      tps, gflops, 100 * mfu);
  if (world_ > 1)
    n +=
        std::snprintf(line + n, sizeof line - n, " | comm %.2f MB/step, wait %.0f%%",
                      w.comm_bytes / 1e6 / std::max<int64_t>(1, w.step - start_step_), 100 * w.comm_wait_s / w.seconds);
  if (rc_.model.router != RouterKind::None)
    n += std::snprintf(line + n, sizeof line - n, " | depth %s", depth_histogram(w.tokens_at_depth).c_str());
  std::snprintf(line + n, sizeof line - n, " | %s tok | %s, ETA %s", short_count(tokens_seen).c_str(),
                short_duration(el).c_str(), left <= 0 ? "0s" : short_duration(eta).c_str());
  logf("%s\n", line);
  metrics_.window(w, {last_loss_, tps, gflops, mfu, el, tokens_seen}, world_);
}

void RunLog::eval(int64_t step, double val_loss) {
  last_val_ = val_loss;
  if (!lead_) return;
  logf("eval  %6lld | val_loss %.6f\n", (long long)step, val_loss);
  metrics_.eval(step, val_loss, elapsed());
}

void RunLog::saved(const std::string& dir, double seconds) {
  ++checkpoints_;
  if (lead_) logf("saved checkpoint %s in %.2f s\n", dir.c_str(), seconds);
}

void RunLog::micro_progress(int64_t step, int micro_done, int micro_total, double step_seconds) {
  // Only for steps long enough that a silent console looks hung: a note every ~10 s
  // (MOR_PROGRESS_EVERY_S sets the interval).
  static const double every = [] {
    const char* v = std::getenv("MOR_PROGRESS_EVERY_S");
    return v && std::atof(v) > 0 ? std::atof(v) : 10.0;
  }();
  if (step != micro_step_) micro_step_ = step, last_micro_note_ = 0;
  if (!lead_ || step_seconds < every || step_seconds - last_micro_note_ < every) return;
  last_micro_note_ = step_seconds;
  logf("  step %lld: micro-batch %d/%d done (%s into the step)\n", (long long)step, micro_done, micro_total,
       short_duration(step_seconds).c_str());
}

void RunLog::summary(int64_t end_step) {
  if (!lead_) return;
  const double el = elapsed();
  char val[64] = "";
  if (last_val_ >= 0) std::snprintf(val, sizeof val, ", final val loss %.6f", last_val_);
  logf(
      "done: steps %lld-%lld in %s (%.1f s training, %.0f tok/s mean) | %s tokens | final train loss %.6f%s | %d "
      "checkpoint%s written\n",
      (long long)start_step_ + 1, (long long)end_step, short_duration(el).c_str(), step_seconds_,
      step_seconds_ > 0 ? tokens_ / step_seconds_ : 0.0,
      short_count((double)end_step * rc_.train.global_batch * rc_.model.seq_len).c_str(), last_loss_, val, checkpoints_,
      checkpoints_ == 1 ? "" : "s");
}

}  // namespace mor
