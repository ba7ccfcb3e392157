// The checks a resume (and eval from a checkpoint) makes against the run's options, and the guard
// that keeps a run from overwriting or pruning newer checkpoints.
#pragma once
#include <string>

#include "dist/communicator.h"
#include "io/ckpt/checkpoint.h"
#include "launcher/options.h"

namespace mor {

// The first model setting where a checkpoint's recorded config and this run's differ, or "".
std::string config_difference(const std::string& saved, const ModelConfig& now);
// Throws when the checkpoint cannot be resumed by this run (ConfigError: the options disagree).
void check_resumable(const ckpt::Index& idx, const RunConfig& rc);
// Logs what the LR does at the resume point when train.steps differs from the checkpoint's run.
void describe_schedule_change(const ckpt::TrainState& st, const RunConfig& rc);
// Refuses to overwrite or prune checkpoints newer than the resume point (or any, for a fresh
// start), or with --ckpt.allow_rewind moves them aside. Collective.
void guard_newer_checkpoints(const RunConfig& rc, const std::string& resume_dir, dist::Communicator& comm);

}  // namespace mor
