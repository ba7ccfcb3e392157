// `mor-dist train`. cmd_train() reads top to bottom: setup(), resume(), then per step
// train_step() (the micro-batches' forward/backward, the step's sums over ranks, clipping,
// AdamW), log_window() and the saves; finish() writes the last checkpoint and the summary.
#include "launcher/train.h"

#include <sys/resource.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "dist/communicator.h"
#include "dist/sharded_params.h"
#include "dist/host_staging.h"
#include "io/ckpt/checkpoint.h"
#include "io/data/loader.h"
#include "launcher/eval.h"
#include "launcher/log.h"
#include "launcher/memory_check.h"
#include "launcher/options.h"
#include "launcher/params_io.h"
#include "launcher/peak_probe.h"
#include "launcher/resume.h"
#include "launcher/run_backend.h"
#include "launcher/run_log.h"
#include "launcher/stop_signal.h"
#include "launcher/threads.h"
#include "launcher/version.h"
#include "model/model.h"
#include "model/optimizer.h"

namespace mor {

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Everything one training run holds: built by setup(), used by every stage of the loop.
struct Run {
  RunConfig rc;
  dist::Communicator* comm = nullptr;               // the bootstrap communicator, or device_comm when there is one
  std::unique_ptr<dist::Communicator> device_comm;  // NCCL for a multi-GPU run (make_run_comm)
  int world = 1, rank = 0, micro = 0, accum = 0;
  bool lead = false;  // only rank 0 prints progress
  std::string resume_dir;
  std::unique_ptr<kern::Backend> backend;
  std::unique_ptr<Model> model;
  std::unique_ptr<dist::ShardedParams> sharded;  // W > 1
  float* params = nullptr;  // what the optimizer owns: the shards when sharded, else the whole arena
  float* grads = nullptr;
  int64_t n_local = 0;
  std::unique_ptr<AdamW> opt;
  std::unique_ptr<io::DataLoader> loader;
  std::unique_ptr<io::ValLoader> val;
  std::vector<int32_t> batch;  // one micro-batch of windows
  PeakProbe probe;
  std::unique_ptr<RunLog> log;
  int nonfinite_run = 0;  // consecutive steps whose update was skipped (--train.nonfinite skip)
  int64_t nonfinite_total = 0;
};

// What the steps since the last log line add up to (this rank's time, all ranks' work).
struct Window {
  double time = 0, flops = 0, wait = 0;
  int64_t tokens = 0;
  int steps = 0;
};

// One step's results, summed over ranks.
struct StepResult {
  LossParts loss;
  double grad_norm = 0, lr = 0, flops = 0;
  bool stop = false;  // some rank received a stop signal
};

void print_banner(const Run& r, const std::string& threads_why) {
  const RunConfig& rc = r.rc;
  const ModelConfig& c = rc.model;
  const ParamLayout& L = r.model->layout;
  logf("%s | config %s\n", version_string().c_str(), rc.config_path.empty() ? "(defaults)" : rc.config_path.c_str());
  logf("model: V=%d D=%d heads=%d/%d ff=%d layers=%d T=%d | sharing=%s N_r=%d B=%d router=%s kv=%s\n", c.vocab_size,
       c.d_model, c.n_heads, c.n_kv_heads, c.d_ff, c.n_layers, c.seq_len, to_string(c.sharing), c.n_recursions,
       L.block_size, to_string(c.router), to_string(c.kv_mode));
  if (c.router == RouterKind::Expert) {
    std::string caps;
    char b[64];
    for (int i = 0; i < c.n_recursions; ++i) {
      std::snprintf(b, sizeof b, " %.4g (k=%d)", c.capacity_of(i), c.expert_k(i));
      caps += b;
    }
    logf("expert capacities:%s\n", caps.c_str());
  }
  logf(
      "params: total %lld (analytic %lld) = embedding %lld + shared block %lld + unique layers %lld + norm/routers "
      "%lld\n",
      (long long)L.total, (long long)analytic_param_count(c), (long long)L.count_embedding(),
      (long long)L.count_shared(), (long long)L.count_unique_layers(), (long long)L.count_other());
  logf("batch: global %d = world %d x micro %d x accum %d sequences (%lld tokens/step) | threads %d (%s) | gemm %s\n",
       rc.train.global_batch, r.world, r.micro, r.accum, (long long)rc.train.global_batch * c.seq_len,
       backend_threads(), threads_why.c_str(), rc.train.gemm.c_str());
  logf("precision: %s GEMMs%s, fp32 master weights and optimizer | all-gather %s, reduce-scatter %s\n",
       rc.train.precision.c_str(), rc.train.precision == "bf16" ? " (fp32 accumulation)" : "",
       rc.dist.param_dtype.c_str(), rc.dist.reduce_dtype.c_str());
}

// Micro-batch size and gradient-accumulation count from the options and the world size.
void setup_batch(Run& r) {
  const TrainConfig& tc = r.rc.train;
  if (tc.global_batch % r.world != 0)
    throw ConfigError("train.global_batch", std::to_string(tc.global_batch) + " is not divisible by the world size " +
                                                std::to_string(r.world));
  r.micro = tc.micro_batch > 0 ? tc.micro_batch : tc.global_batch / r.world;
  if (tc.global_batch % (r.world * r.micro) != 0)
    throw ConfigError("train.micro_batch", "global_batch " + std::to_string(tc.global_batch) +
                                               " is not divisible by world " + std::to_string(r.world) +
                                               " x micro_batch " + std::to_string(r.micro));
  r.accum = tc.global_batch / (r.world * r.micro);
}

void print_data_and_mfu(const Run& r) {
  const TrainConfig& tc = r.rc.train;
  const io::DataLoader& loader = *r.loader;
  logf("data: %llu training windows in %zu shards (%llu tokens)%s\n", (unsigned long long)loader.num_samples(),
       loader.dataset().num_shards(), (unsigned long long)loader.dataset().num_tokens(),
       r.val ? (", " + std::to_string(r.val->num_samples()) + " validation windows").c_str() : "");
  // Resident parameter + gradient + AdamW bytes on this rank (the engine's own accounting).
  logf("dist: %s, world %d | resident params+grads+adam %.1f MB per rank%s\n", r.comm->backend(), r.world,
       4.0 * r.n_local * sizeof(float) / 1e6, r.sharded ? " (sharded on dim 0)" : "");
  if (tc.peak_gflops > 0)
    logf("MFU against %.0f GFLOP/s per rank (train.peak_gflops)\n", r.probe.gflops);
  else
    logf(
        "MFU against %.0f GFLOP/s per rank: best of %d warm 1024^3 %s runs over %.1f s with %d thread%s (set "
        "--train.peak_gflops for figures comparable across runs)\n",
        r.probe.gflops, r.probe.runs, r.model->bf16 ? "bf16 GEMM (fp32 accumulation)" : "sgemm", r.probe.seconds,
        backend_threads(), backend_threads() > 1 ? "s" : "");
  if (loader.num_samples() < (uint64_t)tc.global_batch)
    logf(
        "warning: the training data holds %llu windows of %d tokens, fewer than one global batch (%d): every step "
        "repeats samples\n",
        (unsigned long long)loader.num_samples(), r.rc.model.seq_len, tc.global_batch);
}

kern::DType dtype_option(const std::string& v) { return v == "bf16" ? kern::DType::BF16 : kern::DType::F32; }

// Options, batch, threads and backend; the model (seeded init or .mort unless resuming), its
// shards, the data, the optimizer and the MFU reference. False: only --help was asked for.
bool setup(Run& r, int argc, char** argv, dist::Communicator& comm) {
  if (!parse_run_config(argc, argv, r.rc,
                        "usage: [mpirun -np N | srun] mor-dist train --config FILE [--section.key value ...]"))
    return false;
  const RunConfig& rc = r.rc;
  const TrainConfig& tc = rc.train;
  r.comm = &comm;
  r.world = comm.size();
  r.rank = comm.rank();
  r.lead = r.rank == 0;
  setup_batch(r);
  comm.set_timeout(rc.dist.timeout);
  check_training_memory(rc.model, r.micro, r.world, tc.recompute == "layer");  // before the model allocates anything
  if (rc.data.train.empty()) throw ConfigError("data.train", "is required (a glob of token shards)");
  // --train.threads, else OMP_NUM_THREADS, else this rank's share of its CPUs.
  const ThreadChoice threads = default_threads(tc.threads, r.world);
  r.backend = make_run_backend(tc, threads.threads, r.world, r.lead);
  r.device_comm = make_run_comm(tc, comm);
  if (r.device_comm) {
    r.comm = r.device_comm.get();
    r.comm->set_timeout(rc.dist.timeout);
    if (r.lead) logf("collectives: %s (device buffers), MPI (host buffers)\n", r.comm->backend());
  }

  // Resolved first: a resumed run reads every parameter from the checkpoint, so it skips the init.
  // Checkpoints newer than the resume point (or any, for a fresh start) are never silently
  // overwritten or pruned: the run refuses, or with --ckpt.allow_rewind moves them aside.
  std::string note;
  r.resume_dir = rc.ckpt.resume.empty() ? "" : ckpt::resolve(rc.ckpt.dir, rc.ckpt.resume, &note);
  if (r.lead && !note.empty()) logf("%s\n", note.c_str());
  guard_newer_checkpoints(rc, r.resume_dir, *r.comm);

  // Every rank builds the same full model (seeded init or a .mort file), then keeps only its
  // shards when sharded (W > 1).
  r.model = std::make_unique<Model>(rc.model, *r.backend);
  Model& m = *r.model;
  m.recompute = tc.recompute == "layer";
  m.bf16 = tc.precision == "bf16";
  if (m.bf16) check_bf16_hardware(*r.backend, r.lead);
  if (r.resume_dir.empty()) {
    if (!tc.init_params.empty())
      import_params(m, io::read_mort(tc.init_params), tc.init_params);
    else
      m.init(tc.seed);
  }
  if (r.world > 1) {
    r.sharded = std::make_unique<dist::ShardedParams>(
        m, *r.comm,
        dist::ShardOptions{rc.dist.regather_per_recursion, rc.dist.keep_shared_gathered, rc.dist.overlap,
                           dtype_option(rc.dist.param_dtype), dtype_option(rc.dist.reduce_dtype)});
    r.sharded->shard_from_full();
    m.hooks = r.sharded.get();
  }
  r.params = r.sharded ? r.sharded->param.data() : m.params.data();
  r.grads = r.sharded ? r.sharded->grad.data() : m.grads.data();
  r.n_local = r.sharded ? r.sharded->shard_size() : m.layout.total;
  if (r.lead) print_banner(r, threads.reason);

  r.loader = std::make_unique<io::DataLoader>(
      io::LoaderConfig{rc.data.train, rc.model.seq_len, (uint32_t)rc.model.vocab_size, tc.seed, rc.data.shuffle});
  r.batch.resize((size_t)r.micro * r.loader->sample_len());
  if (!rc.data.val.empty()) r.val = std::make_unique<io::ValLoader>(rc.data.val, rc.model.seq_len, rc.model.vocab_size);
  r.opt = std::make_unique<AdamW>(
      rc.optim, *r.backend, r.n_local,
      r.sharded ? r.sharded->decay_mask(rc.optim.no_decay) : decay_mask(m.layout, rc.optim.no_decay, 0, r.n_local));
  r.probe = tc.peak_gflops > 0 ? PeakProbe{tc.peak_gflops, 0, 0} : measure_gemm_gflops(*r.backend, 0.5, m.bf16);
  // Test hook: MOR_TEST_PEAK_SCALE=0.01 makes the measured reference look 100x too low.
  if (const char* f = std::getenv("MOR_TEST_PEAK_SCALE"); f && r.probe.runs > 0) r.probe.gflops *= std::atof(f);
  if (r.lead) print_data_and_mfu(r);
  r.log = std::make_unique<RunLog>(rc, r.world, r.probe.gflops, r.lead);
  return true;
}

// This rank's rows of every tensor in the parameters and each optimizer state, for checkpoints.
ckpt::LocalState local_tensors(Run& r) {
  return r.sharded ? r.sharded->local_tensors(*r.opt) : dist::whole_tensors(*r.model, *r.opt);
}

// The whole training state from an HDF5 checkpoint, on any world size. Returns the step to go on from.
int64_t resume(Run& r) {
  const RunConfig& rc = r.rc;
  if (r.resume_dir.empty()) {
    if (r.lead && rc.ckpt.resume == "auto") logf("no checkpoint under %s yet: starting fresh\n", rc.ckpt.dir.c_str());
    return 0;
  }
  const auto t_load = Clock::now();
  const ckpt::Index idx = ckpt::read_index(r.resume_dir);
  ckpt::check_present(idx);  // a missing VDS source would silently read as fill values
  check_resumable(idx, rc);
  // Read into host memory (the state itself on the CPU, host copies on a GPU, pushed afterwards).
  dist::HostStagedState staged(*r.backend, local_tensors(r));
  const auto& mine = staged.view();
  // Same world size: each rank reads and verifies its own shard in one pass. Otherwise the ranks
  // verify the shards' checksums first (file j on rank j % W), then read their rows through the VDS.
  if (!ckpt::load_own_file(idx, mine, r.rank, r.world, rc.ckpt.direct_io)) {
    ckpt::verify(idx, r.comm);
    ckpt::load_rows(idx, mine);
  }
  // A checkpoint with NaN/inf (written before saves refused them, or edited) is never trained on.
  double bad = ckpt::first_non_finite(mine).empty() ? 0.0 : 1.0;
  if (r.world > 1) r.comm->all_reduce_sum(&bad, 1, "allreduce/resume");
  if (bad > 0) throw ckpt::NonFiniteError("checkpoint '" + r.resume_dir + "' holds NaN/inf parameters or moments");
  staged.push();
  r.opt->steps_done = idx.state.adam_steps;
  const int64_t start = idx.state.step;
  if (r.lead) {
    logf("resumed from %s: step %lld, next sample %llu (saved on %d rank%s, now %d) in %.2f s\n", r.resume_dir.c_str(),
         (long long)start, (unsigned long long)idx.state.next_sample, idx.state.world_size,
         idx.state.world_size > 1 ? "s" : "", r.world, seconds_since(t_load));
    describe_schedule_change(idx.state, rc);
    if (start >= rc.train.steps)
      logf(
          "the checkpoint is already at step %lld and train.steps is %lld: nothing to train (raise --train.steps to go "
          "on)\n",
          (long long)start, (long long)rc.train.steps);
  }
  return start;
}

// A checkpoint of the state after `steps_done` steps (collective; nothing without ckpt.dir).
void save(Run& r, int64_t steps_done) {
  const RunConfig& rc = r.rc;
  if (rc.ckpt.dir.empty()) return;
  ckpt::TrainState st;
  st.step = steps_done;
  st.next_sample = (uint64_t)steps_done * rc.train.global_batch;
  st.adam_steps = r.opt->steps_done;
  st.seed = rc.train.seed;
  st.tokens_seen = steps_done * (int64_t)rc.train.global_batch * rc.model.seq_len;
  st.world_size = r.world;
  st.model_config = rc.model.to_ini();
  st.run_config = rc.command_line;
  st.writer = version_string();
  st.schedule_steps = rc.train.steps;
  const auto t = Clock::now();
  dist::HostStagedState staged(*r.backend, local_tensors(r));  // a GPU's state through host copies
  staged.pull();
  const std::string dir = ckpt::save(rc.ckpt.dir, st, staged.view(), *r.comm, rc.ckpt.keep_last, rc.ckpt.direct_io);
  r.log->saved(dir, seconds_since(t));
  std::fflush(stdout);
}

// A step whose loss or gradient norm is not finite: stop without saving (train.nonfinite stop, or
// too many in a row), else skip its update and say so. Every rank sees the same sums, so every
// rank takes the same branch.
void handle_nonfinite(Run& r, int64_t step, const StepResult& s) {
  const TrainConfig& tc = r.rc.train;
  ++r.nonfinite_run;
  char what[160];
  std::snprintf(what, sizeof what, "step %lld: loss %g, gradient norm %g", (long long)step + 1, s.loss.total(),
                s.grad_norm);
  if (tc.nonfinite == "stop" || r.nonfinite_run >= tc.nonfinite_max)
    throw ckpt::NonFiniteError(
        std::string(what) +
        (tc.nonfinite == "stop"
             ? " is not finite"
             : " is not finite for " + std::to_string(r.nonfinite_run) + " steps in a row (train.nonfinite_max)") +
        ": stopped without saving this state; the last checkpoint" +
        (r.rc.ckpt.dir.empty() ? "" : " under " + r.rc.ckpt.dir) +
        " is intact (lower optim.lr, set optim.grad_clip, or resume with --train.nonfinite skip)");
  ++r.nonfinite_total;
  if (r.lead)
    logf("warning: %s is not finite: update skipped (%d in a row, %lld in this run)\n", what, r.nonfinite_run,
         (long long)r.nonfinite_total);
}

// One optimizer step: forward/backward over this rank's micro-batches, the step's sums over ranks,
// clipping and AdamW (skipped for a non-finite step).
StepResult train_step(Run& r, int64_t step, Clock::time_point t0) {
  const TrainConfig& tc = r.rc.train;
  Model& m = *r.model;
  StepResult s;
  // 1. forward/backward over this rank's micro-batches of the step
  m.zero_grads();
  std::vector<int32_t>& batch = r.batch;
  const io::SampleRange slice = io::rank_slice(step, tc.global_batch, r.rank, r.world);
  for (int mb = 0; mb < r.accum; ++mb) {
    const uint64_t first = slice.first + (uint64_t)mb * r.micro;
    r.loader->read_samples(first, r.micro, batch.data());
    r.loader->prefetch(
        mb + 1 < r.accum ? first + r.micro : io::rank_slice(step + 1, tc.global_batch, r.rank, r.world).first, r.micro);
    if (r.sharded) r.sharded->set_last_micro(mb + 1 == r.accum);
    s.loss += m.step(batch.data(), r.micro, tc.global_batch, true);
    s.flops += 3 * m.fwd_flops;  // backward ~ 2x forward
    r.log->micro_progress(step + 1, mb + 1, r.accum, seconds_since(t0));
  }
  if (r.sharded) r.sharded->finish_backward();  // gradient shards are summed over ranks now
  // 2. global loss and gradient norm: one all-reduce carries the step's sums, laid out as
  // cross-entropy, the router's loss terms, squared gradient norm, stop flag (any rank signalled:
  // all stop after this step).
  std::vector<double> sums = {s.loss.ce};
  for (const LossTerm& t : s.loss.terms) sums.push_back(t.value);
  const size_t grad_sq = sums.size(), stop = grad_sq + 1;
  sums.push_back(r.backend->sum_squares(r.grads, r.n_local));
  sums.push_back((double)(stop_signal() != 0));
  if (r.world > 1) r.comm->all_reduce_sum(sums.data(), (int64_t)sums.size(), "allreduce/loss_norm");
  s.loss.ce = sums[0];
  for (size_t i = 0; i < s.loss.terms.size(); ++i) s.loss.terms[i].value = sums[1 + i];
  s.grad_norm = std::sqrt(sums[grad_sq]);
  s.stop = sums[stop] > 0;
  s.lr = lr_at(r.rc.optim, step);
  // 3. AdamW on this rank's parameters (its shards when sharded), clipping folded in
  if (!std::isfinite(s.loss.total()) || !std::isfinite(s.grad_norm)) {
    handle_nonfinite(r, step, s);
  } else {
    r.nonfinite_run = 0;
    // One process in bf16: AdamW also writes the bf16 copy the next forward computes with.
    kern::bf16* params16 = r.sharded ? nullptr : m.bf16_copy_for_update();
    r.opt->update(r.params, r.grads, s.lr, clip_scale(s.grad_norm, r.rc.optim.grad_clip), params16);
    if (params16) m.bf16_copy_written();
  }
  return s;
}

// The log line and metrics of the steps since the last one (their sums over ranks).
void log_window(Run& r, int64_t step, const StepResult& s, Window& win) {
  Model& m = *r.model;
  dist::Communicator& comm = *r.comm;
  std::vector<double> depth(m.stats.tokens_at_depth.begin(), m.stats.tokens_at_depth.end());
  double agg[2] = {win.flops, (double)win.tokens};
  if (r.world > 1) {
    comm.all_reduce_sum(depth.data(), (int64_t)depth.size(), "allreduce/stats");
    comm.all_reduce_sum(agg, 2, "allreduce/stats");
  }
  for (size_t d = 0; d < depth.size(); ++d) m.stats.tokens_at_depth[d] = (int64_t)depth[d];
  LogWindow w;
  w.step = step + 1;
  w.steps = win.steps;
  w.loss = s.loss;
  w.lr = s.lr;
  w.grad_norm = s.grad_norm;
  w.seconds = win.time;
  w.flops = agg[0];
  w.tokens = agg[1];
  w.comm_wait_s = win.wait;
  w.comm_bytes = comm.stats.total_bytes();
  w.comm_by_tag = comm.stats.bytes;
  w.comm_wait_by_tag = comm.stats.wait_by_tag;
  w.tokens_at_depth = m.stats.tokens_at_depth;
  w.skipped_nonfinite = r.nonfinite_total;
  const double peak = r.probe.gflops;
  if (r.lead && r.probe.runs > 0 && w.flops / w.seconds / 1e9 > peak * r.world) {  // faster than the reference: say so
    const PeakProbe again = measure_gemm_gflops(*r.backend, 2.0, r.model->bf16);
    logf(
        "note: step %lld ran at %.0f GFLOP/s per rank, above the %.0f GFLOP/s GEMM reference; re-measured it: %.0f "
        "GFLOP/s (best of %d runs over %.1f s)%s\n",
        (long long)step + 1, w.flops / w.seconds / 1e9 / r.world, peak, again.gflops, again.runs, again.seconds,
        again.gflops > peak ? ", used from now on" : "; kept");
    r.probe.gflops = std::max(peak, again.gflops);
    r.log->set_peak(r.probe.gflops);
  }
  r.log->window(w);
  win = Window{};
  m.stats.reset(r.rc.model.n_recursions + 1);
}

// Says when the loader wraps around into a new epoch.
void note_epoch(const Run& r, int64_t step, int64_t start_step) {
  const uint64_t n = r.loader->num_samples(), gb = (uint64_t)r.rc.train.global_batch;
  if (!r.lead || step <= start_step || n == 0) return;
  const uint64_t a = (uint64_t)(step - 1) * gb / n, b = (uint64_t)step * gb / n;
  if (b != a)
    logf("data: epoch %llu begins at step %lld (the loader wraps around its %llu windows)\n", (unsigned long long)b + 1,
         (long long)step + 1, (unsigned long long)n);
}

// Peak resident memory of this rank and what its activations took (the share --train.recompute trades).
void print_memory(const Run& r) {
  rusage ru{};
  const double peak = getrusage(RUSAGE_SELF, &ru) == 0 ? ru.ru_maxrss * 1024.0 : 0;  // ru_maxrss is in KiB
  const double act = (double)r.model->activation_bytes();
  logf("memory: peak resident %.1f MB on rank 0; activations %.1f MB (%.0f %% of the peak) with --train.recompute %s\n",
       peak / 1e6, act / 1e6, peak > 0 ? 100 * act / peak : 0.0, r.rc.train.recompute.c_str());
}

// After the last step: the traffic and memory report, the final checkpoint, the .mort export and
// the summary.
void finish(Run& r, int64_t start_step) {
  const TrainConfig& tc = r.rc.train;
  dist::Communicator& comm = *r.comm;
  if (r.lead && r.world == 1)
    logf("resident: params+grads+adam %lld bytes per rank\n", (long long)(4 * r.n_local * sizeof(float)));
  if (r.lead && r.world > 1) {
    std::string by_tag;
    for (const auto& [tag, b] : comm.stats.bytes) by_tag += " " + tag + "=" + std::to_string(b);
    logf("comm bytes sent by rank 0 over %lld steps:%s\n", (long long)(tc.steps - start_step), by_tag.c_str());
    logf("resident: params+grads+adam %lld bytes per rank, peak gathered units %lld bytes\n",
         (long long)(4 * r.n_local * sizeof(float)), (long long)r.sharded->gathered_peak_bytes);
  }
  if (r.lead) print_memory(r);
  if (start_step < tc.steps) save(r, tc.steps);
  if (!tc.save_params.empty()) {
    if (r.sharded) r.sharded->gather_full();
    if (r.lead) {
      io::write_mort(tc.save_params, export_params(*r.model, r.model->params));
      logf("saved parameters to %s\n", tc.save_params.c_str());
    }
  }
  if (start_step < tc.steps) r.log->summary(tc.steps);
}

}  // namespace

int cmd_train(int argc, char** argv, dist::Communicator& boot) {
  Run r;
  if (!setup(r, argc, argv, boot)) return 0;
  dist::Communicator& comm = *r.comm;
  const RunConfig& rc = r.rc;
  const TrainConfig& tc = rc.train;
  const int64_t start_step = resume(r);
  Window win;
  r.model->stats.reset(rc.model.n_recursions + 1);
  comm.stats.clear();
  r.log->start(start_step);
  for (int64_t step = start_step; step < tc.steps; ++step) {
    const auto t0 = Clock::now();
    note_epoch(r, step, start_step);
    comm.set_context("step " + std::to_string(step + 1));
    const double wait0 = comm.stats.wait_seconds;
    const StepResult s = train_step(r, step, t0);
    win.time += seconds_since(t0);
    win.wait += comm.stats.wait_seconds - wait0;
    win.flops += s.flops;
    win.tokens += (int64_t)r.micro * r.accum * rc.model.seq_len;
    ++win.steps;
    const bool last = step + 1 == tc.steps || s.stop;
    if ((step + 1) % tc.log_every == 0 || step == 0 || last) log_window(r, step, s, win);
    if (s.stop) {
      if (r.lead)
        logf("stop signal received: saving at step %lld and exiting with status %d\n", (long long)step + 1,
             kExitSavedOnSignal);
      save(r, step + 1);
      r.log->summary(step + 1);
      return kExitSavedOnSignal;
    }
    if (rc.ckpt.save_every > 0 && (step + 1) % rc.ckpt.save_every == 0 && step + 1 != tc.steps) save(r, step + 1);
    if (r.val && ((tc.eval_every > 0 && (step + 1) % tc.eval_every == 0) || last))
      r.log->eval(step + 1, evaluate(*r.model, *r.val, tc.eval_samples, r.micro, comm));
  }
  finish(r, start_step);
  return 0;
}

}  // namespace mor
