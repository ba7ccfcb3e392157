// Saving, finding, verifying, loading, converting and inspecting HDF5 sharded checkpoints.
// index.h5 itself (writing, sealing, validated reading) lives in checkpoint_index.cpp.
#include "io/ckpt/checkpoint.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <map>
#include <sstream>
#include <thread>

#include "io/ckpt/h5_util.h"
#include "io/ckpt/shard_stream.h"

namespace mor::ckpt {

using detail::fsync_path;
using detail::shard_file_name;
using h5::fail;
using h5::Handle;

namespace {

const std::vector<std::string>& kGroups = kStateGroups;

// Where group `name` of a LocalState lies: its position in kStateGroups; throws for another name.
size_t group_index(const std::string& name) {
  for (size_t g = 0; g < kGroups.size(); ++g)
    if (kGroups[g] == name) return g;
  throw std::logic_error("checkpoint: no state group '" + name + "' in format " + std::to_string(kFormatVersion));
}

// ---- small POSIX helpers --------------------------------------------------------
bool exists(const std::string& p) {
  struct stat st;
  return ::lstat(p.c_str(), &st) == 0;
}
bool is_dir(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}
int64_t file_size(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0 ? (int64_t)st.st_size : -1;
}
void make_dir(const std::string& p) {
  if (::mkdir(p.c_str(), 0755) != 0 && !(errno == EEXIST && is_dir(p)))
    fail(p, std::string("cannot create directory: ") + std::strerror(errno));
}
// Removes a checkpoint directory (flat: files only). Returns "" or what went wrong.
std::string remove_tree(const std::string& p) {
  std::string err;
  if (DIR* d = ::opendir(p.c_str())) {
    while (dirent* e = ::readdir(d)) {
      const std::string n = e->d_name;
      if (n != "." && n != ".." && ::unlink((p + "/" + n).c_str()) != 0 && err.empty())
        err = p + "/" + n + ": " + std::strerror(errno);
    }
    ::closedir(d);
  }
  if (::rmdir(p.c_str()) != 0 && errno != ENOENT && err.empty()) err = p + ": " + std::strerror(errno);
  return err;
}
void rename_or_fail(const std::string& from, const std::string& to) {
  if (::rename(from.c_str(), to.c_str()) != 0) fail(to, "rename from '" + from + "' failed: " + std::strerror(errno));
}
std::string step_name(int64_t step) {
  char b[32];
  std::snprintf(b, sizeof b, "step_%08lld", (long long)step);
  return b;
}
// "step_" followed by digits only: a checkpoint directory's name (not .tmp, not set aside).
bool is_step_name(const std::string& n) {
  if (n.size() < 6 || n.size() > 30 || n.compare(0, 5, "step_") != 0) return false;
  return std::all_of(n.begin() + 5, n.end(), [](char c) { return c >= '0' && c <= '9'; });
}
std::string read_small_file(const std::string& p, size_t max) {
  FILE* f = std::fopen(p.c_str(), "rb");
  if (!f) return {};
  std::string s(max, '\0');
  s.resize(std::fread(s.data(), 1, max, f));
  std::fclose(f);
  return s;
}
// What root/latest holds, without its newline ("" when there is none). Only read, never trusted:
// callers accept it only as a plain step-directory name.
std::string read_latest(const std::string& root) {
  std::string name = read_small_file(root + "/latest", 256);
  while (!name.empty() && (name.back() == '\n' || name.back() == '\r')) name.pop_back();
  return name;
}
// Cleanup on a failure path: a directory that cannot be removed is reported, not fatal (the error
// being reported is the one that matters).
void remove_or_warn(const std::string& dir) {
  if (const std::string e = remove_tree(dir); !e.empty())
    std::fprintf(stderr, "warning: could not remove %s\n", e.c_str());
}

// Writes `text` to root/name through name.tmp, fsyncs it and the directory, renames.
void replace_file(const std::string& root, const std::string& name, const std::string& text) {
  const std::string tmp = root + "/" + name + ".tmp", dst = root + "/" + name;
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail(tmp, std::string("cannot create: ") + std::strerror(errno));
  const ssize_t w = ::write(fd, text.data(), text.size());
  const int e = w < 0 ? errno : (size_t)w != text.size() ? ENOSPC : 0;
  const int s = e ? 0 : (::fsync(fd) != 0 ? errno : 0);
  ::close(fd);
  if (e || s) {
    ::unlink(tmp.c_str());
    fail(tmp, std::string(e ? "write failed: " : "fsync failed: ") + std::strerror(e ? e : s));
  }
  rename_or_fail(tmp, dst);
  fsync_path(root);
}

// The shard file of rank r: HDF5 lays it out (datasets allocated, not written); then the bytes go to
// disk in one sequential, hashed pass: no read-back for the checksum, no copies inside the library.
uint64_t write_shard_file(const std::string& file, int r, int W, const LocalState& mine, bool direct_io) {
  std::vector<Span> spans;
  {
    Handle f = h5::create_file(file);
    h5::write_attr_i64(f, "rank", r, file);
    h5::write_attr_i64(f, "world_size", W, file);
    Handle dcpl(H5Pcreate(H5P_DATASET_CREATE));
    if (!dcpl.valid() || H5Pset_layout(dcpl, H5D_CONTIGUOUS) < 0 || H5Pset_alloc_time(dcpl, H5D_ALLOC_TIME_EARLY) < 0 ||
        H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER) < 0)
      fail(file, "cannot set up dataset properties");
    for (size_t g = 0; g < mine.groups.size(); ++g) {
      Handle grp = h5::create_group(f, mine.groups[g].c_str(), file);
      for (const auto& t : mine.tensors) {
        if (t.row1 <= t.row0) continue;
        const std::vector<hsize_t> d = t.is_1d ? std::vector<hsize_t>{(hsize_t)(t.row1 - t.row0)}
                                               : std::vector<hsize_t>{(hsize_t)(t.row1 - t.row0), (hsize_t)t.cols};
        Handle s(H5Screate_simple((int)d.size(), d.data(), nullptr));
        Handle ds(H5Dcreate2(grp, t.name.c_str(), H5T_IEEE_F32LE, s, H5P_DEFAULT, dcpl, H5P_DEFAULT));
        const haddr_t off = ds.valid() ? H5Dget_offset(ds) : HADDR_UNDEF;
        if (off == HADDR_UNDEF) fail(file, "cannot create dataset '" + mine.groups[g] + "/" + t.name + "'");
        const uint64_t len = (uint64_t)(t.row1 - t.row0) * t.cols * sizeof(float);
        spans.push_back({(uint64_t)off, len, reinterpret_cast<char*>(t.data[g])});
      }
    }
    dcpl.close();
    h5::close_written(f, file);
  }
  return stream_write(file, std::move(spans), direct_io);
}

// What crashed saves and prunes leave behind: step_N.tmp and step_N.deleting directories.
void remove_debris(const std::string& root) {
  std::vector<std::string> debris;
  if (DIR* d = ::opendir(root.c_str())) {
    while (dirent* e = ::readdir(d)) {
      const std::string n = e->d_name;
      for (const char* suffix : {".tmp", ".deleting"}) {
        const size_t k = std::strlen(suffix);
        if (n.size() > k && n.compare(n.size() - k, k, suffix) == 0 && is_step_name(n.substr(0, n.size() - k)))
          debris.push_back(root + "/" + n);
      }
    }
    ::closedir(d);
  }
  for (const auto& p : debris) remove_or_warn(p);
}

// Rank 0, after the shards: index (sealed), re-read, rename, `latest`. On failure nothing of this
// save stays visible: the directory is removed and `latest` still names the previous checkpoint.
void publish(const std::string& root, const std::string& tmp, const std::string& final_dir, const TrainState& st,
             const std::vector<TensorMeta>& tensors, const std::vector<std::vector<RowRange>>& map,
             const std::vector<uint64_t>& checksums, const std::vector<uint64_t>& bytes) {
  detail::write_index(tmp, st, tensors, map, checksums, bytes);
  const Index back = read_index(tmp);  // what a resume will read, checked before anything points at it
  if (back.state.step != st.step || back.checksum != checksums || back.tensors.size() != tensors.size())
    fail(tmp + "/index.h5", "reads back differently from what was written");
  fsync_path(tmp);
  if (exists(final_dir)) fail(final_dir, "already exists: a save never overwrites a checkpoint");
  rename_or_fail(tmp, final_dir);
  try {
    fsync_path(root);
    replace_file(root, "latest", final_dir.substr(final_dir.find_last_of('/') + 1) + "\n");
  } catch (...) {
    // Back out (`latest` was not moved). Should even that fail, final_dir is a complete checkpoint
    // that --resume auto would take: say so rather than leave it unexplained.
    if (::rename(final_dir.c_str(), tmp.c_str()) != 0)
      std::fprintf(stderr, "warning: %s is complete but 'latest' could not be moved to it: %s\n", final_dir.c_str(),
                   std::strerror(errno));
    throw;
  }
}

// Removes checkpoints older than the one just committed beyond the newest keep_last, never
// `protect` (what `latest` named before). A failure to remove is a warning, not a lost save.
void prune(const std::string& root, int64_t committed, int keep_last, const std::string& protect) {
  std::vector<Found> older;
  for (const auto& c : list_checkpoints(root))
    if (c.step <= committed) older.push_back(c);
  for (size_t i = 0; i + keep_last < older.size(); ++i) {
    if (older[i].dir == protect || older[i].step >= committed) continue;
    // Renamed first: a crash while its files are unlinked leaves debris, never a half checkpoint
    // under a checkpoint's name.
    const std::string doomed = older[i].dir + ".deleting";
    std::string e = ::rename(older[i].dir.c_str(), doomed.c_str()) == 0 ? remove_tree(doomed)
                                                                        : older[i].dir + ": " + std::strerror(errno);
    if (!e.empty()) std::fprintf(stderr, "warning: could not remove old checkpoint: %s\n", e.c_str());
  }
}

// Shard files present at their recorded sizes; returns "" or the problem.
std::string shard_files_problem(const Index& idx) {
  for (size_t j = 0; j < idx.files.size(); ++j) {
    const std::string p = idx.dir + "/" + idx.files[j];
    const int64_t n = file_size(p);
    if (n < 0) return "'" + p + "': shard file is missing";
    if (!idx.bytes.empty() && (uint64_t)n != idx.bytes[j])
      return "'" + p + "': shard file is " + std::to_string(n) + " bytes, index.h5 records " +
             std::to_string(idx.bytes[j]);
  }
  return "";
}

void check_checksum(const std::string& path, uint64_t got, uint64_t want) {
  if (got == want) return;
  char b[128];
  std::snprintf(b, sizeof b, "checksum mismatch (XXH3-64 %016llx, index.h5 records %016llx)", (unsigned long long)got,
                (unsigned long long)want);
  fail(path, b);
}

const TensorMeta& find_tensor(const Index& idx, const LocalTensor& t, size_t* pos) {
  for (size_t i = 0; i < idx.tensors.size(); ++i)
    if (idx.tensors[i].name == t.name) {
      const TensorMeta& m = idx.tensors[i];
      if (m.rows != t.rows || m.cols != t.cols || m.is_1d != t.is_1d)
        fail(idx.dir + "/index.h5", "tensor '" + t.name + "' is [" + std::to_string(m.rows) + ", " +
                                        std::to_string(m.cols) + "] in the checkpoint but [" + std::to_string(t.rows) +
                                        ", " + std::to_string(t.cols) + "] in this model");
      if (pos) *pos = i;
      return m;
    }
  fail(idx.dir + "/index.h5", "has no tensor '" + t.name + "' (another model?)");
}

void check_same_tensors(const Index& idx, const LocalState& mine) {
  if (mine.tensors.size() != idx.tensors.size())
    fail(idx.dir + "/index.h5", "holds " + std::to_string(idx.tensors.size()) + " tensors but this model has " +
                                    std::to_string(mine.tensors.size()));
  for (const auto& t : mine.tensors) {
    find_tensor(idx, t, nullptr);
    if (t.data.size() != mine.groups.size())
      throw std::logic_error("checkpoint: tensor '" + t.name + "' lacks a group's array");
  }
  for (const auto& g : mine.groups) group_index(g);
}

// Reads rows [r0, r1) of dataset `name` (a virtual one in index.h5, or a shard file's own) into out.
void read_rows(hid_t loc, const std::string& name, const TensorMeta& t, int64_t full_rows, int64_t r0, int64_t r1,
               float* out, const std::string& file) {
  if (r1 <= r0) return;
  Handle ds = h5::open_dataset(loc, name, file);
  const std::vector<hsize_t> full =
      t.is_1d ? std::vector<hsize_t>{(hsize_t)full_rows} : std::vector<hsize_t>{(hsize_t)full_rows, (hsize_t)t.cols};
  if (h5::dims(ds, (int)full.size(), name, file) != full)
    fail(file, "dataset '" + name + "' has another shape than the model");
  Handle fs(H5Dget_space(ds));
  std::vector<hsize_t> start(full.size(), 0), count = full;
  start[0] = (hsize_t)r0;
  count[0] = (hsize_t)(r1 - r0);
  const bool whole = r0 == 0 && r1 == full_rows;  // H5S_ALL takes HDF5's direct path
  if (!whole && H5Sselect_hyperslab(fs, H5S_SELECT_SET, start.data(), nullptr, count.data(), nullptr) < 0)
    fail(file, "cannot select rows of '" + name + "'");
  Handle ms(whole ? H5I_INVALID_HID : H5Screate_simple((int)count.size(), count.data(), nullptr));
  if (H5Dread(ds, H5T_NATIVE_FLOAT, whole ? H5S_ALL : (hid_t)ms, whole ? H5S_ALL : (hid_t)fs, H5P_DEFAULT, out) < 0)
    fail(file, "cannot read dataset '" + name + "'");
}

}  // namespace

bool all_finite(const float* p, int64_t n) {
  // x - x is 0 for finite x and NaN otherwise; the OR of the bit patterns stays 0 only if all are
  // finite. No early exit: the loop vectorises and runs at memory speed.
  uint32_t acc = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float d = p[i] - p[i];
    uint32_t b;
    std::memcpy(&b, &d, 4);
    acc |= b;
  }
  return acc == 0;
}

std::string first_non_finite(const LocalState& mine) {
  for (const auto& t : mine.tensors)
    for (size_t g = 0; g < t.data.size() && g < mine.groups.size(); ++g)
      if (const float* p = t.data[g]; p && !all_finite(p, t.local_numel()))
        return "'" + t.name + "' (" + mine.groups[g] + ")";
  return "";
}

std::string save(const std::string& root, const TrainState& st, const LocalState& mine, dist::Communicator& comm,
                 int keep_last, bool direct_io) {
  if (mine.groups != kStateGroups)
    throw std::logic_error("checkpoint: a format-2 save holds exactly param, exp_avg, exp_avg_sq");
  for (const auto& t : mine.tensors)
    if (t.data.size() != mine.groups.size())
      throw std::logic_error("checkpoint: tensor '" + t.name + "' lacks a group's array");
  const int W = comm.size(), r = comm.rank();
  const std::string final_dir = root + "/" + step_name(st.step), tmp = final_dir + ".tmp";
  std::vector<TensorMeta> tensors;
  for (const auto& t : mine.tensors) tensors.push_back({t.name, t.rows, t.cols, t.is_1d});
  const auto map = detail::block_map(tensors, W);
  // 0. nothing non-finite is ever saved; rank 0 prepares the directory
  std::string err, bad = first_non_finite(mine);
  if (r == 0 && bad.empty()) {
    try {
      detail::check_coverage(tensors, map, final_dir);
      make_dir(root);
      if (exists(final_dir)) fail(final_dir, "already exists: a save never overwrites a checkpoint");
      remove_debris(root);
      make_dir(tmp);
    } catch (const std::exception& e) {
      err = e.what();
    }
  }
  double pre[2] = {bad.empty() ? 0.0 : 1.0, err.empty() ? 0.0 : 1.0};
  comm.all_reduce_sum(pre, 2, "allreduce/checkpoint");
  if (pre[0] > 0)
    throw NonFiniteError("refusing to save step " + std::to_string(st.step) + ": " +
                         (bad.empty() ? "another rank's" : "tensor " + bad) + " holds NaN/inf values");
  if (pre[1] > 0)
    throw SaveError(err.empty() ? "checkpoint '" + final_dir + "': rank 0 could not prepare the save" : err);
  // 1. every rank writes and fsyncs its shard file
  uint64_t checksum = 0, bytes = 0;
  const std::string file = tmp + "/" + shard_file_name(r, W);
  try {
    for (size_t t = 0; t < mine.tensors.size(); ++t)
      if (mine.tensors[t].row0 != map[t][r].first || mine.tensors[t].row1 != map[t][r].second)
        fail(file,
             "rank " + std::to_string(r) + " holds rows of '" + mine.tensors[t].name + "' that are not its block");
    checksum = write_shard_file(file, r, W, mine, direct_io);
    bytes = (uint64_t)file_size(file);
  } catch (const std::exception& e) {
    err = e.what();
  }
  // 2. agree that every write succeeded and collect the checksums and sizes
  // (one uint64 sum: each rank fills only its own slots: [checksums W][sizes W][failed ranks])
  std::vector<uint64_t> agree(2 * (size_t)W + 1, 0);
  agree[r] = checksum;
  agree[W + r] = bytes;
  agree[2 * W] = err.empty() ? 0 : 1;
  comm.all_reduce_sum(agree.data(), (int64_t)agree.size(), "allreduce/checkpoint");
  // Test-only window between the shards and the index (the kill -9 tests aim here).
  if (const char* ms = std::getenv("MOR_TEST_SAVE_DELAY_MS"))
    std::this_thread::sleep_for(std::chrono::milliseconds(std::atoi(ms)));
  // 3. rank 0: index last, rename, latest; then prune
  if (r == 0 && agree[2 * W] == 0) {
    try {
      const std::vector<uint64_t> checksums(agree.begin(), agree.begin() + W),
          sizes(agree.begin() + W, agree.begin() + 2 * W);
      const std::string protect = root + "/" + read_latest(root);
      publish(root, tmp, final_dir, st, tensors, map, checksums, sizes);
      prune(root, st.step, keep_last, protect);
    } catch (const std::exception& e) {
      err = e.what();
    }
  }
  double fin = (r == 0 && !err.empty()) ? 1.0 : 0.0;
  comm.all_reduce_sum(&fin, 1, "allreduce/checkpoint");
  if (!err.empty() || agree[2 * W] > 0 || fin > 0) {
    if (r == 0) remove_or_warn(tmp);  // the previous checkpoint and `latest` stay as they were
    if (!err.empty()) throw SaveError(err);
    throw SaveError("checkpoint '" + final_dir + "': another rank failed to write its part (see its message)");
  }
  return final_dir;
}

std::vector<Found> list_checkpoints(const std::string& root, std::vector<Skipped>* skipped) {
  std::vector<Found> v;
  std::vector<std::string> names;
  if (DIR* d = ::opendir(root.c_str())) {
    while (dirent* e = ::readdir(d))
      if (is_step_name(e->d_name)) names.push_back(e->d_name);
    ::closedir(d);
  }
  std::sort(names.begin(), names.end());
  for (const auto& n : names) {
    const std::string dir = root + "/" + n;
    try {
      if (!is_dir(dir)) fail(dir, "is not a directory");
      const Index idx = read_index(dir);
      if (const std::string p = shard_files_problem(idx); !p.empty()) throw std::runtime_error("checkpoint " + p);
      v.push_back({dir, idx.state.step});
    } catch (const std::exception& e) {
      if (skipped) skipped->push_back({dir, e.what()});
    }
  }
  std::stable_sort(v.begin(), v.end(), [](const Found& a, const Found& b) { return a.step < b.step; });
  return v;
}

std::string resolve(const std::string& root, const std::string& spec, std::string* note) {
  if (note) note->clear();
  if (spec != "auto") {
    if (!exists(spec)) fail(spec, "does not exist");
    if (!is_dir(spec)) fail(spec, "is not a checkpoint directory");
    if (!exists(spec + "/index.h5")) fail(spec, "not a complete checkpoint (no index.h5)");
    return spec;
  }
  std::vector<Skipped> skipped;
  const auto found = list_checkpoints(root, &skipped);
  // `latest` must hold one plain step-directory name: never a path that leads elsewhere.
  const std::string name = read_latest(root);
  std::string why_not;
  if (!exists(root + "/latest"))
    why_not = "there is no 'latest'";
  else if (!is_step_name(name))
    why_not = "'latest' does not hold a step directory name";
  const Found* named = nullptr;
  for (const auto& f : found)
    if (why_not.empty() && f.dir == root + "/" + name) named = &f;
  if (why_not.empty() && !named) {
    if (is_dir(root + "/" + name)) {  // it exists but cannot be used: say why rather than go back silently
      std::string reason = "not a complete checkpoint";
      for (const auto& s : skipped)
        if (s.dir == root + "/" + name) reason = s.reason;
      std::string others;
      for (const auto& f : found) others += " " + f.dir;
      fail(root + "/latest",
           "names '" + name + "', which cannot be used: " + reason +
               (others.empty() ? "" : ". Complete checkpoints here:" + others + " (resume one with --resume DIR)"));
    }
    why_not = "'latest' names '" + name + "', which does not exist";
  }
  if (found.empty()) {
    if (!skipped.empty()) {
      std::string all;
      for (const auto& s : skipped) all += "\n  " + s.reason;
      fail(root, "holds step directories but no complete checkpoint:" + all);
    }
    return "";
  }
  const Found& newest = found.back();
  if (named && named->step >= newest.step) return named->dir;
  if (note)
    *note = (named ? "'latest' names " + named->dir + " but " : why_not + "; ") + newest.dir + " (step " +
            std::to_string(newest.step) + ") is the newest complete checkpoint: resuming from it";
  return newest.dir;
}

void verify(const Index& idx, dist::Communicator* comm) {
  const int W = comm ? comm->size() : 1, r = comm ? comm->rank() : 0;
  std::string err = r == 0 ? shard_files_problem(idx) : "";
  if (err.empty()) {
    try {
      for (size_t j = r; j < idx.files.size(); j += W) {
        const std::string p = idx.dir + "/" + idx.files[j];
        check_checksum(p, detail::file_checksum(p), idx.checksum[j]);
      }
    } catch (const std::exception& e) {
      err = e.what();
    }
  } else {
    err = "checkpoint " + err;
  }
  double bad = err.empty() ? 0 : 1;
  if (comm) comm->all_reduce_sum(&bad, 1, "allreduce/verify");
  if (!err.empty()) throw std::runtime_error(err);
  if (bad > 0)
    throw std::runtime_error("checkpoint '" + idx.dir + "': another rank found a damaged shard file (see its message)");
}

void load_rows(const Index& idx, const LocalState& mine) {
  check_same_tensors(idx, mine);
  const std::string path = idx.dir + "/index.h5";
  Handle f = h5::open_file(path);
  for (size_t g = 0; g < mine.groups.size(); ++g) {
    // The parameters' virtual datasets sit at the index's root, each other group's in its group.
    Handle grp = mine.groups[g] == kGroups[0] ? Handle() : h5::open_group(f, mine.groups[g].c_str(), path);
    const hid_t loc = mine.groups[g] == kGroups[0] ? (hid_t)f : (hid_t)grp;
    for (const auto& t : mine.tensors) {
      const TensorMeta& m = find_tensor(idx, t, nullptr);
      if (t.data[g]) read_rows(loc, t.name, m, m.rows, t.row0, t.row1, t.data[g], path);
    }
  }
}

bool load_own_file(const Index& idx, const LocalState& mine, int rank, int world, bool direct_io) {
  if ((int)idx.files.size() != world) return false;
  check_same_tensors(idx, mine);
  for (const auto& t : mine.tensors) {  // this rank must hold exactly the rows the stored map gives file `rank`
    size_t i = 0;
    find_tensor(idx, t, &i);
    if (idx.map[i][rank] != RowRange{t.row0, t.row1}) return false;
  }
  const std::string path = idx.dir + "/" + idx.files[rank];
  if (!idx.bytes.empty() && (uint64_t)file_size(path) != idx.bytes[rank])
    fail(path, file_size(path) < 0 ? "shard file is missing"
                                   : "shard file is " + std::to_string(file_size(path)) + " bytes, index.h5 records " +
                                         std::to_string(idx.bytes[rank]));
  // 1. where each row block lies in the file (contiguous datasets: one extent each)
  std::vector<Span> ext;
  {
    Handle f = h5::open_file(path);
    for (size_t g = 0; g < kGroups.size(); ++g) {  // in file order: one sequential pass
      const auto held = std::find(mine.groups.begin(), mine.groups.end(), kGroups[g]);
      if (held == mine.groups.end()) continue;  // not asked for: hashed, not placed
      Handle grp = h5::open_group(f, kGroups[g].c_str(), path);
      for (const auto& t : mine.tensors) {
        float* dst = t.data[held - mine.groups.begin()];
        if (t.row1 <= t.row0 || !dst) continue;
        Handle d = h5::open_dataset(grp, t.name, path);
        const haddr_t off = H5Dget_offset(d);
        const uint64_t len = (uint64_t)(t.row1 - t.row0) * t.cols * sizeof(float);
        if (off == HADDR_UNDEF || H5Dget_storage_size(d) != len)
          fail(path, "dataset '" + kGroups[g] + "/" + t.name + "' is not a contiguous block of the expected size");
        ext.push_back({(uint64_t)off, len, reinterpret_cast<char*>(dst)});
      }
    }
  }
  // 2. one sequential pass: row blocks straight into place, everything hashed
  check_checksum(path, stream_read(path, std::move(ext), direct_io), idx.checksum[rank]);
  return true;
}

void check_present(const Index& idx) {
  if (const std::string p = shard_files_problem(idx); !p.empty()) throw std::runtime_error("checkpoint " + p);
  detail::check_coverage(idx.tensors, idx.map, idx.dir + "/index.h5");
}

int64_t max_shards(const Index& idx) {
  int64_t rows = 1;
  for (const auto& t : idx.tensors) rows = std::max(rows, t.rows);
  const int64_t by_map = (int64_t(1) << 27) / std::max<int64_t>(1, (int64_t)idx.tensors.size());
  return std::min({rows, by_map, int64_t(1) << 24});
}

namespace {
// Shard file j of `shards` of a conversion: every group's rows map[.][j] of every tensor, read
// through the input index's virtual datasets (src: one location per group), one row block in memory
// at a time. False when `interrupted` said to stop (the file is then incomplete).
bool write_converted_file(const std::string& p, const Index& idx, const std::vector<std::vector<RowRange>>& map, int j,
                          int shards, const std::vector<hid_t>& src, const std::string& in_index,
                          const std::function<bool()>& interrupted) {
  std::vector<float> buf;
  Handle f = h5::create_file(p);
  h5::write_attr_i64(f, "rank", j, p);
  h5::write_attr_i64(f, "world_size", shards, p);
  for (size_t g = 0; g < kGroups.size(); ++g) {
    Handle grp = h5::create_group(f, kGroups[g].c_str(), p);
    for (size_t t = 0; t < idx.tensors.size(); ++t) {
      if (interrupted && interrupted()) return false;
      const auto [a, b] = map[t][j];
      if (b <= a) continue;
      const TensorMeta& tm = idx.tensors[t];
      buf.resize((size_t)(b - a) * tm.cols);
      read_rows(src[g], tm.name, tm, tm.rows, a, b, buf.data(), in_index);
      if (!all_finite(buf.data(), (int64_t)buf.size()))
        fail(in_index, "tensor '" + kGroups[g] + "/" + tm.name + "' holds NaN/inf values: refusing to convert");
      const std::vector<hsize_t> d =
          tm.is_1d ? std::vector<hsize_t>{(hsize_t)(b - a)} : std::vector<hsize_t>{(hsize_t)(b - a), (hsize_t)tm.cols};
      Handle s(H5Screate_simple((int)d.size(), d.data(), nullptr));
      Handle ds(H5Dcreate2(grp, tm.name.c_str(), H5T_IEEE_F32LE, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
      if (!ds.valid() || H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf.data()) < 0)
        fail(p, "cannot write dataset '" + kGroups[g] + "/" + tm.name + "'");
    }
  }
  h5::close_written(f, p);
  return true;
}
}  // namespace

void convert(const std::string& in_dir, const std::string& out_dir, int shards, dist::Communicator& comm,
             const std::function<bool()>& interrupted) {
  const Index idx = read_index(in_dir);
  if (shards < 1 || shards > max_shards(idx))  // before anything is allocated for them
    throw std::runtime_error("convert: --shards " + std::to_string(shards) + " is outside [1, " +
                             std::to_string(max_shards(idx)) +
                             "] for this checkpoint (its largest tensor has that many rows)");
  check_present(idx);
  verify(idx, &comm);
  const std::string tmp = out_dir + ".tmp";
  std::string err;
  if (comm.rank() == 0) {
    try {
      if (exists(out_dir)) fail(out_dir, "already exists: convert never overwrites");
      if (exists(tmp))
        if (const std::string e = remove_tree(tmp); !e.empty()) fail(tmp, "cannot remove a stale partial output: " + e);
      make_dir(tmp);
    } catch (const std::exception& e) {
      err = e.what();
    }
  }
  double pre = err.empty() ? 0 : 1;
  comm.all_reduce_sum(&pre, 1, "allreduce/convert");
  if (!err.empty()) throw std::runtime_error(err);
  if (pre > 0) throw std::runtime_error("convert: rank 0 could not create '" + tmp + "'");
  const auto map = detail::block_map(idx.tensors, shards);
  const std::string in_index = in_dir + "/index.h5";
  std::vector<uint64_t> sums(2 * (size_t)shards + 1, 0);  // [checksums][sizes][failures], summed over ranks
  bool stopped = false;
  try {
    Handle in = h5::open_file(in_index);
    // Where each group's virtual datasets are: the parameters' at the index's root, the others in their group.
    std::vector<Handle> groups;
    std::vector<hid_t> src = {in};
    for (size_t g = 1; g < kGroups.size(); ++g)
      src.push_back(groups.emplace_back(h5::open_group(in, kGroups[g].c_str(), in_index)));
    for (int j = comm.rank(); j < shards && !stopped; j += comm.size()) {  // shard files spread over ranks
      const std::string p = tmp + "/" + shard_file_name(j, shards);
      stopped = !write_converted_file(p, idx, map, j, shards, src, in_index, interrupted);
      if (stopped) break;
      fsync_path(p);
      sums[j] = detail::file_checksum(p);
      sums[shards + j] = (uint64_t)file_size(p);
    }
  } catch (const std::exception& e) {
    err = e.what();
  }
  sums[2 * (size_t)shards] = (!err.empty() || stopped) ? 1 : 0;
  comm.all_reduce_sum(sums.data(), (int64_t)sums.size(), "allreduce/convert");
  if (sums[2 * (size_t)shards] == 0 && comm.rank() == 0) {
    try {
      const std::vector<uint64_t> c(sums.begin(), sums.begin() + shards),
          n(sums.begin() + shards, sums.begin() + 2 * shards);
      TrainState st = idx.state;
      st.world_size = shards;
      detail::write_index(tmp, st, idx.tensors, map, c, n);
      fsync_path(tmp);
      if (exists(out_dir)) fail(out_dir, "already exists: convert never overwrites");
      rename_or_fail(tmp, out_dir);
      fsync_path(out_dir + "/..");
    } catch (const std::exception& e) {
      err = e.what();
    }
  }
  double fin = err.empty() ? 0 : 1;
  comm.all_reduce_sum(&fin, 1, "allreduce/convert");
  if (fin > 0 || sums[2 * (size_t)shards] > 0) {
    if (comm.rank() == 0) remove_or_warn(tmp);  // no partial output is ever left behind
    if (stopped) throw Interrupted("convert: stopped by a signal; removed the partial output '" + tmp + "'");
    if (!err.empty()) throw std::runtime_error(err);
    throw std::runtime_error("convert: another rank failed (see its message); removed the partial output '" + tmp +
                             "'");
  }
}

std::string inspect(const std::string& dir, bool quick, const std::vector<TensorMeta>& expected) {
  const Index idx = read_index(dir);
  std::ostringstream o;
  o << "checkpoint " << dir << "\n  format " << idx.format_version << ", written by mor-dist " << idx.mor_version
    << "\n  step " << idx.state.step << ", tokens seen " << idx.state.tokens_seen << ", next sample "
    << idx.state.next_sample << ", seed " << idx.state.seed << ", AdamW steps " << idx.state.adam_steps
    << "\n  world size at save " << idx.state.world_size << ", " << idx.files.size() << " shard files\n";
  int64_t total = 0;
  for (const auto& t : idx.tensors) total += t.rows * t.cols;
  o << "  " << idx.tensors.size() << " tensors, " << total << " parameters (+ AdamW exp_avg, exp_avg_sq)\n";
  for (const auto& t : idx.tensors)
    o << "    " << t.name << "  float32 [" << t.rows << (t.is_1d ? "" : ", " + std::to_string(t.cols)) << "]\n";
  if (!expected.empty()) {  // the model config's tensors, each with its shape, and no others
    for (const auto& e : expected) {
      auto it =
          std::find_if(idx.tensors.begin(), idx.tensors.end(), [&](const TensorMeta& m) { return m.name == e.name; });
      if (it == idx.tensors.end()) fail(dir + "/index.h5", "tensor '" + e.name + "' of the model config is missing");
      if (it->rows != e.rows || it->cols != e.cols)
        fail(dir + "/index.h5", "tensor '" + e.name + "' is [" + std::to_string(it->rows) + ", " +
                                    std::to_string(it->cols) + "] but the model config implies [" +
                                    std::to_string(e.rows) + ", " + std::to_string(e.cols) + "]");
    }
    if (expected.size() != idx.tensors.size())
      fail(dir + "/index.h5", "holds " + std::to_string(idx.tensors.size()) + " tensors but the model config implies " +
                                  std::to_string(expected.size()));
  }
  check_present(idx);
  detail::check_virtual_datasets(idx);
  verify(idx);
  int64_t bad = 0;
  if (!quick) {  // every value of every shard file's datasets, read from the shard files themselves
    std::vector<float> buf;
    for (size_t j = 0; j < idx.files.size(); ++j) {
      const std::string p = dir + "/" + idx.files[j];
      Handle f = h5::open_file(p);
      for (size_t g = 0; g < kGroups.size(); ++g) {
        Handle grp = h5::open_group(f, kGroups[g].c_str(), p);
        for (size_t t = 0; t < idx.tensors.size(); ++t) {
          const auto [a, b] = idx.map[t][j];
          if (b <= a) continue;
          buf.resize((size_t)(b - a) * idx.tensors[t].cols);
          read_rows(grp, idx.tensors[t].name, idx.tensors[t], b - a, 0, b - a, buf.data(), p);
          if (all_finite(buf.data(), (int64_t)buf.size())) continue;
          const int64_t n = std::count_if(buf.begin(), buf.end(), [](float x) { return !std::isfinite(x); });
          o << "  NON-FINITE: " << kGroups[g] << "/" << idx.tensors[t].name << " rows [" << a << ", " << b << ") in "
            << idx.files[j] << ": " << n << " NaN/inf values\n";
          bad += n;
        }
      }
    }
  }
  if (bad > 0) fail(dir, o.str() + "holds " + std::to_string(bad) + " non-finite values: not usable");
  o << "  verified: index sealed and consistent; every shard file present with its size and XXH3-64 checksum; every "
       "row\n"
    << "  of every tensor in exactly one shard file; every virtual dataset maps its source datasets"
    << (quick ? " (values not scanned: --quick)\n" : "; every value finite\n");
  return o.str();
}

}  // namespace mor::ckpt
