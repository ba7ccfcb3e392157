// index.h5: writing it, sealing it with index.h5.xxh3, and reading it back with every field
// validated. The seal is checked before HDF5 parses a single byte, so a corrupted index (a flipped
// bit, a truncated copy) is reported as such and never reaches the HDF5 parser.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <set>
#include <sstream>

#include "io/ckpt/checkpoint.h"
#include "io/ckpt/h5_util.h"

namespace mor::ckpt {

using h5::fail;
using h5::Handle;

namespace {

// Bounds on what an index may claim, checked before anything is allocated from its numbers.
constexpr int64_t kMaxTensors = 1 << 20;
constexpr int64_t kMaxShardFiles = 1 << 24;
constexpr int64_t kMaxMapEntries = int64_t(1) << 27;  // tensors x shard files (2 GiB of int64 pairs)
constexpr int64_t kMaxRows = int64_t(1) << 40, kMaxCols = int64_t(1) << 31, kMaxElems = int64_t(1) << 42;
constexpr const char* kSealName = "index.h5.xxh3";
const char* kGroups[3] = {"param", "exp_avg", "exp_avg_sq"};

std::vector<hsize_t> dims_of(const TensorMeta& t, int64_t rows) {
  return t.is_1d ? std::vector<hsize_t>{(hsize_t)rows} : std::vector<hsize_t>{(hsize_t)rows, (hsize_t)t.cols};
}

void write_all(int fd, const std::string& s, const std::string& path) {
  size_t put = 0;
  while (put < s.size()) {
    const ssize_t r = ::write(fd, s.data() + put, s.size() - put);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) fail(path, std::string("write failed: ") + std::strerror(r < 0 ? errno : EIO));
    put += (size_t)r;
  }
}

std::string seal_text(const std::string& index_path) {
  struct stat st;
  if (::stat(index_path.c_str(), &st) != 0) fail(index_path, std::string("cannot stat: ") + std::strerror(errno));
  char b[96];
  std::snprintf(b, sizeof b, "xxh3_64 %016llx bytes %lld\n", (unsigned long long)detail::file_checksum(index_path),
                (long long)st.st_size);
  return b;
}

// index.h5 against index.h5.xxh3: size first (cheap), then the hash of every byte.
void check_seal(const std::string& dir) {
  const std::string index = dir + "/index.h5", seal = dir + "/" + kSealName;
  FILE* f = std::fopen(seal.c_str(), "rb");
  if (!f) fail(seal, std::string("cannot open: ") + std::strerror(errno));
  char line[128] = {0};
  const size_t n = std::fread(line, 1, sizeof line - 1, f);
  std::fclose(f);
  unsigned long long want = 0;
  long long want_bytes = -1;
  char tail = 0;
  if (n == 0 || std::sscanf(line, "xxh3_64 %16llx bytes %lld%c", &want, &want_bytes, &tail) != 3 || tail != '\n' ||
      want_bytes < 0)
    fail(seal, "is not a valid checksum record");
  struct stat st;
  if (::stat(index.c_str(), &st) != 0) fail(index, "file is missing");
  if (st.st_size != want_bytes)
    fail(index, "is " + std::to_string((long long)st.st_size) + " bytes but " + kSealName + " records " +
                    std::to_string(want_bytes) + " (truncated or replaced)");
  const uint64_t got = detail::file_checksum(index);
  if (got != want) {
    char b[160];
    std::snprintf(b, sizeof b, "checksum mismatch (XXH3-64 %016llx, %s records %016llx): the index is corrupted",
                  (unsigned long long)got, kSealName, want);
    fail(index, b);
  }
}

bool plain_name(const std::string& n) {
  return !n.empty() && n.size() < 1024 && n.find('/') == std::string::npos && n != "." && n != ".." &&
         n.find('\0') == std::string::npos;
}

// Tensor metadata and stored shard map, one [W, 2] dataset per tensor under shard_map/.
void read_tensors(hid_t f, Index& idx, const std::string& path) {
  Handle mapg = h5::open_group(f, "shard_map", path);
  H5G_info_t info;
  if (H5Gget_info(mapg, &info) < 0) fail(path, "cannot list group 'shard_map'");
  const int64_t nt = (int64_t)info.nlinks, W = (int64_t)idx.files.size();
  if (nt < 1 || nt > kMaxTensors) fail(path, "shard_map lists " + std::to_string(nt) + " tensors");
  if (nt * W > kMaxMapEntries)
    fail(path,
         std::to_string(nt) + " tensors x " + std::to_string(W) + " shard files is more than this reader accepts");
  std::set<std::string> seen;
  for (int64_t i = 0; i < nt; ++i) {
    const ssize_t len = H5Lget_name_by_idx(mapg, ".", H5_INDEX_NAME, H5_ITER_INC, (hsize_t)i, nullptr, 0, H5P_DEFAULT);
    if (len <= 0 || len >= 1024) fail(path, "shard_map entry " + std::to_string(i) + " has no usable name");
    std::string name((size_t)len + 1, '\0');
    if (H5Lget_name_by_idx(mapg, ".", H5_INDEX_NAME, H5_ITER_INC, (hsize_t)i, name.data(), name.size(), H5P_DEFAULT) <
        0)
      fail(path, "cannot read shard_map entry " + std::to_string(i));
    name.resize((size_t)len);
    if (!plain_name(name) || !seen.insert(name).second)
      fail(path, "shard_map entry '" + name + "' is not a valid tensor name");
    Handle d = h5::open_dataset(mapg, name, path);
    TensorMeta t{name, h5::read_attr_i64(d, "rows", path), h5::read_attr_i64(d, "cols", path),
                 h5::read_attr_i64(d, "is_1d", path) != 0};
    if (t.rows < 1 || t.rows > kMaxRows || t.cols < 1 || t.cols > kMaxCols || t.rows * t.cols > kMaxElems ||
        (t.is_1d && t.cols != 1))
      fail(path, "tensor '" + name + "' has an impossible shape [" + std::to_string(t.rows) + ", " +
                     std::to_string(t.cols) + "]" + (t.is_1d ? " (1-D)" : ""));
    const auto rows = h5::read_i64_2d(d, (hsize_t)W, 2, "shard_map/" + name, path);
    std::vector<RowRange> m((size_t)W);
    for (int64_t j = 0; j < W; ++j) m[(size_t)j] = {rows[2 * j], rows[2 * j + 1]};
    idx.tensors.push_back(t);
    idx.map.push_back(std::move(m));
  }
  detail::check_coverage(idx.tensors, idx.map, path);
}

// The state attributes, each with its range.
void read_state(hid_t f, Index& idx, const std::string& path) {
  TrainState& s = idx.state;
  auto in = [&](const char* name, int64_t lo, int64_t hi) {
    const int64_t v = h5::read_attr_i64(f, name, path);
    if (v < lo || v > hi)
      fail(path, std::string("attribute '") + name + "' is " + std::to_string(v) + ", outside [" + std::to_string(lo) +
                     ", " + std::to_string(hi) + "]");
    return v;
  };
  constexpr int64_t big = int64_t(1) << 62;
  s.step = in("step", 0, big);
  s.next_sample = (uint64_t)in("next_sample", 0, big);
  s.adam_steps = in("adam_steps", 0, s.step);  // skipped (non-finite) steps make it smaller, never larger
  s.seed = (uint64_t)h5::read_attr_i64(f, "seed", path);
  s.tokens_seen = in("tokens_seen", 0, big);
  s.world_size = (int)in("world_size", 1, kMaxShardFiles);
  if (h5::has_attr(f, "schedule_steps")) s.schedule_steps = in("schedule_steps", 0, big);
}

}  // namespace

namespace detail {

std::string shard_file_name(int j, int W) {
  char b[64];
  std::snprintf(b, sizeof b, "shard_%05d_of_%05d.h5", j, W);
  return b;
}

uint64_t file_checksum(const std::string& p) {
  const int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(p, errno == ENOENT ? "file is missing" : std::string("cannot open: ") + std::strerror(errno));
  std::vector<char> buf(1 << 22);
  XXH3_state_t* st = XXH3_createState();
  if (!st) throw std::bad_alloc();
  XXH3_64bits_reset(st);
  int err = 0;
  for (;;) {
    const ssize_t r = ::read(fd, buf.data(), buf.size());
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) err = errno;
    if (r <= 0) break;
    XXH3_64bits_update(st, buf.data(), (size_t)r);
  }
  const uint64_t h = XXH3_64bits_digest(st);
  XXH3_freeState(st);
  ::close(fd);
  if (err) fail(p, std::string("read failed: ") + std::strerror(err));
  return h;
}

void fsync_path(const std::string& p) {
  const int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(p, std::string("cannot open for fsync: ") + std::strerror(errno));
  const int rc = ::fsync(fd);
  const int e = errno;
  ::close(fd);
  // EINVAL: a directory on a file system that cannot sync directories; nothing to do.
  if (rc != 0 && e != EINVAL) fail(p, std::string("fsync failed: ") + std::strerror(e));
}

std::vector<std::vector<RowRange>> block_map(const std::vector<TensorMeta>& tensors, int W) {
  std::vector<std::vector<RowRange>> map(tensors.size());
  for (size_t t = 0; t < tensors.size(); ++t)
    for (int j = 0; j < W; ++j) {
      int64_t a, b;
      row_block(tensors[t].rows, j, W, a, b);
      map[t].push_back({a, b});
    }
  return map;
}

void check_coverage(const std::vector<TensorMeta>& tensors, const std::vector<std::vector<RowRange>>& map,
                    const std::string& where) {
  if (map.size() != tensors.size()) fail(where, "the shard map does not list every tensor");
  for (size_t t = 0; t < tensors.size(); ++t) {
    int64_t next = 0;
    for (const auto& [a, b] : map[t]) {
      if (a < 0 || b < a || b > tensors[t].rows || (b > a && a != next))
        fail(where, "shards of '" + tensors[t].name + "' overlap, leave a gap or lie outside its " +
                        std::to_string(tensors[t].rows) + " rows");
      if (b > a) next = b;
    }
    if (next != tensors[t].rows) fail(where, "shards of '" + tensors[t].name + "' do not cover every row");
  }
}

void write_index(const std::string& dir, const TrainState& st, const std::vector<TensorMeta>& tensors,
                 const std::vector<std::vector<RowRange>>& map, const std::vector<uint64_t>& checksums,
                 const std::vector<uint64_t>& bytes) {
  const int W = (int)checksums.size();
  const std::string path = dir + "/index.h5";
  {
    Handle f = h5::create_file(path);
    h5::write_attr_i64(f, "format_version", kFormatVersion, path);
    h5::write_attr_str(f, "mor_dist_version", st.writer.empty() ? MOR_VERSION : st.writer.substr(0, 250), path);
    h5::write_attr_i64(f, "step", st.step, path);
    h5::write_attr_i64(f, "next_sample", (int64_t)st.next_sample, path);
    h5::write_attr_i64(f, "adam_steps", st.adam_steps, path);
    h5::write_attr_i64(f, "seed", (int64_t)st.seed, path);
    h5::write_attr_i64(f, "tokens_seen", st.tokens_seen, path);
    h5::write_attr_i64(f, "world_size", st.world_size, path);
    h5::write_attr_i64(f, "schedule_steps", st.schedule_steps, path);
    h5::write_attr_str(f, "rng", "derived from (seed, step); no per-rank streams", path);
    {
      Handle c = h5::create_group(f, "config", path);
      h5::write_text(c, "model", st.model_config, path);
      h5::write_text(c, "run", st.run_config, path);
    }
    {
      Handle g = h5::create_group(f, "shards", path);
      std::vector<std::string> names(W);
      for (int j = 0; j < W; ++j) names[j] = shard_file_name(j, W);
      h5::write_strings(g, "files", names, path);
      h5::write_u64(g, "xxh3_64", checksums, path);
      h5::write_u64(g, "bytes", bytes, path);
    }
    Handle mapg = h5::create_group(f, "shard_map", path);
    Handle g1 = h5::create_group(f, "exp_avg", path), g2 = h5::create_group(f, "exp_avg_sq", path);
    for (size_t t = 0; t < tensors.size(); ++t) {
      const TensorMeta& tm = tensors[t];
      std::vector<int64_t> rows;  // [W, 2]
      rows.reserve(2 * (size_t)W);
      for (const auto& [a, b] : map[t]) rows.insert(rows.end(), {a, b});
      h5::write_i64_2d(mapg, tm.name, rows, (hsize_t)W, 2, path);
      Handle m = h5::open_dataset(mapg, tm.name, path);
      h5::write_attr_i64(m, "rows", tm.rows, path);
      h5::write_attr_i64(m, "cols", tm.cols, path);
      h5::write_attr_i64(m, "is_1d", tm.is_1d, path);
      // Virtual datasets: the parameter at the root (Hugging Face name), moments in their groups.
      const auto full = dims_of(tm, tm.rows);
      for (int g = 0; g < 3; ++g) {
        Handle vs(H5Screate_simple((int)full.size(), full.data(), nullptr));
        Handle dcpl(H5Pcreate(H5P_DATASET_CREATE));
        if (!vs.valid() || !dcpl.valid()) fail(path, "cannot describe virtual dataset '" + tm.name + "'");
        for (int j = 0; j < W; ++j) {
          const auto [a, b] = map[t][j];
          if (b <= a) continue;
          const auto sd = dims_of(tm, b - a);
          Handle ss(H5Screate_simple((int)sd.size(), sd.data(), nullptr));
          std::vector<hsize_t> start(full.size(), 0), count = sd;
          start[0] = (hsize_t)a;
          const std::string src = std::string("/") + kGroups[g] + "/" + tm.name;
          if (!ss.valid() ||
              H5Sselect_hyperslab(vs, H5S_SELECT_SET, start.data(), nullptr, count.data(), nullptr) < 0 ||
              H5Pset_virtual(dcpl, vs, shard_file_name(j, W).c_str(), src.c_str(), ss) < 0)
            fail(path, "cannot map virtual dataset '" + tm.name + "'");
        }
        hid_t loc = g == 0 ? (hid_t)f : g == 1 ? (hid_t)g1 : (hid_t)g2;
        Handle d(H5Dcreate2(loc, tm.name.c_str(), H5T_IEEE_F32LE, vs, H5P_DEFAULT, dcpl, H5P_DEFAULT));
        if (!d.valid()) fail(path, "cannot create virtual dataset '" + tm.name + "'");
      }
    }
    g1.close(), g2.close(), mapg.close();
    h5::close_written(f, path);
  }
  fsync_path(path);
  seal_index(dir);
}

void check_virtual_datasets(const Index& idx) {
  const std::string path = idx.dir + "/index.h5";
  Handle f = h5::open_file(path);
  Handle g1 = h5::open_group(f, "exp_avg", path), g2 = h5::open_group(f, "exp_avg_sq", path);
  for (size_t t = 0; t < idx.tensors.size(); ++t) {
    const TensorMeta& tm = idx.tensors[t];
    for (int g = 0; g < 3; ++g) {
      const std::string what = (g ? std::string(kGroups[g]) + "/" : "") + tm.name;
      Handle d = h5::open_dataset(g == 0 ? (hid_t)f : g == 1 ? (hid_t)g1 : (hid_t)g2, tm.name, path);
      if (h5::dims(d, tm.is_1d ? 1 : 2, what, path) != dims_of(tm, tm.rows))
        fail(path, "virtual dataset '" + what + "' has another shape than shard_map records");
      Handle dcpl(H5Dget_create_plist(d));
      size_t n = 0;
      if (!dcpl.valid() || H5Pget_layout(dcpl) != H5D_VIRTUAL || H5Pget_virtual_count(dcpl, &n) < 0)
        fail(path, "'" + what + "' is not a virtual dataset");
      size_t want = 0;
      for (const auto& [a, b] : idx.map[t]) want += b > a;
      if (n != want)
        fail(path,
             "virtual dataset '" + what + "' maps " + std::to_string(n) + " sources, want " + std::to_string(want));
      size_t i = 0;
      for (size_t j = 0; j < idx.files.size(); ++j) {
        const auto [a, b] = idx.map[t][j];
        if (b <= a) continue;
        char fname[1024] = {0}, dname[1024] = {0};
        if (H5Pget_virtual_filename(dcpl, i, fname, sizeof fname) < 0 ||
            H5Pget_virtual_dsetname(dcpl, i, dname, sizeof dname) < 0)
          fail(path, "cannot read mapping " + std::to_string(i) + " of '" + what + "'");
        Handle vs(H5Pget_virtual_vspace(dcpl, i));
        hsize_t lo[2] = {0, 0}, hi[2] = {0, 0};
        if (!vs.valid() || H5Sget_select_bounds(vs, lo, hi) < 0)
          fail(path, "cannot read mapping " + std::to_string(i) + " of '" + what + "'");
        const std::string src = std::string("/") + kGroups[g] + "/" + tm.name;
        if (idx.files[j] != fname || src != dname || (int64_t)lo[0] != a || (int64_t)hi[0] + 1 != b)
          fail(path, "virtual dataset '" + what + "' maps '" + fname + ":" + dname + "' rows [" +
                         std::to_string(lo[0]) + ", " + std::to_string(hi[0] + 1) + ") where the shard map records '" +
                         idx.files[j] + "' rows [" + std::to_string(a) + ", " + std::to_string(b) + ")");
        ++i;
      }
    }
  }
}

}  // namespace detail

void seal_index(const std::string& dir) {
  const std::string seal = dir + "/" + kSealName, tmp = seal + ".tmp";
  const std::string text = seal_text(dir + "/index.h5");
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail(tmp, std::string("cannot create: ") + std::strerror(errno));
  try {
    write_all(fd, text, tmp);
    if (::fsync(fd) != 0) fail(tmp, std::string("fsync failed: ") + std::strerror(errno));
  } catch (...) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  if (::close(fd) != 0) fail(tmp, std::string("close failed: ") + std::strerror(errno));
  if (::rename(tmp.c_str(), seal.c_str()) != 0) fail(seal, std::string("rename failed: ") + std::strerror(errno));
  detail::fsync_path(dir);
}

// One reader per format version: what differs between versions is where the configs and the
// shard-file lists live. A new version adds its reader here and keeps the older ones.
namespace {
// Format 1: lists in attributes (<= 64 KiB), no file sizes.
void read_lists_v1(hid_t f, hid_t shards, Index& idx, const std::string& path) {
  idx.state.model_config = h5::read_attr_str(f, "model_config", path);
  idx.state.run_config = h5::read_attr_str(f, "run_config", path);
  std::stringstream ss(h5::read_attr_str(shards, "files", path));
  for (std::string n; std::getline(ss, n);)
    if (!n.empty()) idx.files.push_back(n);
}
// Format 2: configs and lists as datasets, with each shard file's size.
void read_lists_v2(hid_t f, hid_t shards, Index& idx, const std::string& path) {
  Handle c = h5::open_group(f, "config", path);
  idx.state.model_config = h5::read_text(c, "model", 1 << 20, path);
  idx.state.run_config = h5::read_text(c, "run", 64 << 20, path);
  idx.files = h5::read_strings(shards, "files", (size_t)kMaxShardFiles, path);
}
}  // namespace

Index parse_index_file(const std::string& path, const std::string& dir) {
  Handle f = h5::open_file(path);
  Index idx;
  idx.dir = dir;
  const int64_t version = h5::read_attr_i64(f, "format_version", path);
  if (version > kFormatVersion)
    fail(path, "format version " + std::to_string(version) + " is newer than this mor-dist reads (" +
                   std::to_string(kFormatVersion) + ")");
  if (version < 1) fail(path, "format version " + std::to_string(version) + " is not valid");
  idx.format_version = (int)version;
  idx.mor_version = h5::read_attr_str(f, "mor_dist_version", path, 256);
  read_state(f, idx, path);
  TrainState& s = idx.state;
  Handle g = h5::open_group(f, "shards", path);
  if (version == 1)
    read_lists_v1(f, g, idx, path);
  else
    read_lists_v2(f, g, idx, path);
  if ((int64_t)idx.files.size() != s.world_size)
    fail(path, "lists " + std::to_string(idx.files.size()) + " shard files but records world size " +
                   std::to_string(s.world_size));
  for (size_t j = 0; j < idx.files.size(); ++j)
    if (idx.files[j] != detail::shard_file_name((int)j, (int)idx.files.size()))
      fail(path, "shard file " + std::to_string(j) + " is named '" + idx.files[j].substr(0, 80) + "', want '" +
                     detail::shard_file_name((int)j, (int)idx.files.size()) + "'");
  idx.checksum = h5::read_u64(g, "xxh3_64", idx.files.size(), path);
  if (version >= 2) idx.bytes = h5::read_u64(g, "bytes", idx.files.size(), path);
  read_tensors(f, idx, path);
  return idx;
}

Index read_index(const std::string& dir) {
  const std::string path = dir + "/index.h5";
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) fail(path, "file is missing");
  // No seal, no parse: HDF5 1.10 is not safe on arbitrary bytes (fuzzing found crashes and a
  // use-after-free inside the library), so an index is only parsed once its bytes are known good.
  if (::access((dir + "/" + kSealName).c_str(), F_OK) != 0)
    fail(dir + "/" + kSealName,
         "is missing: the index cannot be trusted (an interrupted save, or a checkpoint from "
         "before format 2)");
  check_seal(dir);
  Index idx = parse_index_file(path, dir);
  idx.sealed = true;
  return idx;
}

}  // namespace mor::ckpt
