// HDF5 sharded checkpoints (format 2).
//
//   ROOT/step_00000123/shard_00000_of_00004.h5   one serial-HDF5 file per writing rank: its row
//   ROOT/step_00000123/...                        blocks of every tensor, in groups /param,
//                                                 /exp_avg, /exp_avg_sq (AdamW moments), fp32
//   ROOT/step_00000123/index.h5                   training state, configs, shard map, XXH3-64 checksum
//                                                 and size per shard file, and one HDF5 virtual dataset
//                                                 per tensor over the shards (relative paths):
//                                                 h5py.File("index.h5")["model.embed_tokens.weight"][:]
//   ROOT/step_00000123/index.h5.xxh3              the index's own size and XXH3-64 ("seal"): checked
//                                                 before HDF5 parses the index
//   ROOT/latest                                   "step_00000123", replaced atomically
//
// Saves are atomic: shards are written to step_N.tmp/ and fsynced, ranks agree that every write
// succeeded, rank 0 writes index.h5 last, seals and re-reads it, renames the directory, fsyncs the
// parent, then replaces `latest` through a temporary file. A crash at any instant leaves the
// previous checkpoint (and `latest`) intact; a failed save removes its .tmp. Loading validates every
// index field, verifies every shard file's size and checksum before reading (HDF5 would silently
// return fill values for a missing VDS source), then reads each rank's row range through the
// virtual datasets — so any world size can resume.
#pragma once
#include <algorithm>
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "dist/communicator.h"
#include "dist/partition.h"

namespace mor::ckpt {

// 2: lists (shard files, sizes, checksums) and configs stored as datasets (no 64 KiB attribute
// limit), index.h5 protected by index.h5.xxh3. Format 1 (unsealed) is no longer read: an index is
// parsed only after its seal matched. parse_index_file still understands format 1's layout.
constexpr int kFormatVersion = 2;

// A checkpoint could not be written; the previous checkpoint and `latest` are untouched.
struct SaveError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
// Training state holds NaN/inf: never saved, never resumed from.
struct NonFiniteError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
// A stop signal ended an offline command (convert); its partial output was removed.
struct Interrupted : std::runtime_error {
  using std::runtime_error::runtime_error;
};

using RowRange = std::pair<int64_t, int64_t>;  // rows [first, second) of a tensor

// What a rank saves and loads: its rows of every tensor in each state group (dist::LocalState,
// built by ShardedParams::local_tensors or dist::whole_tensors from the optimizer's groups).
using dist::LocalState;
using LocalTensor = dist::ShardedTensor;
// The state groups of a format-2 checkpoint, in file order: the parameters (whose virtual datasets
// sit at the index's root) and AdamW's two moments. A save must hold exactly these; a load may ask
// for any of them (eval reads only "param"). An optimizer with other state needs a format that
// records its groups.
inline const std::vector<std::string> kStateGroups = {"param", "exp_avg", "exp_avg_sq"};

struct TrainState {
  int64_t step = 0;          // optimizer steps completed
  uint64_t next_sample = 0;  // data loader: first global sample of the next step
  int64_t adam_steps = 0;    // AdamW bias-correction counter
  uint64_t seed = 0;         // RNG state is derived from (seed, step): no per-rank streams
  int64_t tokens_seen = 0;
  int world_size = 1;          // at save
  std::string model_config;    // canonical [model]/[mor] INI: must match on resume
  std::string run_config;      // every option of the run, for the record
  std::string writer;          // the writing binary's version line (mor::version_string()); "" = MOR_VERSION
  int64_t schedule_steps = 0;  // train.steps the LR schedule was laid out over (0 = not recorded)
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
  std::vector<std::vector<RowRange>> map;  // [tensor][shard file]: the rows that file holds, as stored
  std::vector<std::string> files;          // shard files, relative to dir
  std::vector<uint64_t> checksum;          // XXH3-64 of each shard file
  std::vector<uint64_t> bytes;             // size of each shard file (format >= 2; empty for format 1)
  bool sealed = false;                     // index.h5 was checked against index.h5.xxh3 before parsing
};

// Collective: every rank passes its row blocks; returns the checkpoint directory.
// keep_last >= 2 complete checkpoints are kept: after `latest` moves, checkpoints with a smaller
// recorded step than the new one are removed, oldest first, never the one `latest` named before.
// direct_io: shard files are written with O_DIRECT where the file system accepts it.
// Throws SaveError (every rank, together) when anything fails: the partial step_N.tmp is removed,
// the previous checkpoint and `latest` are untouched. Throws NonFiniteError for NaN/inf state.
// Never writes into an existing checkpoint directory.
std::string save(const std::string& root, const TrainState& st, const LocalState& mine, dist::Communicator& comm,
                 int keep_last, bool direct_io = true);

// A complete checkpoint found under a root, by the step its index records.
struct Found {
  std::string dir;
  int64_t step = 0;
};
struct Skipped {
  std::string dir, reason;
};
// Complete checkpoints directly under root (step_N with a readable, sealed index and every shard
// file present at its recorded size), sorted by recorded step. `skipped` (if given) gets each
// step_N directory that did not qualify, with the reason.
std::vector<Found> list_checkpoints(const std::string& root, std::vector<Skipped>* skipped = nullptr);

// What a run resumes from. spec "auto": ROOT/latest when it names a complete checkpoint and none
// newer exists; else the newest complete checkpoint by recorded step (`note` says why); "" when ROOT
// holds none. Anything else: that checkpoint directory. `note` gets a line for the log (may be empty).
std::string resolve(const std::string& root, const std::string& spec, std::string* note = nullptr);

// Reads and validates DIR/index.h5 (after checking it against DIR/index.h5.xxh3); throws naming
// the file and the field on anything missing, corrupt, inconsistent or from a newer format.
Index read_index(const std::string& dir);
// The same for an index file at `path` describing checkpoint directory `dir`, without the
// checksum file (fuzzing, tools): every field is validated all the same.
Index parse_index_file(const std::string& path, const std::string& dir);
// Every shard file present (at its recorded size), its checksum as recorded, and the stored shard
// map covers every row of every tensor once. With a communicator, the files are hashed in
// parallel (file j on rank j % W) and every rank throws on any mismatch.
void verify(const Index& idx, dist::Communicator* comm = nullptr);
// Rewrites DIR/index.h5.xxh3 for the index.h5 that is there now (tests and repair tools only).
void seal_index(const std::string& dir);
// Fills every group of `mine` (rows row0..row1 of each tensor) from the checkpoint; names must exist
// with equal shapes.
void load_rows(const Index& idx, const LocalState& mine);
// Fast path when the checkpoint was written by the same number of ranks: rank r reads
// its own shard file in ONE sequential pass, straight into `mine`, hashing it in file
// order, and throws on a checksum mismatch (nothing loaded is used before that check
// passes). Returns false (nothing read) when the row blocks do not line up. direct_io: read
// with O_DIRECT where the file system accepts it.
bool load_own_file(const Index& idx, const LocalState& mine, int rank, int world, bool direct_io = true);
// Every shard file exists and the shard map covers every row once (no reading).
void check_present(const Index& idx);

// Offline re-sharding (mor-dist convert): streams tensor by tensor; under MPI the
// output files are spread over ranks. Bit-identical tensors. `shards` is bounded by the largest
// tensor's row count (more files would be empty). `interrupted` is polled between tensors: when it
// returns true the partial output is removed and Interrupted is thrown.
void convert(const std::string& in_dir, const std::string& out_dir, int shards, dist::Communicator& comm,
             const std::function<bool()>& interrupted = {});
// The largest shard count convert accepts for this checkpoint.
int64_t max_shards(const Index& idx);

// Human-readable summary + verification (mor-dist inspect). Throws on any problem: the stored shard
// map covers every row once, every virtual dataset maps to existing source datasets of the right
// shape, every shard file's checksum matches and (unless quick) every value is finite.
// expected (if non-empty): the tensors the checkpoint's model config implies; each must be present
// with its shape, and no other may be.
std::string inspect(const std::string& dir, bool quick = false, const std::vector<TensorMeta>& expected = {});

// Every value of `n` floats finite (vectorised, ~memory speed).
bool all_finite(const float* p, int64_t n);
// The first block of `mine` (parameters or an optimizer state) holding NaN/inf, as "'name' (group)"; "".
std::string first_non_finite(const LocalState& mine);

// Rows of rank r when a tensor of `rows` rows is split into W blocks (the last ones may be short or empty).
// (dist::row_block: the same rule as the parameter shards, so same-world-size resumes line up.)
inline void row_block(int64_t rows, int r, int W, int64_t& r0, int64_t& r1) {
  const dist::RowBlock b = dist::row_block(rows, r, W);
  r0 = b.begin;
  r1 = b.end;
}

// Index internals shared by the save, load and convert code (io/ckpt/checkpoint_index.cpp).
namespace detail {
std::string shard_file_name(int j, int W);
// Writes DIR/index.h5 and seals it (DIR/index.h5.xxh3), both fsynced. Throws on any error.
void write_index(const std::string& dir, const TrainState& st, const std::vector<TensorMeta>& tensors,
                 const std::vector<std::vector<RowRange>>& map, const std::vector<uint64_t>& checksums,
                 const std::vector<uint64_t>& bytes);
// The even row-block split of every tensor over W files.
std::vector<std::vector<RowRange>> block_map(const std::vector<TensorMeta>& tensors, int W);
// Sorted, contiguous blocks spanning [0, rows) for every tensor, one per file.
void check_coverage(const std::vector<TensorMeta>& tensors, const std::vector<std::vector<RowRange>>& map,
                    const std::string& where);
// Every virtual dataset of index.h5 maps exactly the stored shard map onto existing source datasets.
void check_virtual_datasets(const Index& idx);
uint64_t file_checksum(const std::string& path);
void fsync_path(const std::string& path);
}  // namespace detail

}  // namespace mor::ckpt
