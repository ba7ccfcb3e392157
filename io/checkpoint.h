// HDF5 sharded checkpoints (format 1).
//
//   ROOT/step_00000123/shard_00000_of_00004.h5   one serial-HDF5 file per writing rank: its row
//   ROOT/step_00000123/...                        blocks of every tensor, in groups /param,
//                                                 /exp_avg, /exp_avg_sq (AdamW moments), fp32
//   ROOT/step_00000123/index.h5                   training state, config, shard map, XXH3-64 checksum per
//                                                 shard file, and one HDF5 virtual dataset per
//                                                 tensor over the shards (relative paths):
//                                                 h5py.File("index.h5")["model.embed_tokens.weight"][:]
//   ROOT/latest                                   "step_00000123", replaced atomically
//
// Saves are atomic: shards are written to step_N.tmp/ and fsynced, ranks agree
// that every write succeeded, rank 0 writes index.h5 last, renames the directory,
// fsyncs the parent, then replaces `latest` through a temporary file. A crash at
// any instant leaves the previous checkpoint (and `latest`) intact. Loading
// verifies every shard file's presence and checksum before reading (HDF5 would
// silently return fill values for a missing VDS source), then reads each rank's
// row range through the virtual datasets — so any world size can resume.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "dist/communicator.h"

namespace mor::ckpt {

constexpr int kFormatVersion = 1;

// One tensor as this rank holds it: rows [row0, row1) of a [rows, cols] tensor.
struct LocalTensor {
  std::string name;
  int64_t rows = 0, cols = 0;
  bool is_1d = false;
  int64_t row0 = 0, row1 = 0;
  float* param = nullptr;       // (row1 - row0) * cols floats each
  float* exp_avg = nullptr;
  float* exp_avg_sq = nullptr;
};

struct TrainState {
  int64_t step = 0;          // optimizer steps completed
  uint64_t next_sample = 0;  // data loader: first global sample of the next step
  int64_t adam_steps = 0;    // AdamW bias-correction counter
  uint64_t seed = 0;         // RNG state is derived from (seed, step): no per-rank streams
  int64_t tokens_seen = 0;
  int world_size = 1;        // at save
  std::string model_config;  // canonical [model]/[mor] INI: must match on resume
  std::string run_config;    // every option of the run, for the record
};

struct TensorMeta {
  std::string name;
  int64_t rows = 0, cols = 0;
  bool is_1d = false;
};

struct Index {
  std::string dir;
  int format_version = 0;
  std::string mor_version;
  TrainState state;
  std::vector<TensorMeta> tensors;
  std::vector<std::string> files;  // shard files, relative to dir
  std::vector<uint64_t> checksum;  // XXH3-64 of each shard file
};

// Collective: every rank passes its row blocks; returns the checkpoint directory.
// keep_last >= 2 complete checkpoints are kept (older ones are removed after `latest` moves).
// direct_io: shard files are written with O_DIRECT where the file system accepts it.
std::string save(const std::string& root, const TrainState& st, const std::vector<LocalTensor>& mine,
                 dist::Communicator& comm, int keep_last, bool direct_io = true);

// "auto" → ROOT/latest (or "" when ROOT has no checkpoint yet); anything else is a checkpoint dir.
std::string resolve(const std::string& root, const std::string& spec);

// Reads index.h5; throws naming the file on a missing/corrupt index or a newer format.
Index read_index(const std::string& dir);
// Every shard file present, its checksum as recorded, and the shards cover every row of every tensor once.
void verify(const Index& idx);
// Fills mine[i].param/exp_avg/exp_avg_sq (rows row0..row1) from the checkpoint; names must exist with equal shapes.
void load_rows(const Index& idx, const std::vector<LocalTensor>& mine);
// Fast path when the checkpoint was written by the same number of ranks: rank r reads
// its own shard file in ONE sequential pass, straight into `mine`, hashing it in file
// order, and throws on a checksum mismatch (nothing loaded is used before that check
// passes). Returns false (nothing read) when the row blocks do not line up. direct_io: read
// with O_DIRECT where the file system accepts it.
bool load_own_shard(const Index& idx, const std::vector<LocalTensor>& mine, int rank, int world, bool direct_io = true);
// Every shard file exists and the shard map covers every row once (no reading).
void check_present(const Index& idx);

// Offline re-sharding (mor-dist convert): streams tensor by tensor; under MPI the
// output files are spread over ranks. Bit-identical tensors.
void convert(const std::string& in_dir, const std::string& out_dir, int shards, dist::Communicator& comm);

// Human-readable summary + verification (mor-dist inspect). Throws on any problem.
std::string inspect(const std::string& dir);

// Rows of rank r when a tensor of `rows` rows is split into W blocks (the last ones may be short or empty).
inline void row_block(int64_t rows, int r, int W, int64_t& r0, int64_t& r1) {
  const int64_t per = (rows + W - 1) / W;
  r0 = std::min(rows, r * per);
  r1 = std::min(rows, (r + 1) * per);
}

}  // namespace mor::ckpt
