// `mor-dist eval` and the validation loss used by training.
#include "launcher/eval.h"

#include <sys/stat.h>

#include <algorithm>
#include <memory>

#include "io/ckpt/checkpoint.h"
#include "launcher/log.h"
#include "launcher/options.h"
#include "launcher/params_io.h"
#include "launcher/resume.h"
#include "launcher/run_backend.h"
#include "launcher/stop_signal.h"
#include "launcher/threads.h"
#include "launcher/train.h"

namespace mor {

double evaluate(Model& m, io::ValLoader& val, int n, int micro, dist::Communicator& comm, bool interruptible) {
  const int total = n > 0 ? std::min(n, val.num_samples()) : val.num_samples();
  const io::SampleRange mine = io::even_slice(total, comm.rank(), comm.size());
  const int passes = (int)((total + comm.size() - 1) / comm.size() + micro - 1) / micro;
  std::vector<int32_t> buf((size_t)micro * val.sample_len());
  double ce = 0;
  for (int p = 0; p < passes; ++p) {
    if (interruptible && stop_requested()) throw ckpt::Interrupted("eval: stopped by a signal");
    const int64_t first = (int64_t)mine.first + (int64_t)p * micro;
    const int k = (int)std::max<int64_t>(0, std::min<int64_t>(micro, (int64_t)(mine.first + mine.count) - first));
    if (k > 0) {
      val.read_samples(first, k, buf.data());
      ce += m.step(buf.data(), k, total, false).ce;
    } else {  // nothing left here, but the collective gathers must still be matched
      val.read_samples(0, 1, buf.data());
      m.step(buf.data(), 1, total, false);
    }
  }
  comm.all_reduce_sum(&ce, 1, "allreduce/eval");
  return ce;
}

namespace {
// eval's parameters: a .mort file, or an HDF5 checkpoint (a step directory, or a root whose newest
// checkpoint --resume auto would take), written on any number of ranks.
void load_eval_params(Model& model, const RunConfig& rc) {
  const std::string& src = rc.train.init_params;
  struct stat st;
  if (::stat(src.c_str(), &st) != 0) throw std::runtime_error("'" + src + "' (train.init_params) does not exist");
  if (!S_ISDIR(st.st_mode)) return import_params(model, io::read_mort(src), src);
  const std::string dir = checkpoint_dir(src);
  const ckpt::Index idx = ckpt::read_index(dir);
  const std::string diff = config_difference(idx.state.model_config, rc.model);
  if (!diff.empty()) throw std::runtime_error("checkpoint '" + dir + "': model config differs: " + diff);
  load_checkpoint_params(dir, idx, model.layout, model.params);  // through host memory on a GPU
}
// --router-stats: what the router did over the evaluated windows (definitions: docs/MODEL.md).
void print_router_stats(const ModelConfig& c, const RouterStats& st) {
  const std::vector<int64_t>& d = st.tokens_at_depth;
  double total = 0;
  for (int64_t n : d) total += (double)n;
  if (total == 0) return;
  std::string depths;
  char b[96];
  for (size_t i = 0; i < d.size(); ++i) {
    std::snprintf(b, sizeof b, " %zu:%.2f%%", i, 100.0 * d[i] / total);
    depths += b;
  }
  logf("router: %s, N_r %d | tokens by recursions received%s\n", to_string(c.router), c.n_recursions, depths.c_str());
  if (c.router == RouterKind::Expert) {
    int64_t cand = 0, agree = 0;
    std::string per;
    for (size_t r = 0; r < st.candidates.size(); ++r) {
      cand += st.candidates[r];
      agree += st.threshold_agrees[r];
      std::snprintf(b, sizeof b, " r%zu %.2f%%", r,
                    st.candidates[r] ? 100.0 * st.threshold_agrees[r] / st.candidates[r] : 0.0);
      per += b;
    }
    logf(
        "router: sampling accuracy %.2f%% (threshold sigmoid(s) >= 0.5 vs training's top-k, over %lld candidates;%s)\n",
        cand ? 100.0 * agree / cand : 0.0, (long long)cand, per.c_str());
    const std::vector<int64_t>& at = st.last_selected_at_pos;
    const int64_t dead = std::count(at.begin(), at.end(), int64_t{0});
    logf("router: dead-token ratio %.2f%% (%lld of %zu window positions never selected by recursion %d's top-k)\n",
         at.empty() ? 0.0 : 100.0 * dead / at.size(), (long long)dead, at.size(), c.n_recursions);
  } else if (c.router == RouterKind::Token) {
    // Load per depth 1..N_r (depth 0 is empty for token-choice: every token gets >= 1 recursion).
    double mx = 0;
    for (size_t i = 1; i < d.size(); ++i) mx = std::max(mx, (double)d[i]);
    const double mean = total / c.n_recursions;
    logf("router: balance MaxVio %.4f (largest depth load / mean load - 1)\n", mx / mean - 1);
  }
}
}  // namespace

int cmd_eval(int argc, char** argv) {
  RunConfig rc;
  if (!parse_run_config(argc, argv, rc,
                        "usage: mor-dist eval --config FILE --train.init_params P.mort|CHECKPOINT --data.val GLOB"))
    return 0;
  if (rc.train.init_params.empty()) throw ConfigError("train.init_params", "is required: the parameters to evaluate");
  if (rc.data.val.empty()) throw ConfigError("data.val", "is required: the validation shards");
  const std::unique_ptr<kern::Backend> backend =
      make_run_backend(rc.train, default_threads(rc.train.threads, 1).threads);
  Model model(rc.model, *backend);
  model.bf16 = rc.train.precision == "bf16";  // --train.precision applies to evaluation too
  if (model.bf16) check_bf16_hardware(*backend, true);
  load_eval_params(model, rc);
  io::ValLoader val(rc.data.val, rc.model.seq_len, rc.model.vocab_size);
  const int micro = rc.train.micro_batch > 0 ? rc.train.micro_batch : 8;
  auto single = dist::make_single_process_comm();
  model.stats.reset(rc.model.n_recursions + 1);
  const double vl = evaluate(model, val, rc.train.eval_samples, micro, *single, true);
  logf("val_loss %.6f over %d windows of %d tokens (%s)\n", vl,
       rc.train.eval_samples > 0 ? std::min(rc.train.eval_samples, val.num_samples()) : val.num_samples(),
       rc.model.seq_len, rc.train.precision.c_str());
  if (rc.router_stats) print_router_stats(rc.model, model.stats);
  return 0;
}

}  // namespace mor
