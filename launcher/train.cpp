// `mor-dist train` and `mor-dist eval`: one training step reads top to bottom
// in train_loop(): read the micro-batches of this step, forward/backward each,
// clip, AdamW, log.
#include "launcher/train.h"

#include <sys/stat.h>
#include "launcher/stop_signal.h"

#include <array>
#include <chrono>
#include <cstdlib>
#include <thread>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <ctime>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>

#include "io/ckpt/checkpoint.h"
#include "io/data/loader.h"
#include "kernels/kernels.h"
#include "dist/communicator.h"
#include "dist/sharded_params.h"
#include "launcher/log.h"
#include "launcher/memory_check.h"
#include "launcher/options.h"
#include "launcher/run_log.h"
#include "launcher/version.h"
#include "launcher/threads.h"
#include "launcher/params_io.h"
#include "model/model.h"
#include "model/optimizer.h"

namespace mor {

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// The machine's practical fp32 peak, for MFU: the best of at least 10 warm 1024^3 sgemm runs
// spread over at least `min_seconds` (a single short probe measured 22-214 GFLOP/s on a busy
// machine and gave MFU above 100 %). The first call is not timed: it starts the thread team and
// faults in the buffers.
struct PeakProbe {
  double gflops = 0;
  int runs = 0;
  double seconds = 0;
};
PeakProbe measure_sgemm_gflops(double min_seconds) {
  const int n = 1024;
  std::vector<float> a((size_t)n * n, 0.5f), b((size_t)n * n, 0.25f), c((size_t)n * n);
  kern::gemm(false, false, n, n, n, 1.f, a.data(), n, b.data(), n, 0.f, c.data(), n);
  double best = 1e30;
  PeakProbe p;
  const auto t0 = Clock::now();
  while (p.runs < 10 || (seconds_since(t0) < min_seconds && p.runs < 1000)) {
    auto t = Clock::now();
    kern::gemm(false, false, n, n, n, 1.f, a.data(), n, b.data(), n, 0.f, c.data(), n);
    best = std::min(best, seconds_since(t));
    ++p.runs;
  }
  p.seconds = seconds_since(t0);
  p.gflops = 2.0 * n * n * n / best / 1e9;
  return p;
}

// This rank's row blocks of every tensor (parameters + AdamW moments) for checkpoints.
std::vector<ckpt::LocalTensor> local_tensors(Model& m, dist::ShardedParams* sp, AdamW& opt) {
  std::vector<ckpt::LocalTensor> v;
  for (size_t t = 0; t < m.layout.tensors.size(); ++t) {
    const TensorInfo& ti = m.layout.tensors[t];
    ckpt::LocalTensor lt{ti.name, ti.rows, ti.cols, ti.is_1d, 0, ti.rows, nullptr, nullptr, nullptr};
    int64_t off = ti.offset;
    if (sp) sp->local_rows((int)t, lt.row0, lt.row1, off);
    lt.param = (sp ? sp->param.data() : m.params.data()) + off;
    lt.exp_avg = opt.m.data() + off;
    lt.exp_avg_sq = opt.v.data() + off;
    v.push_back(lt);
  }
  return v;
}

// The first model setting where a checkpoint's recorded config and this run's differ, as
// "checkpoint has 'key = a', this run has 'key = b'". Compared field by field: the recorded text
// is parsed with today's option table (settings it lacks take their defaults), so adding a
// model option later does not make older checkpoints unloadable.
std::string config_difference(const std::string& saved, const ModelConfig& now) {
  std::string saved_canonical;
  try {
    saved_canonical = load_config_text(saved).model.to_ini();
  } catch (const std::exception& e) {
    return "its recorded model config cannot be read by this mor-dist (" + std::string(e.what()) + ")";
  }
  std::istringstream a(saved_canonical), b(now.to_ini());
  std::string la, lb;
  while (true) {
    const bool ga = (bool)std::getline(a, la), gb = (bool)std::getline(b, lb);
    if (!ga && !gb) return "";
    if (la != lb) return "checkpoint has '" + la + "', this run has '" + lb + "'";
  }
}

kern::GemmLib gemm_lib_of(const TrainConfig& t) {  // values checked by the option parser
  return t.gemm == "openblas" ? kern::GemmLib::OpenBLAS : kern::GemmLib::Mixed;
}


void print_banner(const RunConfig& rc, const Model& m, int world, int micro, int accum, const std::string& threads_why) {
  const ModelConfig& c = rc.model;
  const ParamLayout& L = m.layout;
  logf("%s | config %s\n", version_string().c_str(), rc.config_path.empty() ? "(defaults)" : rc.config_path.c_str());
  logf("model: V=%d D=%d heads=%d/%d ff=%d layers=%d T=%d | sharing=%s N_r=%d B=%d router=%s kv=%s\n",
              c.vocab_size, c.d_model, c.n_heads, c.n_kv_heads, c.d_ff, c.n_layers, c.seq_len, to_string(c.sharing),
              c.n_recursions, L.block_size, to_string(c.router), to_string(c.kv_mode));
  if (c.router == RouterKind::Expert) {
    std::string caps;
    char b[64];
    for (int r = 0; r < c.n_recursions; ++r) {
      std::snprintf(b, sizeof b, " %.4g (k=%d)", c.capacity_of(r), c.expert_k(r));
      caps += b;
    }
    logf("expert capacities:%s\n", caps.c_str());
  }
  logf("params: total %lld (analytic %lld) = embedding %lld + shared block %lld + unique layers %lld + norm/routers %lld\n",
              (long long)L.total, (long long)analytic_param_count(c), (long long)L.count_embedding(),
              (long long)L.count_shared(), (long long)L.count_unique_layers(), (long long)L.count_other());
  logf("batch: global %d = world %d x micro %d x accum %d sequences (%lld tokens/step) | threads %d (%s) | gemm %s\n",
              rc.train.global_batch, world, micro, accum, (long long)rc.train.global_batch * c.seq_len,
              kern::num_threads(), threads_why.c_str(), rc.train.gemm.c_str());
}

// Mean validation cross-entropy over the first n windows (all if n = 0); each
// rank scores a contiguous slice and the sums are added over ranks. Every rank
// runs the same number of forward passes (sharded units are gathered collectively).
// interruptible: a stop signal ends the evaluation (ckpt::Interrupted); inside training the
// signal is taken at the next step boundary instead.
double evaluate(Model& m, io::ValLoader& val, int n, int micro, dist::Communicator& comm, bool interruptible = false) {
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

// Why a checkpoint cannot be resumed by this run (ConfigError: the options disagree with it).
void check_resumable(const ckpt::Index& idx, const RunConfig& rc) {
  const std::string diff = config_difference(idx.state.model_config, rc.model);
  if (!diff.empty()) throw std::runtime_error("checkpoint '" + idx.dir + "': model config differs: " + diff);
  if (idx.state.next_sample != (uint64_t)idx.state.step * rc.train.global_batch)
    throw ConfigError("train.global_batch", "is " + std::to_string(rc.train.global_batch) + " but checkpoint '" + idx.dir +
                                                "' was trained with " +
                                                std::to_string(idx.state.next_sample / std::max<int64_t>(1, idx.state.step)));
  if (idx.state.seed != rc.train.seed && !rc.ckpt.allow_seed_change)
    throw ConfigError("train.seed", "is " + std::to_string(rc.train.seed) + " but checkpoint '" + idx.dir + "' was trained with " +
                                        std::to_string(idx.state.seed) +
                                        " (the seed orders the data); pass --ckpt.allow_seed_change true to change it anyway");
}

// A resumed run whose train.steps differs from the checkpoint's has another LR schedule (WSD and
// cosine are laid out over train.steps): say what the LR does at the resume point.
void describe_schedule_change(const ckpt::TrainState& st, const RunConfig& rc) {
  if (st.schedule_steps <= 0 || st.schedule_steps == rc.train.steps) return;
  OptimConfig before = rc.optim;
  before.total_steps = st.schedule_steps;
  logf("note: the checkpoint's run had a %lld-step schedule, this one has %lld (train.steps): the %s learning rate at step "
       "%lld is %.3e (it would have been %.3e)\n",
       (long long)st.schedule_steps, (long long)rc.train.steps, to_string(rc.optim.schedule), (long long)st.step + 1,
       lr_at(rc.optim, st.step), lr_at(before, st.step));
}

// Resuming from step S while ckpt.dir holds checkpoints of later steps (or starting fresh over
// any) would prune or overwrite them: refuse, naming them, unless --ckpt.allow_rewind, which
// renames them step_N.rewound-TIME (nothing is deleted); `latest` then names a moved directory,
// which --resume auto passes over, until this run's first save replaces it.
void guard_newer_checkpoints(const RunConfig& rc, const std::string& resume_dir, dist::Communicator& comm) {
  if (rc.ckpt.dir.empty()) return;
  const auto found = ckpt::list_checkpoints(rc.ckpt.dir);
  int64_t from = -1;
  for (const auto& f : found)
    if (f.dir == resume_dir) from = f.step;
  if (!resume_dir.empty() && from < 0) from = ckpt::read_index(resume_dir).state.step;  // outside ckpt.dir
  std::vector<ckpt::Found> newer;
  for (const auto& f : found)
    if (f.step > from && f.dir != resume_dir) newer.push_back(f);
  if (newer.empty()) return;
  std::string names;
  for (const auto& f : newer) names += " " + f.dir + " (step " + std::to_string(f.step) + ")";
  const std::string what = resume_dir.empty() ? "a fresh start (no --resume) into ckpt.dir " + rc.ckpt.dir
                                              : "resuming from step " + std::to_string(from);
  if (!rc.ckpt.allow_rewind)
    throw ConfigError("ckpt.dir", what + " would overwrite or prune newer checkpoints:" + names +
                                      ". Resume the newest with --resume auto, or pass --ckpt.allow_rewind true to move them aside");
  if (comm.rank() == 0) {
    char stamp[32];
    const std::time_t now = std::time(nullptr);
    std::strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", std::localtime(&now));
    const std::string suffix = std::string(".rewound-") + stamp;
    for (const auto& f : newer) {
      if (std::rename(f.dir.c_str(), (f.dir + suffix).c_str()) != 0)
        throw std::runtime_error("cannot move '" + f.dir + "' aside: " + std::strerror(errno));
      logf("moved %s aside to %s%s (--ckpt.allow_rewind)\n", f.dir.c_str(), f.dir.c_str(), suffix.c_str());
    }
  }
  comm.barrier();
}


}  // namespace

int cmd_train(int argc, char** argv, dist::Communicator& comm) {
  RunConfig rc;
  if (!parse_run_config(argc, argv, rc, "usage: [mpirun -np N | srun] mor-dist train --config FILE [--section.key value ...]"))
    return 0;
  const TrainConfig& tc = rc.train;
  const int world = comm.size(), rank = comm.rank();
  const bool lead = rank == 0;  // only rank 0 prints progress
  if (tc.global_batch % world != 0)
    throw ConfigError("train.global_batch", std::to_string(tc.global_batch) + " is not divisible by the world size " +
                                                std::to_string(world));
  const int micro = tc.micro_batch > 0 ? tc.micro_batch : tc.global_batch / world;
  if (tc.global_batch % (world * micro) != 0)
    throw ConfigError("train.micro_batch", "global_batch " + std::to_string(tc.global_batch) + " is not divisible by world " +
                                               std::to_string(world) + " x micro_batch " + std::to_string(micro));
  const int accum = tc.global_batch / (world * micro);
  comm.set_timeout(rc.dist.timeout);
  check_training_memory(rc.model, micro, world);  // before the model allocates anything
  if (rc.data.train.empty()) throw ConfigError("data.train", "is required (a glob of token shards)");
  const ThreadChoice threads = default_threads(tc.threads, world);  // --train.threads, else OMP_NUM_THREADS, else this rank's share of its CPUs
  kern::set_num_threads(threads.threads);
  kern::set_gemm_lib(gemm_lib_of(tc));

  // Resolved first: a resumed run reads every parameter from the checkpoint, so it skips the init.
  // Checkpoints newer than the resume point (or any, for a fresh start) are never silently
  // overwritten or pruned: the run refuses, or with --ckpt.allow_rewind moves them aside.
  std::string resume_note;
  const std::string resume_dir = rc.ckpt.resume.empty() ? "" : ckpt::resolve(rc.ckpt.dir, rc.ckpt.resume, &resume_note);
  if (lead && !resume_note.empty()) logf("%s\n", resume_note.c_str());
  guard_newer_checkpoints(rc, resume_dir, comm);

  // Every rank builds the same full model (seeded init or a .mort file), then
  // keeps only its shards when sharded (W > 1).
  Model model(rc.model);
  if (resume_dir.empty()) {
    if (!tc.init_params.empty()) import_params(model, io::read_mort(tc.init_params), tc.init_params);
    else model.init(tc.seed);
  }
  std::unique_ptr<dist::ShardedParams> sharded;
  if (world > 1) {
    sharded = std::make_unique<dist::ShardedParams>(
        model, comm,
        dist::ShardOptions{rc.dist.regather_per_recursion, rc.dist.keep_shared_gathered, rc.dist.overlap});
    sharded->shard_from_full();
    model.hooks = sharded.get();
  }
  float* const params = sharded ? sharded->param.data() : model.params.data();  // what the optimizer owns
  float* const grads = sharded ? sharded->grad.data() : model.grads.data();
  const int64_t n_local = sharded ? sharded->shard_size() : model.layout.total;
  if (lead) print_banner(rc, model, world, micro, accum, threads.reason);

  io::DataLoader loader({rc.data.train, rc.model.seq_len, (uint32_t)rc.model.vocab_size, tc.seed, rc.data.shuffle});
  std::unique_ptr<io::ValLoader> val;
  if (!rc.data.val.empty()) val = std::make_unique<io::ValLoader>(rc.data.val, rc.model.seq_len, rc.model.vocab_size);
  AdamW opt(rc.optim, n_local,
            sharded ? sharded->decay_mask(rc.optim.no_decay) : decay_mask(model.layout, rc.optim.no_decay, 0, n_local));
  PeakProbe probe = tc.peak_gflops > 0 ? PeakProbe{tc.peak_gflops, 0, 0} : measure_sgemm_gflops(0.5);
  // Test hook: MOR_TEST_PEAK_SCALE=0.01 makes the measured reference look 100x too low.
  if (const char* f = std::getenv("MOR_TEST_PEAK_SCALE"); f && probe.runs > 0) probe.gflops *= std::atof(f);
  double peak = probe.gflops;
  // Resident parameter + gradient + AdamW bytes on this rank (the engine's own accounting).
  const double resident_mb = 4.0 * n_local * sizeof(float) / 1e6;
  if (lead) {
    logf("data: %llu training windows in %zu shards (%llu tokens)%s\n",
                (unsigned long long)loader.num_samples(), loader.dataset().num_shards(),
                (unsigned long long)loader.dataset().num_tokens(),
                val ? (", " + std::to_string(val->num_samples()) + " validation windows").c_str() : "");
    logf("dist: %s, world %d | resident params+grads+adam %.1f MB per rank%s\n", comm.backend(), world,
                resident_mb, sharded ? " (sharded on dim 0)" : "");
    if (tc.peak_gflops > 0) logf("MFU against %.0f GFLOP/s per rank (train.peak_gflops)\n", peak);
    else
      logf("MFU against %.0f GFLOP/s per rank: best of %d warm 1024^3 sgemm runs over %.1f s with %d thread%s (set "
           "--train.peak_gflops for figures comparable across runs)\n",
           peak, probe.runs, probe.seconds, kern::num_threads(), kern::num_threads() > 1 ? "s" : "");
    if (loader.num_samples() < (uint64_t)tc.global_batch)
      logf("warning: the training data holds %llu windows of %d tokens, fewer than one global batch (%d): every step "
           "repeats samples\n",
           (unsigned long long)loader.num_samples(), rc.model.seq_len, tc.global_batch);
  }
  RunLog log(rc, world, peak, lead);

  // Resume: the whole training state from an HDF5 checkpoint, on any world size.
  int64_t start_step = 0;
  if (!resume_dir.empty()) {
    const auto t_load = Clock::now();
    const ckpt::Index idx = ckpt::read_index(resume_dir);
    ckpt::check_present(idx);  // a missing VDS source would silently read as fill values
    check_resumable(idx, rc);
    const auto mine = local_tensors(model, sharded.get(), opt);
    // Same world size: each rank reads and verifies its own shard in one pass. Otherwise the ranks
    // verify the shards' checksums first (file j on rank j % W), then read their rows through the VDS.
    if (!ckpt::load_own_shard(idx, mine, rank, world, rc.ckpt.direct_io)) {
      ckpt::verify(idx, &comm);
      ckpt::load_rows(idx, mine);
    }
    // A checkpoint with NaN/inf (written before saves refused them, or edited) is never trained on.
    double bad = ckpt::first_non_finite(mine).empty() ? 0.0 : 1.0;
    if (world > 1) comm.all_reduce_sum(&bad, 1, "allreduce/resume");
    if (bad > 0) throw ckpt::NonFiniteError("checkpoint '" + resume_dir + "' holds NaN/inf parameters or moments");
    opt.steps_done = idx.state.adam_steps;
    start_step = idx.state.step;
    if (lead)
      logf("resumed from %s: step %lld, next sample %llu (saved on %d rank%s, now %d) in %.2f s\n",
                  resume_dir.c_str(), (long long)start_step, (unsigned long long)idx.state.next_sample,
                  idx.state.world_size, idx.state.world_size > 1 ? "s" : "", world, seconds_since(t_load));
    if (lead) describe_schedule_change(idx.state, rc);
    if (lead && start_step >= tc.steps)
      logf("the checkpoint is already at step %lld and train.steps is %lld: nothing to train (raise --train.steps to go on)\n",
           (long long)start_step, (long long)tc.steps);
  } else if (lead && rc.ckpt.resume == "auto") {
    logf("no checkpoint under %s yet: starting fresh\n", rc.ckpt.dir.c_str());
  }
  auto save_now = [&](int64_t steps_done) {
    if (rc.ckpt.dir.empty()) return;
    ckpt::TrainState st;
    st.step = steps_done;
    st.next_sample = (uint64_t)steps_done * tc.global_batch;
    st.adam_steps = opt.steps_done;
    st.seed = tc.seed;
    st.tokens_seen = steps_done * (int64_t)tc.global_batch * rc.model.seq_len;
    st.world_size = world;
    st.model_config = rc.model.to_ini();
    st.run_config = rc.command_line;
    st.writer = version_string();
    st.schedule_steps = tc.steps;
    const auto t = Clock::now();
    const std::string dir = ckpt::save(rc.ckpt.dir, st, local_tensors(model, sharded.get(), opt), comm, rc.ckpt.keep_last,
                                         rc.ckpt.direct_io);
    log.saved(dir, seconds_since(t));
    std::fflush(stdout);
  };
  std::vector<int32_t> batch((size_t)micro * loader.sample_len());
  double window_time = 0, window_flops = 0, window_wait = 0;
  int64_t window_tokens = 0;
  model.stats.reset(rc.model.n_recursions + 1);
  comm.stats.clear();
  log.start(start_step);
  int window_steps = 0;
  int nonfinite_run = 0;        // consecutive steps whose update was skipped (--train.nonfinite skip)
  int64_t nonfinite_total = 0;
  for (int64_t step = start_step; step < tc.steps; ++step) {
    const auto t0 = Clock::now();
    if (lead && step > start_step && loader.num_samples() > 0) {  // the loader wraps: say when a new epoch begins
      const uint64_t a = (uint64_t)(step - 1) * tc.global_batch / loader.num_samples(),
                     b = (uint64_t)step * tc.global_batch / loader.num_samples();
      if (b != a) logf("data: epoch %llu begins at step %lld (the loader wraps around its %llu windows)\n",
                       (unsigned long long)b + 1, (long long)step + 1, (unsigned long long)loader.num_samples());
    }
    comm.set_context("step " + std::to_string(step + 1));
    const double wait0 = comm.stats.wait_seconds;
    // 1. forward/backward over this rank's micro-batches of the step
    model.zero_grads();
    LossParts loss;
    double flops = 0;
    const io::SampleRange slice = io::rank_slice(step, tc.global_batch, rank, world);
    for (int mb = 0; mb < accum; ++mb) {
      const uint64_t first = slice.first + (uint64_t)mb * micro;
      loader.read_samples(first, micro, batch.data());
      loader.prefetch(mb + 1 < accum ? first + micro : io::rank_slice(step + 1, tc.global_batch, rank, world).first, micro);
      if (sharded) sharded->set_last_micro(mb + 1 == accum);
      loss += model.step(batch.data(), micro, tc.global_batch, true);
      flops += 3 * model.fwd_flops;  // backward ~ 2x forward
      log.micro_progress(step + 1, mb + 1, accum, seconds_since(t0));
    }
    if (sharded) sharded->finish_backward();  // gradient shards are summed over ranks now
    // 2. global loss and gradient norm (sums over ranks), clip
    // One all-reduce carries the step's sums; any rank signalled: all stop after this step.
    enum { kCe, kAux, kEcZ, kBal, kZ, kGradSq, kStop, kSums };
    std::array<double, kSums> red = {loss.ce, loss.aux, loss.ec_z, loss.bal, loss.z, kern::sum_squares(grads, n_local),
                                     (double)(stop_signal() != 0)};
    if (world > 1) comm.all_reduce_sum(red.data(), red.size(), "allreduce/loss_norm");
    loss = LossParts{red[kCe], red[kAux], red[kEcZ], red[kBal], red[kZ]};
    const double gnorm = std::sqrt(red[kGradSq]);
    const float scale = clip_scale(gnorm, rc.optim.grad_clip);
    const double lr = lr_at(rc.optim, step);
    // Every rank sees the same sums, so every rank takes the same branch here.
    const bool finite = std::isfinite(loss.total(rc.model)) && std::isfinite(gnorm);
    if (!finite) {
      ++nonfinite_run;
      char what[160];
      std::snprintf(what, sizeof what, "step %lld: loss %g, gradient norm %g", (long long)step + 1, loss.total(rc.model), gnorm);
      if (tc.nonfinite == "stop" || nonfinite_run >= tc.nonfinite_max)
        throw ckpt::NonFiniteError(std::string(what) +
                                   (tc.nonfinite == "stop" ? " is not finite"
                                                           : " is not finite for " + std::to_string(nonfinite_run) +
                                                                 " steps in a row (train.nonfinite_max)") +
                                   ": stopped without saving this state; the last checkpoint" +
                                   (rc.ckpt.dir.empty() ? "" : " under " + rc.ckpt.dir) +
                                   " is intact (lower optim.lr, set optim.grad_clip, or resume with --train.nonfinite skip)");
      ++nonfinite_total;
      if (lead) logf("warning: %s is not finite: update skipped (%d in a row, %lld in this run)\n", what, nonfinite_run,
                     (long long)nonfinite_total);
    } else {
      nonfinite_run = 0;
      // 3. AdamW on this rank's parameters (its shards when sharded), clipping folded in
      opt.update(params, grads, lr, scale);
    }

    window_time += seconds_since(t0);
    window_wait += comm.stats.wait_seconds - wait0;
    window_flops += flops;
    window_tokens += (int64_t)micro * accum * rc.model.seq_len;
    ++window_steps;
    const bool stop = red[kStop] > 0;
    const bool last = step + 1 == tc.steps || stop;
    // 4. log
    if ((step + 1) % tc.log_every == 0 || step == 0 || last) {
      std::vector<double> depth(model.stats.tokens_at_depth.begin(), model.stats.tokens_at_depth.end());
      double agg[2] = {window_flops, (double)window_tokens};
      if (world > 1) {
        comm.all_reduce_sum(depth.data(), depth.size(), "allreduce/stats");
        comm.all_reduce_sum(agg, 2, "allreduce/stats");
      }
      for (size_t d = 0; d < depth.size(); ++d) model.stats.tokens_at_depth[d] = (int64_t)depth[d];
      LogWindow w;
      w.step = step + 1;
      w.steps = window_steps;
      w.loss = loss;
      w.lr = lr;
      w.grad_norm = gnorm;
      w.seconds = window_time;
      w.flops = agg[0];
      w.tokens = agg[1];
      w.comm_wait_s = window_wait;
      w.comm_bytes = comm.stats.total_bytes();
      w.comm_by_tag = comm.stats.bytes;
      w.tokens_at_depth = model.stats.tokens_at_depth;
      w.skipped_nonfinite = nonfinite_total;
      if (lead && probe.runs > 0 && w.flops / w.seconds / 1e9 > peak * world) {  // faster than the reference: say so
        const PeakProbe again = measure_sgemm_gflops(2.0);
        logf("note: step %lld ran at %.0f GFLOP/s per rank, above the %.0f GFLOP/s sgemm reference; re-measured it: %.0f "
             "GFLOP/s (best of %d runs over %.1f s)%s\n",
             (long long)step + 1, w.flops / w.seconds / 1e9 / world, peak, again.gflops, again.runs, again.seconds,
             again.gflops > peak ? ", used from now on" : "; kept");
        peak = std::max(peak, again.gflops);
        log.set_peak(peak);
      }
      log.window(w);
      window_time = window_flops = window_wait = 0;
      window_tokens = 0;
      window_steps = 0;
      model.stats.reset(rc.model.n_recursions + 1);
    }
    if (stop) {
      if (lead) logf("stop signal received: saving at step %lld and exiting with status %d\n", (long long)step + 1, kExitSavedOnSignal);
      save_now(step + 1);
      log.summary(step + 1);
      return kExitSavedOnSignal;
    }
    if (rc.ckpt.save_every > 0 && (step + 1) % rc.ckpt.save_every == 0 && step + 1 != tc.steps) save_now(step + 1);
    if (val && ((tc.eval_every > 0 && (step + 1) % tc.eval_every == 0) || last)) {
      log.eval(step + 1, evaluate(model, *val, tc.eval_samples, micro, comm));
    }
  }
  if (lead && world == 1) logf("resident: params+grads+adam %lld bytes per rank\n", (long long)(4 * n_local * sizeof(float)));
  if (lead && world > 1) {
    std::string by_tag;
    for (const auto& [tag, b] : comm.stats.bytes) by_tag += " " + tag + "=" + std::to_string(b);
    logf("comm bytes sent by rank 0 over %lld steps:%s\n", (long long)(tc.steps - start_step), by_tag.c_str());
    logf("resident: params+grads+adam %lld bytes per rank, peak gathered units %lld bytes\n",
                (long long)(4 * n_local * sizeof(float)), (long long)sharded->gathered_peak_bytes);
  }
  if (start_step < tc.steps) save_now(tc.steps);
  if (!tc.save_params.empty()) {
    if (sharded) sharded->gather_full();
    if (lead) {
      io::write_mort(tc.save_params, export_params(model, model.params));
      logf("saved parameters to %s\n", tc.save_params.c_str());
    }
  }
  if (start_step < tc.steps) log.summary(tc.steps);
  return 0;
}

namespace {
// eval's parameters: a .mort file, or an HDF5 checkpoint (a step directory, or a root whose newest
// checkpoint --resume auto would take), written on any number of ranks.
void load_eval_params(Model& model, const RunConfig& rc) {
  const std::string& src = rc.train.init_params;
  struct stat st;
  if (::stat(src.c_str(), &st) != 0) throw std::runtime_error("'" + src + "' (train.init_params) does not exist");
  if (!S_ISDIR(st.st_mode)) return import_params(model, io::read_mort(src), src);
  std::string note, dir = src;
  if (::stat((src + "/index.h5").c_str(), &st) != 0) dir = ckpt::resolve(src, "auto", &note);
  if (dir.empty()) throw std::runtime_error("'" + src + "' is neither a checkpoint nor a directory holding one");
  if (!note.empty()) logf("%s\n", note.c_str());
  const ckpt::Index idx = ckpt::read_index(dir);
  const std::string diff = config_difference(idx.state.model_config, rc.model);
  if (!diff.empty()) throw std::runtime_error("checkpoint '" + dir + "': model config differs: " + diff);
  ckpt::check_present(idx);
  ckpt::verify(idx);
  std::vector<ckpt::LocalTensor> all;  // every row of every tensor; the AdamW moments are not read
  for (const TensorInfo& t : model.layout.tensors)
    all.push_back({t.name, t.rows, t.cols, t.is_1d, 0, t.rows, model.params.data() + t.offset, nullptr, nullptr});
  ckpt::load_rows(idx, all);
  if (!ckpt::all_finite(model.params.data(), model.layout.total))
    throw ckpt::NonFiniteError("checkpoint '" + dir + "' holds NaN/inf parameters");
  logf("parameters from %s (step %lld, %zu shard file%s)\n", dir.c_str(), (long long)idx.state.step, idx.files.size(),
       idx.files.size() == 1 ? "" : "s");
}
}  // namespace

int cmd_eval(int argc, char** argv) {
  RunConfig rc;
  if (!parse_run_config(argc, argv, rc, "usage: mor-dist eval --config FILE --train.init_params P.mort|CHECKPOINT --data.val GLOB"))
    return 0;
  if (rc.train.init_params.empty()) throw ConfigError("train.init_params", "is required: the parameters to evaluate");
  if (rc.data.val.empty()) throw ConfigError("data.val", "is required: the validation shards");
  kern::set_num_threads(default_threads(rc.train.threads, 1).threads);
  kern::set_gemm_lib(gemm_lib_of(rc.train));
  Model model(rc.model);
  load_eval_params(model, rc);
  io::ValLoader val(rc.data.val, rc.model.seq_len, rc.model.vocab_size);
  const int micro = rc.train.micro_batch > 0 ? rc.train.micro_batch : 8;
  auto single = dist::make_single_process_comm();
  const double vl = evaluate(model, val, rc.train.eval_samples, micro, *single, true);
  logf("val_loss %.6f over %d windows of %d tokens\n", vl,
              rc.train.eval_samples > 0 ? std::min(rc.train.eval_samples, val.num_samples()) : val.num_samples(),
              rc.model.seq_len);
  return 0;
}

}  // namespace mor
