#include "io/checkpoint.h"

#include "io/shard_stream.h"

#include <dirent.h>
#include <fcntl.h>
#include <hdf5.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace mor::ckpt {

namespace {

[[noreturn]] void fail(const std::string& file, const std::string& what) {
  throw std::runtime_error("checkpoint '" + file + "': " + what);
}

// ---- small POSIX helpers --------------------------------------------------------
bool exists(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0;
}
void fsync_path(const std::string& p) {
  int fd = ::open(p.c_str(), O_RDONLY);
  if (fd < 0) fail(p, "cannot open for fsync");
  const int rc = ::fsync(fd);
  const int e = errno;
  ::close(fd);
  // EINVAL: a directory on a file system that cannot sync directories; nothing to do.
  if (rc != 0 && e != EINVAL) fail(p, std::string("fsync failed: ") + std::strerror(e));
}
void make_dir(const std::string& p) {
  if (::mkdir(p.c_str(), 0755) != 0 && errno != EEXIST) fail(p, std::string("cannot create directory: ") + std::strerror(errno));
}
void remove_tree(const std::string& p) {
  if (DIR* d = ::opendir(p.c_str())) {
    while (dirent* e = ::readdir(d)) {
      const std::string n = e->d_name;
      if (n != "." && n != "..") ::unlink((p + "/" + n).c_str());
    }
    ::closedir(d);
  }
  ::rmdir(p.c_str());
}
// XXH3-64 of a whole file (libxxhash): tens of GB/s, so verifying a checkpoint
// costs about one read of it (zlib's CRC-32 ran at ~0.65 GB/s here).
uint64_t file_checksum(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  if (!f) fail(p, "shard file is missing");
  std::vector<char> buf(1 << 22);
  XXH3_state_t* st = XXH3_createState();
  XXH3_64bits_reset(st);
  while (f) {
    f.read(buf.data(), buf.size());
    XXH3_64bits_update(st, buf.data(), (size_t)f.gcount());
  }
  const uint64_t h = XXH3_64bits_digest(st);
  XXH3_freeState(st);
  return h;
}
std::string step_name(int64_t step) {
  char b[32];
  std::snprintf(b, sizeof b, "step_%08lld", (long long)step);
  return b;
}
std::string shard_name(int r, int W) {
  char b[64];
  std::snprintf(b, sizeof b, "shard_%05d_of_%05d.h5", r, W);
  return b;
}

// ---- HDF5 helpers -------------------------------------------------------------------
// File access: no file locking (NFS/Lustre), formats no newer than 1.10 (Debian's h5py reads them).
hid_t fapl() {
  hid_t p = H5Pcreate(H5P_FILE_ACCESS);
  H5Pset_libver_bounds(p, H5F_LIBVER_EARLIEST, H5F_LIBVER_V110);
  H5Pset_file_locking(p, false, true);
  // Partial (row-range) reads of contiguous datasets go through the sieve buffer:
  // the 64 KiB default made elastic loads ~8x slower than the disk.
  H5Pset_sieve_buf_size(p, 16u << 20);
  // Metadata (object headers of ~800 datasets) in one block at the front instead of 2 KiB pieces
  // between the datasets: opening a shard cold then costs one read, not hundreds.
  H5Pset_meta_block_size(p, 1u << 20);
  return p;
}
struct H5 {  // closes any HDF5 handle
  hid_t id;
  explicit H5(hid_t i) : id(i) {}
  ~H5() {
    if (id < 0) return;
    switch (H5Iget_type(id)) {
      case H5I_FILE: H5Fclose(id); break;
      case H5I_GROUP: H5Gclose(id); break;
      case H5I_DATASET: H5Dclose(id); break;
      case H5I_DATASPACE: H5Sclose(id); break;
      case H5I_DATATYPE: H5Tclose(id); break;
      case H5I_ATTR: H5Aclose(id); break;
      case H5I_GENPROP_LST: H5Pclose(id); break;
      default: break;
    }
  }
  operator hid_t() const { return id; }
};
hid_t create_file(const std::string& p) {
  H5 a(fapl());
  hid_t f = H5Fcreate(p.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, a);
  if (f < 0) fail(p, "cannot create HDF5 file");
  return f;
}
hid_t open_file(const std::string& p) {
  if (!exists(p)) fail(p, "file is missing");
  H5 a(fapl());
  hid_t f = H5Fopen(p.c_str(), H5F_ACC_RDONLY, a);
  if (f < 0) fail(p, "not a readable HDF5 file (truncated or corrupted?)");
  return f;
}
void attr_i64(hid_t obj, const char* name, int64_t v) {
  H5 s(H5Screate(H5S_SCALAR));
  H5 a(H5Acreate2(obj, name, H5T_STD_I64LE, s, H5P_DEFAULT, H5P_DEFAULT));
  H5Awrite(a, H5T_NATIVE_INT64, &v);
}
void attr_str(hid_t obj, const char* name, const std::string& v) {
  H5 t(H5Tcopy(H5T_C_S1));
  H5Tset_size(t, std::max<size_t>(1, v.size()));
  H5 s(H5Screate(H5S_SCALAR));
  H5 a(H5Acreate2(obj, name, t, s, H5P_DEFAULT, H5P_DEFAULT));
  H5Awrite(a, t, v.empty() ? "" : v.c_str());
}
int64_t read_attr_i64(hid_t obj, const char* name, const std::string& file) {
  if (H5Aexists(obj, name) <= 0) fail(file, std::string("attribute '") + name + "' is missing");
  H5 a(H5Aopen(obj, name, H5P_DEFAULT));
  int64_t v = 0;
  H5Aread(a, H5T_NATIVE_INT64, &v);
  return v;
}
std::string read_attr_str(hid_t obj, const char* name, const std::string& file) {
  if (H5Aexists(obj, name) <= 0) fail(file, std::string("attribute '") + name + "' is missing");
  H5 a(H5Aopen(obj, name, H5P_DEFAULT));
  H5 t(H5Aget_type(a));
  std::string v(H5Tget_size(t), '\0');
  H5 mt(H5Tcopy(H5T_C_S1));
  H5Tset_size(mt, v.size());
  H5Aread(a, mt, v.data());
  while (!v.empty() && v.back() == '\0') v.pop_back();
  return v;
}
std::vector<hsize_t> dims_of(const TensorMeta& t, int64_t rows) {
  return t.is_1d ? std::vector<hsize_t>{(hsize_t)rows} : std::vector<hsize_t>{(hsize_t)rows, (hsize_t)t.cols};
}
void write_dataset(hid_t loc, const std::string& name, const TensorMeta& t, int64_t nrows, const float* data,
                   const std::string& file) {
  const auto d = dims_of(t, nrows);
  H5 s(H5Screate_simple((int)d.size(), d.data(), nullptr));
  H5 ds(H5Dcreate2(loc, name.c_str(), H5T_IEEE_F32LE, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
  if (ds < 0 || H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0)
    fail(file, "cannot write dataset '" + name + "'");
}
// Reads rows [r0, r1) of dataset `name` (a virtual one in index.h5) into out.
void read_rows(hid_t loc, const std::string& name, const TensorMeta& t, int64_t r0, int64_t r1, float* out,
               const std::string& file) {
  if (r1 <= r0) return;
  H5 ds(H5Dopen2(loc, name.c_str(), H5P_DEFAULT));
  if (ds < 0) fail(file, "dataset '" + name + "' is missing");
  H5 fs(H5Dget_space(ds));
  const auto full = dims_of(t, t.rows);
  std::vector<hsize_t> got(full.size());
  if (H5Sget_simple_extent_ndims(fs) != (int)full.size()) fail(file, "dataset '" + name + "' has another rank");
  H5Sget_simple_extent_dims(fs, got.data(), nullptr);
  if (got != full) fail(file, "dataset '" + name + "' has another shape than the model");
  std::vector<hsize_t> start(full.size(), 0), count = full;
  start[0] = r0;
  count[0] = r1 - r0;
  const bool whole = r0 == 0 && r1 == t.rows;  // H5S_ALL takes HDF5's direct path
  if (!whole) H5Sselect_hyperslab(fs, H5S_SELECT_SET, start.data(), nullptr, count.data(), nullptr);
  H5 ms(whole ? -1 : H5Screate_simple((int)count.size(), count.data(), nullptr));
  if (H5Dread(ds, H5T_NATIVE_FLOAT, whole ? H5S_ALL : (hid_t)ms, whole ? H5S_ALL : (hid_t)fs, H5P_DEFAULT, out) < 0)
    fail(file, "cannot read dataset '" + name + "'");
}

const char* kGroups[3] = {"param", "exp_avg", "exp_avg_sq"};
// The array a LocalTensor holds for group g of kGroups (parameters, then the two AdamW moments).
float* group_data(const LocalTensor& t, int g) { return g == 0 ? t.param : g == 1 ? t.exp_avg : t.exp_avg_sq; }

// The shard file's hash against the one index.h5 recorded.
void check_checksum(const std::string& path, uint64_t got, uint64_t want) {
  if (got == want) return;
  char b[128];
  std::snprintf(b, sizeof b, "checksum mismatch (XXH3-64 %016llx, index.h5 records %016llx)", (unsigned long long)got,
                (unsigned long long)want);
  fail(path, b);
}

// index.h5: state, config, tensors, shard map, checksums and the virtual datasets.
void write_index(const std::string& dir, const TrainState& st, const std::vector<TensorMeta>& tensors,
                 const std::vector<std::vector<std::pair<int64_t, int64_t>>>& map,  // [tensor][shard] rows
                 const std::vector<uint64_t>& checksums) {
  const int W = (int)checksums.size();
  const std::string path = dir + "/index.h5";
  H5 f(create_file(path));
  attr_i64(f, "format_version", kFormatVersion);
  attr_str(f, "mor_dist_version", MOR_VERSION);
  attr_i64(f, "step", st.step);
  attr_i64(f, "next_sample", (int64_t)st.next_sample);
  attr_i64(f, "adam_steps", st.adam_steps);
  attr_i64(f, "seed", (int64_t)st.seed);
  attr_i64(f, "tokens_seen", st.tokens_seen);
  attr_i64(f, "world_size", st.world_size);
  attr_str(f, "rng", "derived from (seed, step); no per-rank streams");
  attr_str(f, "model_config", st.model_config);
  attr_str(f, "run_config", st.run_config);
  {
    H5 g(H5Gcreate2(f, "shards", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    hsize_t n = W;
    H5 s(H5Screate_simple(1, &n, nullptr));
    H5 c(H5Dcreate2(g, "xxh3_64", H5T_STD_U64LE, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    H5Dwrite(c, H5T_NATIVE_UINT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, checksums.data());
    std::string names;
    for (int j = 0; j < W; ++j) names += shard_name(j, W) + "\n";
    attr_str(g, "files", names);
  }
  H5 mapg(H5Gcreate2(f, "shard_map", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
  H5 g1(H5Gcreate2(f, "exp_avg", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
  H5 g2(H5Gcreate2(f, "exp_avg_sq", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
  for (size_t t = 0; t < tensors.size(); ++t) {
    const TensorMeta& tm = tensors[t];
    std::vector<int64_t> rows;  // [W, 2]
    for (const auto& [a, b] : map[t]) rows.insert(rows.end(), {a, b});
    hsize_t md[2] = {(hsize_t)W, 2};
    H5 ms(H5Screate_simple(2, md, nullptr));
    H5 m(H5Dcreate2(mapg, tm.name.c_str(), H5T_STD_I64LE, ms, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    H5Dwrite(m, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, rows.data());
    attr_i64(m, "rows", tm.rows);
    attr_i64(m, "cols", tm.cols);
    attr_i64(m, "is_1d", tm.is_1d);
    // Virtual datasets: the parameter at the root (Hugging Face name), moments in their groups.
    const auto full = dims_of(tm, tm.rows);
    for (int g = 0; g < 3; ++g) {
      H5 vs(H5Screate_simple((int)full.size(), full.data(), nullptr));
      H5 dcpl(H5Pcreate(H5P_DATASET_CREATE));
      for (int j = 0; j < W; ++j) {
        const auto [a, b] = map[t][j];
        if (b <= a) continue;
        const auto sd = dims_of(tm, b - a);
        H5 ss(H5Screate_simple((int)sd.size(), sd.data(), nullptr));
        std::vector<hsize_t> start(full.size(), 0), count = sd;
        start[0] = a;
        H5Sselect_hyperslab(vs, H5S_SELECT_SET, start.data(), nullptr, count.data(), nullptr);
        const std::string src = std::string("/") + kGroups[g] + "/" + tm.name;
        if (H5Pset_virtual(dcpl, vs, shard_name(j, W).c_str(), src.c_str(), ss) < 0)
          fail(path, "cannot map virtual dataset '" + tm.name + "'");
      }
      hid_t loc = g == 0 ? (hid_t)f : g == 1 ? (hid_t)g1 : (hid_t)g2;
      H5 d(H5Dcreate2(loc, tm.name.c_str(), H5T_IEEE_F32LE, vs, H5P_DEFAULT, dcpl, H5P_DEFAULT));
      if (d < 0) fail(path, "cannot create virtual dataset '" + tm.name + "'");
    }
  }
}

// Every element of every tensor in exactly one shard: the blocks are sorted,
// contiguous and span [0, rows).
void check_coverage(const std::vector<TensorMeta>& tensors, const std::vector<std::vector<std::pair<int64_t, int64_t>>>& map,
                    const std::string& where) {
  for (size_t t = 0; t < tensors.size(); ++t) {
    int64_t next = 0;
    for (const auto& [a, b] : map[t]) {
      if (b < a || (b > a && a != next)) fail(where, "shards of '" + tensors[t].name + "' overlap or leave a gap");
      if (b > a) next = b;
    }
    if (next != tensors[t].rows) fail(where, "shards of '" + tensors[t].name + "' do not cover every row");
  }
}

std::vector<std::vector<std::pair<int64_t, int64_t>>> block_map(const std::vector<TensorMeta>& tensors, int W) {
  std::vector<std::vector<std::pair<int64_t, int64_t>>> map(tensors.size());
  for (size_t t = 0; t < tensors.size(); ++t)
    for (int j = 0; j < W; ++j) {
      int64_t a, b;
      row_block(tensors[t].rows, j, W, a, b);
      map[t].push_back({a, b});
    }
  return map;
}

// Rank 0 finishes a save: index last, rename, fsync the parent, move `latest`.
void publish(const std::string& root, const std::string& tmp, const std::string& final_dir) {
  fsync_path(tmp + "/index.h5");
  fsync_path(tmp);
  if (exists(final_dir)) remove_tree(final_dir);  // a stale copy of the same step (re-run after a crash)
  if (::rename(tmp.c_str(), final_dir.c_str()) != 0) fail(final_dir, std::string("rename failed: ") + std::strerror(errno));
  fsync_path(root);
  const std::string name = final_dir.substr(final_dir.find_last_of('/') + 1);
  {
    std::ofstream l(root + "/latest.tmp");
    l << name << "\n";
    if (!l) fail(root + "/latest.tmp", "cannot write");
  }
  fsync_path(root + "/latest.tmp");
  if (::rename((root + "/latest.tmp").c_str(), (root + "/latest").c_str()) != 0) fail(root + "/latest", "rename failed");
  fsync_path(root);
}

std::vector<std::string> complete_checkpoints(const std::string& root) {
  std::vector<std::string> v;
  if (DIR* d = ::opendir(root.c_str())) {
    while (dirent* e = ::readdir(d)) {
      const std::string n = e->d_name;
      if (n.rfind("step_", 0) == 0 && n.find(".tmp") == std::string::npos && exists(root + "/" + n + "/index.h5"))
        v.push_back(n);
    }
    ::closedir(d);
  }
  std::sort(v.begin(), v.end());
  return v;
}

}  // namespace

std::string save(const std::string& root, const TrainState& st, const std::vector<LocalTensor>& mine,
                 dist::Communicator& comm, int keep_last, bool direct_io) {
  const int W = comm.size(), r = comm.rank();
  const std::string final_dir = root + "/" + step_name(st.step), tmp = final_dir + ".tmp";
  std::vector<TensorMeta> tensors;
  for (const auto& t : mine) tensors.push_back({t.name, t.rows, t.cols, t.is_1d});
  const auto map = block_map(tensors, W);
  if (r == 0) {
    check_coverage(tensors, map, final_dir);  // before anything is written
    make_dir(root);
    if (exists(tmp)) remove_tree(tmp);        // debris of a crashed save
    make_dir(tmp);
  }
  comm.barrier();
  // 1. every rank writes and fsyncs its shard
  std::string err;
  uint64_t checksum = 0;
  const std::string shard = tmp + "/" + shard_name(r, W);
  try {
    for (size_t t = 0; t < mine.size(); ++t)
      if (mine[t].row0 != map[t][r].first || mine[t].row1 != map[t][r].second)
        fail(shard, "rank " + std::to_string(r) + " holds rows of '" + mine[t].name + "' that are not its block");
    // HDF5 lays the file out (datasets allocated, not written); then the bytes go to disk in one
    // sequential, hashed pass: no read-back for the checksum, no copies inside the library.
    std::vector<Span> spans;
    {
      H5 f(create_file(shard));
      attr_i64(f, "rank", r);
      attr_i64(f, "world_size", W);
      H5 dcpl(H5Pcreate(H5P_DATASET_CREATE));
      H5Pset_layout(dcpl, H5D_CONTIGUOUS);
      H5Pset_alloc_time(dcpl, H5D_ALLOC_TIME_EARLY);
      H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER);
      for (int g = 0; g < 3; ++g) {
        H5 grp(H5Gcreate2(f, kGroups[g], H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
        for (const auto& t : mine) {
          if (t.row1 <= t.row0) continue;
          const float* data = group_data(t, g);
          const auto d = dims_of({t.name, t.rows, t.cols, t.is_1d}, t.row1 - t.row0);
          H5 s(H5Screate_simple((int)d.size(), d.data(), nullptr));
          H5 ds(H5Dcreate2(grp, t.name.c_str(), H5T_IEEE_F32LE, s, H5P_DEFAULT, dcpl, H5P_DEFAULT));
          const haddr_t off = ds < 0 ? HADDR_UNDEF : H5Dget_offset(ds);
          if (off == HADDR_UNDEF) fail(shard, std::string("cannot create dataset '") + kGroups[g] + "/" + t.name + "'");
          const uint64_t len = (uint64_t)(t.row1 - t.row0) * t.cols * sizeof(float);
          spans.push_back({(uint64_t)off, len, const_cast<char*>(reinterpret_cast<const char*>(data))});
        }
      }
    }
    checksum = stream_write(shard, std::move(spans), direct_io);
  } catch (const std::exception& e) {
    err = e.what();
  }
  // 2. agree that every write succeeded and collect the checksums
  // (a 64-bit checksum travels as two 32-bit halves: doubles hold those exactly)
  std::vector<double> agree(2 * W + 1, 0.0);
  agree[2 * r] = (double)(checksum >> 32);
  agree[2 * r + 1] = (double)(checksum & 0xffffffffu);
  agree[2 * W] = err.empty() ? 0 : 1;
  comm.all_reduce_sum(agree.data(), agree.size(), "allreduce/checkpoint");
  if (!err.empty()) throw std::runtime_error(err);
  if (agree[2 * W] > 0) throw std::runtime_error("checkpoint '" + final_dir + "': another rank failed to write its shard");
  // Test-only window between the shards and the index (the kill -9 test aims here).
  if (const char* ms = std::getenv("MOR_TEST_SAVE_DELAY_MS"))
    std::this_thread::sleep_for(std::chrono::milliseconds(std::atoi(ms)));
  // 3. rank 0: index last, rename, latest; then prune
  if (r == 0) {
    std::vector<uint64_t> checksums(W);
    for (int j = 0; j < W; ++j) checksums[j] = ((uint64_t)agree[2 * j] << 32) | (uint64_t)agree[2 * j + 1];
    write_index(tmp, st, tensors, map, checksums);
    publish(root, tmp, final_dir);
    const auto all = complete_checkpoints(root);
    for (size_t i = 0; i + keep_last < all.size(); ++i) remove_tree(root + "/" + all[i]);
  }
  comm.barrier();
  return final_dir;
}

std::string resolve(const std::string& root, const std::string& spec) {
  if (spec != "auto") {
    if (!exists(spec + "/index.h5")) fail(spec, "not a complete checkpoint (no index.h5)");
    return spec;
  }
  const std::string latest = root + "/latest";
  if (!exists(latest)) return "";
  std::ifstream l(latest);
  std::string name;
  std::getline(l, name);
  const std::string dir = root + "/" + name;
  if (name.empty() || !exists(dir + "/index.h5"))
    fail(latest, "points to '" + name + "', which is not a complete checkpoint");
  return dir;
}

Index read_index(const std::string& dir) {
  const std::string path = dir + "/index.h5";
  H5 f(open_file(path));
  Index idx;
  idx.dir = dir;
  idx.format_version = (int)read_attr_i64(f, "format_version", path);
  if (idx.format_version > kFormatVersion)
    fail(path, "format version " + std::to_string(idx.format_version) + " is newer than this mor-dist reads (" +
                   std::to_string(kFormatVersion) + ")");
  idx.mor_version = read_attr_str(f, "mor_dist_version", path);
  TrainState& s = idx.state;
  s.step = read_attr_i64(f, "step", path);
  s.next_sample = (uint64_t)read_attr_i64(f, "next_sample", path);
  s.adam_steps = read_attr_i64(f, "adam_steps", path);
  s.seed = (uint64_t)read_attr_i64(f, "seed", path);
  s.tokens_seen = read_attr_i64(f, "tokens_seen", path);
  s.world_size = (int)read_attr_i64(f, "world_size", path);
  s.model_config = read_attr_str(f, "model_config", path);
  s.run_config = read_attr_str(f, "run_config", path);
  {
    H5 g(H5Gopen2(f, "shards", H5P_DEFAULT));
    if (g < 0) fail(path, "group 'shards' is missing");
    std::stringstream ss(read_attr_str(g, "files", path));
    for (std::string n; std::getline(ss, n);)
      if (!n.empty()) idx.files.push_back(n);
    idx.checksum.resize(idx.files.size());
    H5 c(H5Dopen2(g, "xxh3_64", H5P_DEFAULT));
    if (c < 0 || H5Dread(c, H5T_NATIVE_UINT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, idx.checksum.data()) < 0)
      fail(path, "cannot read the shard checksums");
  }
  H5 mapg(H5Gopen2(f, "shard_map", H5P_DEFAULT));
  if (mapg < 0) fail(path, "group 'shard_map' is missing");
  hsize_t n = 0;
  H5Gget_num_objs(mapg, &n);
  // Keep the arena order: iterate by creation order is not tracked, so sort later by the caller's names.
  for (hsize_t i = 0; i < n; ++i) {
    char name[1024];
    H5Gget_objname_by_idx(mapg, i, name, sizeof name);
    H5 d(H5Dopen2(mapg, name, H5P_DEFAULT));
    idx.tensors.push_back({name, read_attr_i64(d, "rows", path), read_attr_i64(d, "cols", path),
                           read_attr_i64(d, "is_1d", path) != 0});
  }
  return idx;
}

void verify(const Index& idx) {
  check_present(idx);
  for (size_t j = 0; j < idx.files.size(); ++j) {
    const std::string p = idx.dir + "/" + idx.files[j];
    check_checksum(p, file_checksum(p), idx.checksum[j]);
  }
}

void load_rows(const Index& idx, const std::vector<LocalTensor>& mine) {
  const std::string path = idx.dir + "/index.h5";
  H5 f(open_file(path));
  H5 g1(H5Gopen2(f, "exp_avg", H5P_DEFAULT)), g2(H5Gopen2(f, "exp_avg_sq", H5P_DEFAULT));
  for (const auto& t : mine) {
    auto it = std::find_if(idx.tensors.begin(), idx.tensors.end(), [&](const TensorMeta& m) { return m.name == t.name; });
    if (it == idx.tensors.end()) fail(path, "has no tensor '" + t.name + "' (another model?)");
    if (it->rows != t.rows || it->cols != t.cols)
      fail(path, "tensor '" + t.name + "' is [" + std::to_string(it->rows) + ", " + std::to_string(it->cols) +
                     "] in the checkpoint but [" + std::to_string(t.rows) + ", " + std::to_string(t.cols) + "] in this model");
    const TensorMeta m{t.name, t.rows, t.cols, t.is_1d};
    read_rows(f, t.name, m, t.row0, t.row1, t.param, path);
    if (t.exp_avg) read_rows(g1, t.name, m, t.row0, t.row1, t.exp_avg, path);
    if (t.exp_avg_sq) read_rows(g2, t.name, m, t.row0, t.row1, t.exp_avg_sq, path);
  }
  if (mine.size() != idx.tensors.size())
    fail(path, "holds " + std::to_string(idx.tensors.size()) + " tensors but this model has " + std::to_string(mine.size()));
}

bool load_own_shard(const Index& idx, const std::vector<LocalTensor>& mine, int rank, int world, bool direct_io) {
  const int W = (int)idx.files.size();
  if (W != world) return false;
  for (const auto& t : mine) {  // this rank must hold exactly shard `rank`'s rows of every tensor
    int64_t a, b;
    row_block(t.rows, rank, W, a, b);
    if (a != t.row0 || b != t.row1) return false;
  }
  const std::string path = idx.dir + "/" + idx.files[rank];
  // 1. where each row block lies in the file (contiguous datasets: one extent each)
  std::vector<Span> ext;
  {
    H5 f(open_file(path));
    for (int g = 0; g < 3; ++g) {
      H5 grp(H5Gopen2(f, kGroups[g], H5P_DEFAULT));
      if (grp < 0) fail(path, std::string("group '") + kGroups[g] + "' is missing");
      for (const auto& t : mine) {
        if (t.row1 <= t.row0) continue;
        float* dst = group_data(t, g);
        if (!dst) continue;
        H5 d(H5Dopen2(grp, t.name.c_str(), H5P_DEFAULT));
        if (d < 0) fail(path, "dataset '" + std::string(kGroups[g]) + "/" + t.name + "' is missing");
        const haddr_t off = H5Dget_offset(d);
        const uint64_t len = (uint64_t)(t.row1 - t.row0) * t.cols * sizeof(float);
        if (off == HADDR_UNDEF || H5Dget_storage_size(d) != len)
          fail(path, "dataset '" + std::string(kGroups[g]) + "/" + t.name + "' is not a contiguous block of the expected size");
        ext.push_back({(uint64_t)off, len, reinterpret_cast<char*>(dst)});
      }
    }
  }
  // 2. one sequential pass: row blocks straight into place, everything hashed
  check_checksum(path, stream_read(path, std::move(ext), direct_io), idx.checksum[rank]);
  return true;
}

void check_present(const Index& idx) {
  for (const auto& f : idx.files)
    if (!exists(idx.dir + "/" + f)) fail(idx.dir + "/" + f, "shard file is missing");
  check_coverage(idx.tensors, block_map(idx.tensors, (int)idx.files.size()), idx.dir + "/index.h5");
}

void convert(const std::string& in_dir, const std::string& out_dir, int shards, dist::Communicator& comm) {
  if (shards < 1) throw std::runtime_error("convert: --shards must be >= 1");
  const Index idx = read_index(in_dir);
  if (comm.rank() == 0) verify(idx);
  const std::string tmp = out_dir + ".tmp";
  if (comm.rank() == 0) {
    if (exists(out_dir)) fail(out_dir, "already exists: convert never overwrites");
    if (exists(tmp)) remove_tree(tmp);
    make_dir(tmp);
  }
  comm.barrier();
  const auto map = block_map(idx.tensors, shards);
  const std::string in_index = in_dir + "/index.h5";
  std::vector<double> checksums(2 * shards, 0.0);  // 64-bit checksums as two exact 32-bit halves
  {
    H5 in(open_file(in_index));
    H5 g1(H5Gopen2(in, "exp_avg", H5P_DEFAULT)), g2(H5Gopen2(in, "exp_avg_sq", H5P_DEFAULT));
    const hid_t src[3] = {in, g1, g2};
    std::vector<float> buf;
    for (int j = comm.rank(); j < shards; j += comm.size()) {  // shard files spread over ranks
      const std::string p = tmp + "/" + shard_name(j, shards);
      {
        H5 f(create_file(p));
        attr_i64(f, "rank", j);
        attr_i64(f, "world_size", shards);
        for (int g = 0; g < 3; ++g) {
          H5 grp(H5Gcreate2(f, kGroups[g], H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
          for (size_t t = 0; t < idx.tensors.size(); ++t) {  // one row block in memory at a time
            const auto [a, b] = map[t][j];
            if (b <= a) continue;
            const TensorMeta& tm = idx.tensors[t];
            buf.resize((size_t)(b - a) * tm.cols);
            read_rows(src[g], tm.name, tm, a, b, buf.data(), in_index);
            write_dataset(grp, tm.name, tm, b - a, buf.data(), p);
          }
        }
      }
      fsync_path(p);
      const uint64_t h = file_checksum(p);
      checksums[2 * j] = (double)(h >> 32);
      checksums[2 * j + 1] = (double)(h & 0xffffffffu);
    }
  }
  comm.all_reduce_sum(checksums.data(), checksums.size(), "allreduce/convert");
  if (comm.rank() == 0) {
    std::vector<uint64_t> c(shards);
    for (int j = 0; j < shards; ++j) c[j] = ((uint64_t)checksums[2 * j] << 32) | (uint64_t)checksums[2 * j + 1];
    TrainState st = idx.state;
    st.world_size = shards;
    write_index(tmp, st, idx.tensors, map, c);
    fsync_path(tmp + "/index.h5");
    fsync_path(tmp);
    if (::rename(tmp.c_str(), out_dir.c_str()) != 0) fail(out_dir, "rename failed");
  }
  comm.barrier();
}

std::string inspect(const std::string& dir) {
  const Index idx = read_index(dir);
  std::ostringstream o;
  o << "checkpoint " << dir << "\n  format " << idx.format_version << ", written by mor-dist " << idx.mor_version
    << "\n  step " << idx.state.step << ", tokens seen " << idx.state.tokens_seen << ", next sample "
    << idx.state.next_sample << ", seed " << idx.state.seed << "\n  world size at save " << idx.state.world_size << ", "
    << idx.files.size() << " shard files\n";
  int64_t total = 0;
  for (const auto& t : idx.tensors) total += t.rows * t.cols;
  o << "  " << idx.tensors.size() << " tensors, " << total << " parameters (+ AdamW exp_avg, exp_avg_sq)\n";
  for (const auto& t : idx.tensors)
    o << "    " << t.name << "  float32 [" << t.rows << (t.is_1d ? "" : ", " + std::to_string(t.cols)) << "]\n";
  verify(idx);
  o << "  verified: every shard file present with its XXH3-64 checksum; every row of every tensor in exactly one shard\n";
  return o.str();
}

}  // namespace mor::ckpt
