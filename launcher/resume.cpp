#include "launcher/resume.h"

#include <cerrno>
#include <cstring>
#include <ctime>
#include <sstream>
#include <stdexcept>
#include <vector>

#include "launcher/log.h"
#include "model/optimizer.h"

namespace mor {

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

// Why a checkpoint cannot be resumed by this run (ConfigError: the options disagree with it).
void check_resumable(const ckpt::Index& idx, const RunConfig& rc) {
  const std::string diff = config_difference(idx.state.model_config, rc.model);
  if (!diff.empty()) throw std::runtime_error("checkpoint '" + idx.dir + "': model config differs: " + diff);
  if (idx.state.next_sample != (uint64_t)idx.state.step * rc.train.global_batch)
    throw ConfigError("train.global_batch",
                      "is " + std::to_string(rc.train.global_batch) + " but checkpoint '" + idx.dir +
                          "' was trained with " +
                          std::to_string(idx.state.next_sample / std::max<int64_t>(1, idx.state.step)));
  if (idx.state.seed != rc.train.seed && !rc.ckpt.allow_seed_change)
    throw ConfigError("train.seed",
                      "is " + std::to_string(rc.train.seed) + " but checkpoint '" + idx.dir + "' was trained with " +
                          std::to_string(idx.state.seed) +
                          " (the seed orders the data); pass --ckpt.allow_seed_change true to change it anyway");
}

// A resumed run whose train.steps differs from the checkpoint's has another LR schedule (WSD and
// cosine are laid out over train.steps): say what the LR does at the resume point.
void describe_schedule_change(const ckpt::TrainState& st, const RunConfig& rc) {
  if (st.schedule_steps <= 0 || st.schedule_steps == rc.train.steps) return;
  OptimConfig before = rc.optim;
  before.total_steps = st.schedule_steps;
  logf(
      "note: the checkpoint's run had a %lld-step schedule, this one has %lld (train.steps): the %s learning rate at "
      "step "
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
    throw ConfigError(
        "ckpt.dir", what + " would overwrite or prune newer checkpoints:" + names +
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

}  // namespace mor
