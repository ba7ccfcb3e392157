#include "io/ckpt/h5_util.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <stdexcept>

namespace mor::ckpt::h5 {

void fail(const std::string& file, const std::string& what) {
  throw std::runtime_error("checkpoint '" + file + "': " + what);
}

Handle& Handle::operator=(Handle&& o) noexcept {
  if (this != &o) {
    close();
    id_ = o.id_;
    o.id_ = H5I_INVALID_HID;
  }
  return *this;
}

bool Handle::close() {
  if (id_ < 0) return true;
  const hid_t id = id_;
  id_ = H5I_INVALID_HID;
  // After the library shut down (atexit) every id is already gone: closing again would crash.
  htri_t valid = H5Iis_valid(id);
  if (valid <= 0) return valid == 0;
  herr_t rc = 0;
  switch (H5Iget_type(id)) {
    case H5I_FILE:
      rc = H5Fclose(id);
      break;
    case H5I_GROUP:
      rc = H5Gclose(id);
      break;
    case H5I_DATASET:
      rc = H5Dclose(id);
      break;
    case H5I_DATASPACE:
      rc = H5Sclose(id);
      break;
    case H5I_DATATYPE:
      rc = H5Tclose(id);
      break;
    case H5I_ATTR:
      rc = H5Aclose(id);
      break;
    case H5I_GENPROP_LST:
      rc = H5Pclose(id);
      break;
    default:
      rc = H5Idec_ref(id) < 0 ? -1 : 0;
      break;
  }
  return rc >= 0;
}

void quiet() {
  static std::once_flag once;
  std::call_once(once, [] {
    // No library shutdown at exit: HDF5 1.10 keeps a file whose close failed (disk full, EFBIG)
    // in its tables and crashes (SIGSEGV) when it tries to close it again from atexit. Every file
    // is closed by its Handle before then; the kernel releases the rest.
    H5dont_atexit();
    const char* v = std::getenv("MOR_HDF5_ERRORS");
    if (!(v && std::strcmp(v, "0") != 0)) H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  });
}

Handle file_access() {
  quiet();
  Handle p(H5Pcreate(H5P_FILE_ACCESS));
  if (!p.valid() || H5Pset_libver_bounds(p, H5F_LIBVER_EARLIEST, H5F_LIBVER_V110) < 0 ||
      H5Pset_file_locking(p, false, true) < 0 ||
      // Partial (row-range) reads of contiguous datasets go through the sieve buffer:
      // the 64 KiB default made elastic loads ~8x slower than the disk.
      H5Pset_sieve_buf_size(p, 16u << 20) < 0 ||
      // Metadata (object headers of ~800 datasets) in one block at the front instead of 2 KiB
      // pieces between the datasets: opening a shard cold then costs one read, not hundreds.
      H5Pset_meta_block_size(p, 1u << 20) < 0)
    throw std::runtime_error("HDF5: cannot set up file access properties");
  return p;
}

Handle create_file(const std::string& p) {
  Handle a = file_access();
  Handle f(H5Fcreate(p.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, a));
  if (!f.valid()) fail(p, std::string("cannot create HDF5 file: ") + std::strerror(errno));
  return f;
}

Handle open_file(const std::string& p) {
  struct stat st;
  if (::stat(p.c_str(), &st) != 0) fail(p, "file is missing");
  if (!S_ISREG(st.st_mode)) fail(p, "is not a regular file");
  Handle a = file_access();
  Handle f(H5Fopen(p.c_str(), H5F_ACC_RDONLY, a));
  if (!f.valid()) fail(p, "not a readable HDF5 file (truncated or corrupted?)");
  return f;
}

void close_written(Handle& f, const std::string& path) {
  errno = 0;  // HDF5 flushes on close: a failed write leaves its errno (ENOSPC, EFBIG, EIO)
  if (!f.close())
    fail(path,
         std::string("writing the HDF5 file failed when closing it: ") + (errno ? std::strerror(errno) : "I/O error"));
}

Handle create_group(hid_t loc, const char* name, const std::string& file) {
  Handle g(H5Gcreate2(loc, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
  if (!g.valid()) fail(file, std::string("cannot create group '") + name + "'");
  return g;
}

bool has_link(hid_t loc, const char* name) { return H5Lexists(loc, name, H5P_DEFAULT) > 0; }

Handle open_group(hid_t loc, const char* name, const std::string& file) {
  if (!has_link(loc, name)) fail(file, std::string("group '") + name + "' is missing");
  Handle g(H5Gopen2(loc, name, H5P_DEFAULT));
  if (!g.valid()) fail(file, std::string("'") + name + "' is not a readable group");
  return g;
}

Handle open_dataset(hid_t loc, const std::string& name, const std::string& file) {
  if (name.empty() || name.find('/') != std::string::npos || !has_link(loc, name.c_str()))
    fail(file, "dataset '" + name + "' is missing");
  Handle d(H5Dopen2(loc, name.c_str(), H5P_DEFAULT));
  if (!d.valid()) fail(file, "'" + name + "' is not a readable dataset");
  return d;
}

void write_attr_i64(hid_t obj, const char* name, int64_t v, const std::string& file) {
  Handle s(H5Screate(H5S_SCALAR));
  Handle a(H5Acreate2(obj, name, H5T_STD_I64LE, s, H5P_DEFAULT, H5P_DEFAULT));
  if (!a.valid() || H5Awrite(a, H5T_NATIVE_INT64, &v) < 0)
    fail(file, std::string("cannot write attribute '") + name + "'");
}

void write_attr_str(hid_t obj, const char* name, const std::string& v, const std::string& file) {
  Handle t(H5Tcopy(H5T_C_S1));
  Handle s(H5Screate(H5S_SCALAR));
  if (!t.valid() || H5Tset_size(t, std::max<size_t>(1, v.size())) < 0) fail(file, "cannot make a string type");
  Handle a(H5Acreate2(obj, name, t, s, H5P_DEFAULT, H5P_DEFAULT));
  if (!a.valid() || H5Awrite(a, t, v.empty() ? "" : v.c_str()) < 0)
    fail(file, std::string("cannot write attribute '") + name + "'");
}

bool has_attr(hid_t obj, const char* name) { return H5Aexists(obj, name) > 0; }

namespace {
// Opens a scalar attribute whose type is of class `cls`.
Handle open_scalar_attr(hid_t obj, const char* name, H5T_class_t cls, const std::string& file) {
  if (!has_attr(obj, name)) fail(file, std::string("attribute '") + name + "' is missing");
  Handle a(H5Aopen(obj, name, H5P_DEFAULT));
  if (!a.valid()) fail(file, std::string("attribute '") + name + "' cannot be opened");
  Handle t(H5Aget_type(a)), s(H5Aget_space(a));
  if (!t.valid() || H5Tget_class(t) != cls)
    fail(file, std::string("attribute '") + name + "' has the wrong type (want " +
                   (cls == H5T_INTEGER ? "an integer" : "a string") + ")");
  if (cls == H5T_INTEGER && (H5Tget_size(t) == 0 || H5Tget_size(t) > 8))
    fail(file, std::string("attribute '") + name + "' has " + std::to_string(H5Tget_size(t)) + "-byte integers");
  if (!s.valid() || H5Sget_simple_extent_type(s) != H5S_SCALAR)
    fail(file, std::string("attribute '") + name + "' is not a scalar");
  return a;
}
}  // namespace

int64_t read_attr_i64(hid_t obj, const char* name, const std::string& file) {
  Handle a = open_scalar_attr(obj, name, H5T_INTEGER, file);
  int64_t v = 0;
  if (H5Aread(a, H5T_NATIVE_INT64, &v) < 0) fail(file, std::string("cannot read attribute '") + name + "'");
  return v;
}

std::string read_attr_str(hid_t obj, const char* name, const std::string& file, size_t max_len) {
  Handle a = open_scalar_attr(obj, name, H5T_STRING, file);
  Handle t(H5Aget_type(a));
  if (H5Tis_variable_str(t) > 0)
    fail(file, std::string("attribute '") + name + "' is a variable-length string (not written by mor-dist)");
  const size_t n = H5Tget_size(t);
  if (n == 0 || n > max_len)
    fail(file, std::string("attribute '") + name + "' has an implausible length " + std::to_string(n));
  std::string v(n, '\0');
  Handle mt(H5Tcopy(H5T_C_S1));
  if (!mt.valid() || H5Tset_size(mt, n) < 0 || H5Aread(a, mt, v.data()) < 0)
    fail(file, std::string("cannot read attribute '") + name + "'");
  while (!v.empty() && v.back() == '\0') v.pop_back();
  return v;
}

std::vector<hsize_t> dims(hid_t d, int want_rank, const std::string& what, const std::string& file) {
  Handle s(H5Dget_space(d));
  const int n = s.valid() ? H5Sget_simple_extent_ndims(s) : -1;
  if (n < 0 || n > 8 || (want_rank >= 0 && n != want_rank))
    fail(file, "dataset '" + what + "' has rank " + std::to_string(n) + ", want " + std::to_string(want_rank));
  std::vector<hsize_t> v((size_t)n);
  if (n > 0 && H5Sget_simple_extent_dims(s, v.data(), nullptr) < 0)
    fail(file, "cannot read the shape of '" + what + "'");
  return v;
}

namespace {
// The element type's class, and for integers a size of at most 8 bytes: HDF5 converts through a
// buffer of (elements x element size), so a corrupt 4 GB integer type would ask for gigabytes.
void check_class(hid_t d, H5T_class_t cls, const std::string& what, const std::string& file) {
  Handle t(H5Dget_type(d));
  if (!t.valid() || H5Tget_class(t) != cls) fail(file, "dataset '" + what + "' has the wrong element type");
  if (cls == H5T_INTEGER && (H5Tget_size(t) == 0 || H5Tget_size(t) > 8))
    fail(file, "dataset '" + what + "' has " + std::to_string(H5Tget_size(t)) + "-byte integers");
}
}  // namespace

void write_u64(hid_t loc, const char* name, const std::vector<uint64_t>& v, const std::string& file) {
  hsize_t n = v.size();
  Handle s(H5Screate_simple(1, &n, nullptr));
  Handle d(H5Dcreate2(loc, name, H5T_STD_U64LE, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
  if (!d.valid() || (n > 0 && H5Dwrite(d, H5T_NATIVE_UINT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data()) < 0))
    fail(file, std::string("cannot write dataset '") + name + "'");
}

std::vector<uint64_t> read_u64(hid_t loc, const char* name, size_t want, const std::string& file) {
  Handle d = open_dataset(loc, name, file);
  check_class(d, H5T_INTEGER, name, file);
  const auto n = dims(d, 1, name, file);
  if (n[0] != want)
    fail(file,
         std::string("dataset '") + name + "' has " + std::to_string(n[0]) + " entries, want " + std::to_string(want));
  std::vector<uint64_t> v(want);
  if (want > 0 && H5Dread(d, H5T_NATIVE_UINT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data()) < 0)
    fail(file, std::string("cannot read dataset '") + name + "'");
  return v;
}

void write_i64_2d(hid_t loc, const std::string& name, const std::vector<int64_t>& v, hsize_t rows, hsize_t cols,
                  const std::string& file) {
  hsize_t d2[2] = {rows, cols};
  Handle s(H5Screate_simple(2, d2, nullptr));
  Handle d(H5Dcreate2(loc, name.c_str(), H5T_STD_I64LE, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
  if (!d.valid() || (rows * cols > 0 && H5Dwrite(d, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data()) < 0))
    fail(file, "cannot write dataset '" + name + "'");
}

std::vector<int64_t> read_i64_2d(hid_t d, hsize_t rows, hsize_t cols, const std::string& what,
                                 const std::string& file) {
  check_class(d, H5T_INTEGER, what, file);
  const auto n = dims(d, 2, what, file);
  if (n[0] != rows || n[1] != cols)
    fail(file, "dataset '" + what + "' is [" + std::to_string(n[0]) + ", " + std::to_string(n[1]) + "], want [" +
                   std::to_string(rows) + ", " + std::to_string(cols) + "]");
  std::vector<int64_t> v(rows * cols);
  if (!v.empty() && H5Dread(d, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data()) < 0)
    fail(file, "cannot read dataset '" + what + "'");
  return v;
}

void write_strings(hid_t loc, const char* name, const std::vector<std::string>& v, const std::string& file) {
  size_t w = 1;
  for (const auto& s : v) w = std::max(w, s.size() + 1);
  std::vector<char> buf(w * v.size(), '\0');
  for (size_t i = 0; i < v.size(); ++i) std::memcpy(buf.data() + i * w, v[i].data(), v[i].size());
  Handle t(H5Tcopy(H5T_C_S1));
  if (!t.valid() || H5Tset_size(t, w) < 0) fail(file, "cannot make a string type");
  hsize_t n = v.size();
  Handle s(H5Screate_simple(1, &n, nullptr));
  Handle d(H5Dcreate2(loc, name, t, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
  if (!d.valid() || (n > 0 && H5Dwrite(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf.data()) < 0))
    fail(file, std::string("cannot write dataset '") + name + "'");
}

std::vector<std::string> read_strings(hid_t loc, const char* name, size_t max_count, const std::string& file) {
  Handle d = open_dataset(loc, name, file);
  check_class(d, H5T_STRING, name, file);
  Handle t(H5Dget_type(d));
  if (H5Tis_variable_str(t) > 0) fail(file, std::string("dataset '") + name + "' holds variable-length strings");
  const size_t w = H5Tget_size(t);
  const auto n = dims(d, 1, name, file);
  if (w == 0 || w > 4096 || n[0] > max_count || n[0] * w > (hsize_t(1) << 28))
    fail(file, std::string("dataset '") + name + "' has an implausible size (" + std::to_string(n[0]) + " strings of " +
                   std::to_string(w) + " bytes)");
  std::vector<char> buf(w * n[0]);
  Handle mt(H5Tcopy(H5T_C_S1));
  if (!mt.valid() || H5Tset_size(mt, w) < 0 ||
      (n[0] > 0 && H5Dread(d, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf.data()) < 0))
    fail(file, std::string("cannot read dataset '") + name + "'");
  std::vector<std::string> v(n[0]);
  for (size_t i = 0; i < n[0]; ++i) v[i] = std::string(buf.data() + i * w, strnlen(buf.data() + i * w, w));
  return v;
}

void write_text(hid_t loc, const char* name, const std::string& v, const std::string& file) {
  Handle t(H5Tcopy(H5T_C_S1));
  if (!t.valid() || H5Tset_size(t, std::max<size_t>(1, v.size())) < 0) fail(file, "cannot make a string type");
  Handle s(H5Screate(H5S_SCALAR));
  Handle d(H5Dcreate2(loc, name, t, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
  if (!d.valid() || H5Dwrite(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.empty() ? "" : v.c_str()) < 0)
    fail(file, std::string("cannot write dataset '") + name + "'");
}

std::string read_text(hid_t loc, const char* name, size_t max_len, const std::string& file) {
  Handle d = open_dataset(loc, name, file);
  check_class(d, H5T_STRING, name, file);
  Handle t(H5Dget_type(d)), s(H5Dget_space(d));
  if (H5Tis_variable_str(t) > 0 || H5Sget_simple_extent_type(s) != H5S_SCALAR)
    fail(file, std::string("dataset '") + name + "' is not a scalar fixed-length string");
  const size_t n = H5Tget_size(t);
  if (n == 0 || n > max_len)
    fail(file, std::string("dataset '") + name + "' has an implausible length " + std::to_string(n));
  std::string v(n, '\0');
  Handle mt(H5Tcopy(H5T_C_S1));
  if (!mt.valid() || H5Tset_size(mt, n) < 0 || H5Dread(d, mt, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data()) < 0)
    fail(file, std::string("cannot read dataset '") + name + "'");
  while (!v.empty() && v.back() == '\0') v.pop_back();
  return v;
}

}  // namespace mor::ckpt::h5
