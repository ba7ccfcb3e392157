// Small checked wrappers over the HDF5 C API for the checkpoint code. Every call's return
// code is checked; a failure throws naming the file and the object. HDF5's own error stack
// printing is switched off (set MOR_HDF5_ERRORS=1 to see it): our message says what failed.
#pragma once
#include <hdf5.h>

#include <cstdint>
#include <string>
#include <vector>

namespace mor::ckpt::h5 {

[[noreturn]] void fail(const std::string& file, const std::string& what);

// Owns one HDF5 identifier and closes it once (moves transfer ownership).
class Handle {
 public:
  Handle() = default;
  explicit Handle(hid_t id) : id_(id) {}
  Handle(Handle&& o) noexcept : id_(o.id_) { o.id_ = H5I_INVALID_HID; }
  Handle& operator=(Handle&& o) noexcept;
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  ~Handle() { close(); }
  // Closes now; returns false if HDF5 reported an error (for files: data not flushed).
  bool close();
  operator hid_t() const { return id_; }
  bool valid() const { return id_ >= 0; }

 private:
  hid_t id_ = H5I_INVALID_HID;
};

// Switches off HDF5's automatic error printing (idempotent; MOR_HDF5_ERRORS=1 keeps it) and its
// shutdown at exit. Must run before any other HDF5 call: file_access() calls it first.
void quiet();

// File access properties: no file locking (NFS/Lustre), formats no newer than 1.10.
Handle file_access();
Handle create_file(const std::string& path);
Handle open_file(const std::string& path);  // read-only
// Closes a file that was written, checking that HDF5 flushed it.
void close_written(Handle& f, const std::string& path);

Handle create_group(hid_t loc, const char* name, const std::string& file);
Handle open_group(hid_t loc, const char* name, const std::string& file);
Handle open_dataset(hid_t loc, const std::string& name, const std::string& file);

void write_attr_i64(hid_t obj, const char* name, int64_t v, const std::string& file);
void write_attr_str(hid_t obj, const char* name, const std::string& v, const std::string& file);
// Scalar integer / string attributes; a missing attribute or another type is an error.
int64_t read_attr_i64(hid_t obj, const char* name, const std::string& file);
std::string read_attr_str(hid_t obj, const char* name, const std::string& file, size_t max_len = 1 << 16);
bool has_attr(hid_t obj, const char* name);
bool has_link(hid_t loc, const char* name);

// Dimensions of a dataset (rank checked against want_rank; -1 = any).
std::vector<hsize_t> dims(hid_t dataset, int want_rank, const std::string& what, const std::string& file);
// 1-D / 2-D integer datasets written and read whole, with type and shape checks.
void write_u64(hid_t loc, const char* name, const std::vector<uint64_t>& v, const std::string& file);
std::vector<uint64_t> read_u64(hid_t loc, const char* name, size_t want, const std::string& file);
void write_i64_2d(hid_t loc, const std::string& name, const std::vector<int64_t>& v, hsize_t rows, hsize_t cols,
                  const std::string& file);
std::vector<int64_t> read_i64_2d(hid_t dataset, hsize_t rows, hsize_t cols, const std::string& what,
                                 const std::string& file);
// A list of strings as a 1-D fixed-length string dataset (no 64 KiB attribute limit).
void write_strings(hid_t loc, const char* name, const std::vector<std::string>& v, const std::string& file);
std::vector<std::string> read_strings(hid_t loc, const char* name, size_t max_count, const std::string& file);
// One long string as a scalar dataset.
void write_text(hid_t loc, const char* name, const std::string& v, const std::string& file);
std::string read_text(hid_t loc, const char* name, size_t max_len, const std::string& file);

}  // namespace mor::ckpt::h5
