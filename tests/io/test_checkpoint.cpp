// index.h5 validation, the seal, pruning and `latest` resolution, against checkpoints written by
// ckpt::save and then damaged on purpose (fields edited through the HDF5 C API and resealed, so the
// field checks themselves are exercised, not only the seal).
#include <gtest/gtest.h>
#include <hdf5.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "dist/communicator.h"
#include "io/ckpt/checkpoint.h"

namespace fs = std::filesystem;
using namespace mor;

namespace {

struct Tmp {
  std::string dir;
  Tmp() {
    char t[] = "/tmp/mor_ckpt_test_XXXXXX";
    dir = mkdtemp(t);
  }
  ~Tmp() { fs::remove_all(dir); }
};

// Two small tensors (a matrix and a 1-D vector) with parameters and moments.
struct State {
  std::vector<float> w = std::vector<float>(6 * 4), b = std::vector<float>(5);
  std::vector<float> mw = std::vector<float>(24, 0.5f), vw = std::vector<float>(24, 0.25f);
  std::vector<float> mb = std::vector<float>(5, 0.5f), vb = std::vector<float>(5, 0.25f);
  State() {
    for (size_t i = 0; i < w.size(); ++i) w[i] = 0.01f * (float)i;
    for (size_t i = 0; i < b.size(); ++i) b[i] = 1.f + (float)i;
  }
  ckpt::LocalState tensors() {
    return {ckpt::kStateGroups,
            {{"w", 6, 4, false, 0, 6, -1, {w.data(), mw.data(), vw.data()}},
             {"b", 5, 1, true, 0, 5, -1, {b.data(), mb.data(), vb.data()}}}};
  }
};

ckpt::TrainState state_at(int64_t step) {
  ckpt::TrainState st;
  st.step = step;
  st.next_sample = (uint64_t)step * 4;
  st.adam_steps = step;
  st.seed = 7;
  st.tokens_seen = step * 64;
  st.model_config = "[model]\nd_model = 4\n";
  st.run_config = "train";
  return st;
}

std::string save_at(const std::string& root, int64_t step, int keep_last = 2) {
  State s;
  auto comm = dist::make_single_process_comm();
  return ckpt::save(root, state_at(step), s.tensors(), *comm, keep_last, false);
}

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "(no error)";
}

// Edits index.h5 with the C API, then reseals it (as a careless tool or a bit flip plus a resealer would).
template <class F>
void edit_index(const std::string& dir, F&& f) {
  hid_t file = H5Fopen((dir + "/index.h5").c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  ASSERT_GE(file, 0);
  f(file);
  H5Fclose(file);
  ckpt::seal_index(dir);
}
void set_i64(hid_t obj, const char* name, int64_t v) {
  H5Adelete(obj, name);
  hid_t s = H5Screate(H5S_SCALAR), a = H5Acreate2(obj, name, H5T_STD_I64LE, s, H5P_DEFAULT, H5P_DEFAULT);
  H5Awrite(a, H5T_NATIVE_INT64, &v);
  H5Aclose(a), H5Sclose(s);
}

void set_ds_i64(hid_t f, const char* dataset, const char* name, int64_t v) {
  hid_t d = H5Dopen2(f, dataset, H5P_DEFAULT);
  set_i64(d, name, v);
  H5Dclose(d);
}

}  // namespace

TEST(CheckpointIndex, RoundTripAndSeal) {
  Tmp t;
  const std::string dir = save_at(t.dir, 3);
  const ckpt::Index idx = ckpt::read_index(dir);
  EXPECT_TRUE(idx.sealed);
  EXPECT_EQ(idx.format_version, ckpt::kFormatVersion);
  EXPECT_EQ(idx.state.step, 3);
  ASSERT_EQ(idx.tensors.size(), 2u);
  ASSERT_EQ(idx.bytes.size(), 1u);
  EXPECT_EQ((int64_t)idx.bytes[0], (int64_t)fs::file_size(dir + "/" + idx.files[0]));
  EXPECT_NO_THROW(ckpt::verify(idx));
  EXPECT_NE(ckpt::inspect(dir).find("every value finite"), std::string::npos);
}

TEST(CheckpointIndex, FlippedByteNeverReachesHdf5) {
  Tmp t;
  const std::string dir = save_at(t.dir, 1);
  const auto size = fs::file_size(dir + "/index.h5");
  for (uint64_t off : {uint64_t(0), uint64_t(100), size / 2, size - 1}) {
    std::fstream f(dir + "/index.h5", std::ios::in | std::ios::out | std::ios::binary);
    f.seekg((std::streamoff)off);
    char c = 0;
    f.read(&c, 1);
    c ^= 0x40;
    f.seekp((std::streamoff)off);
    f.write(&c, 1);
    f.close();
    EXPECT_NE(error_of([&] { ckpt::read_index(dir); }).find("index.h5': checksum mismatch"), std::string::npos) << off;
    std::fstream g(dir + "/index.h5", std::ios::in | std::ios::out | std::ios::binary);  // flip it back
    c ^= 0x40;
    g.seekp((std::streamoff)off);
    g.write(&c, 1);
  }
  EXPECT_NO_THROW(ckpt::read_index(dir));
  fs::remove(dir + "/index.h5.xxh3");
  EXPECT_NE(error_of([&] { ckpt::read_index(dir); }).find("index.h5.xxh3': is missing"), std::string::npos);
}

TEST(CheckpointIndex, FieldsAreValidated) {
  struct Case {
    const char* what;
    std::function<void(hid_t)> edit;
    const char* want;
  };
  const std::vector<Case> cases = {
      {"negative step", [](hid_t f) { set_i64(f, "step", -5); }, "attribute 'step' is -5"},
      {"adam_steps -1", [](hid_t f) { set_i64(f, "adam_steps", -1); }, "attribute 'adam_steps' is -1"},
      {"adam_steps > step", [](hid_t f) { set_i64(f, "adam_steps", int64_t(1) << 62); }, "attribute 'adam_steps' is"},
      {"world size 0", [](hid_t f) { set_i64(f, "world_size", 0); }, "attribute 'world_size' is 0"},
      {"string-typed step",
       [](hid_t f) {
         H5Adelete(f, "step");
         hid_t t = H5Tcopy(H5T_C_S1);
         H5Tset_size(t, 3);
         hid_t s = H5Screate(H5S_SCALAR), a = H5Acreate2(f, "step", t, s, H5P_DEFAULT, H5P_DEFAULT);
         H5Awrite(a, t, "ten");
         H5Aclose(a), H5Sclose(s), H5Tclose(t);
       },
       "attribute 'step' has the wrong type"},
      {"more checksums than files",
       [](hid_t f) {
         H5Ldelete(f, "shards/xxh3_64", H5P_DEFAULT);
         hsize_t n = 1000;
         std::vector<uint64_t> v(n, 1);
         hid_t s = H5Screate_simple(1, &n, nullptr);
         hid_t d = H5Dcreate2(f, "shards/xxh3_64", H5T_STD_U64LE, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
         H5Dwrite(d, H5T_NATIVE_UINT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data());
         H5Dclose(d), H5Sclose(s);
       },
       "dataset 'xxh3_64' has 1000 entries, want 1"},
      {"rows 2^40", [](hid_t f) { set_ds_i64(f, "shard_map/w", "rows", int64_t(1) << 40); },
       "shards of 'w' do not cover every row"},
      {"rows 0", [](hid_t f) { set_ds_i64(f, "shard_map/b", "rows", 0); }, "tensor 'b' has an impossible shape"},
      {"map past the end",
       [](hid_t f) {
         hid_t d = H5Dopen2(f, "shard_map/w", H5P_DEFAULT);
         int64_t rows[2] = {0, 9};
         H5Dwrite(d, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, rows);
         H5Dclose(d);
       },
       "shards of 'w' overlap, leave a gap or lie outside its 6 rows"},
      {"no tensors",
       [](hid_t f) { H5Ldelete(f, "shard_map/w", H5P_DEFAULT), H5Ldelete(f, "shard_map/b", H5P_DEFAULT); },
       "shard_map lists 0 tensors"},
      {"path in the file list",
       [](hid_t f) {
         H5Ldelete(f, "shards/files", H5P_DEFAULT);
         hid_t t = H5Tcopy(H5T_C_S1);
         H5Tset_size(t, 32);
         hsize_t n = 1;
         char name[32] = "../../etc/passwd";
         hid_t s = H5Screate_simple(1, &n, nullptr);
         hid_t d = H5Dcreate2(f, "shards/files", t, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
         H5Dwrite(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, name);
         H5Dclose(d), H5Sclose(s), H5Tclose(t);
       },
       "shard file 0 is named '../../etc/passwd'"},
      {"newer format", [](hid_t f) { set_i64(f, "format_version", 99); }, "format version 99 is newer"},
  };
  for (const auto& c : cases) {
    Tmp t;
    const std::string dir = save_at(t.dir, 10);
    edit_index(dir, c.edit);
    const std::string e = error_of([&] { ckpt::read_index(dir); });
    EXPECT_NE(e.find(c.want), std::string::npos) << c.what << ": " << e;
  }
}

TEST(CheckpointIndex, TenThousandShardFiles) {
  // The file list used to be one attribute (64 KiB limit, ~2,730 names): lists are datasets now.
  Tmp t;
  const int W = 10000;
  std::vector<ckpt::TensorMeta> tensors = {{"big", 20000, 2, false}, {"small", 3, 1, true}};
  const auto map = ckpt::detail::block_map(tensors, W);
  std::vector<uint64_t> sums(W), bytes(W);
  for (int j = 0; j < W; ++j) sums[j] = 0x9e3779b97f4a7c15ull * (uint64_t)(j + 1), bytes[j] = 1000 + j;
  ckpt::TrainState st = state_at(5);
  st.world_size = W;
  ckpt::detail::write_index(t.dir, st, tensors, map, sums, bytes);
  const ckpt::Index idx = ckpt::read_index(t.dir);
  ASSERT_EQ(idx.files.size(), (size_t)W);
  EXPECT_EQ(idx.files[9999], "shard_09999_of_10000.h5");
  EXPECT_EQ(idx.checksum, sums);
  EXPECT_EQ(idx.bytes, bytes);
  EXPECT_EQ(idx.map[0][9999], (ckpt::RowRange{19998, 20000}));
  EXPECT_EQ(idx.map[1][2], (ckpt::RowRange{2, 3}));
  EXPECT_NO_THROW(ckpt::detail::check_virtual_datasets(idx));
}

TEST(CheckpointSave, RefusesNonFiniteAndExistingDirs) {
  Tmp t;
  State s;
  s.vw[7] = std::nanf("");
  auto comm = dist::make_single_process_comm();
  EXPECT_THROW(ckpt::save(t.dir, state_at(1), s.tensors(), *comm, 2, false), ckpt::NonFiniteError);
  EXPECT_FALSE(fs::exists(t.dir + "/step_00000001"));
  EXPECT_FALSE(fs::exists(t.dir + "/step_00000001.tmp"));
  save_at(t.dir, 2);
  const std::string e = error_of([&] { save_at(t.dir, 2); });
  EXPECT_NE(e.find("already exists: a save never overwrites a checkpoint"), std::string::npos) << e;
  EXPECT_EQ(ckpt::read_index(t.dir + "/step_00000002").state.step, 2);
}

TEST(CheckpointSave, PrunesByRecordedStepOnlyOlderOnes) {
  Tmp t;
  for (int64_t s : {3, 5, 100000000, 99999999}) save_at(t.dir, s, 100);  // names sort wrongly past 10^8
  // A newer checkpoint than the one being saved is never pruned; older ones go oldest first.
  save_at(t.dir, 7, 2);
  EXPECT_FALSE(fs::exists(t.dir + "/step_00000003"));
  EXPECT_TRUE(fs::exists(t.dir + "/step_00000005"));
  EXPECT_TRUE(fs::exists(t.dir + "/step_00000007"));
  EXPECT_TRUE(fs::exists(t.dir + "/step_99999999"));
  EXPECT_TRUE(fs::exists(t.dir + "/step_100000000"));
  const auto all = ckpt::list_checkpoints(t.dir);
  ASSERT_EQ(all.size(), 4u);
  EXPECT_EQ(all.back().step, 100000000);
  // `auto` takes the newest by recorded step, not by name, and says why when latest disagrees.
  std::string note;
  EXPECT_EQ(ckpt::resolve(t.dir, "auto", &note), t.dir + "/step_100000000");
  EXPECT_NE(note.find("is the newest complete checkpoint"), std::string::npos) << note;
}

TEST(CheckpointResolve, LatestMustBeAPlainStepName) {
  Tmp t;
  save_at(t.dir, 4);
  save_at(t.dir, 6);
  std::string note;
  EXPECT_EQ(ckpt::resolve(t.dir, "auto", &note), t.dir + "/step_00000006");
  EXPECT_EQ(note, "");
  { std::ofstream(t.dir + "/latest") << "../../other/step_00000009\n"; }
  EXPECT_EQ(ckpt::resolve(t.dir, "auto", &note), t.dir + "/step_00000006");
  EXPECT_NE(note.find("'latest' does not hold a step directory name"), std::string::npos) << note;
  fs::remove(t.dir + "/latest");
  EXPECT_EQ(ckpt::resolve(t.dir, "auto", &note), t.dir + "/step_00000006");
  EXPECT_NE(note.find("there is no 'latest'"), std::string::npos) << note;
  // latest naming a damaged checkpoint: an error that says why and lists the usable ones
  { std::ofstream(t.dir + "/latest") << "step_00000006\n"; }
  fs::remove(t.dir + "/step_00000006/shard_00000_of_00001.h5");
  const std::string e = error_of([&] { ckpt::resolve(t.dir, "auto"); });
  EXPECT_NE(e.find("shard file is missing"), std::string::npos) << e;
  EXPECT_NE(e.find("step_00000004"), std::string::npos) << e;
  EXPECT_NE(error_of([&] { ckpt::resolve(t.dir, t.dir + "/nope"); }).find("does not exist"), std::string::npos);
}

TEST(CheckpointConvert, BoundsShardsAndRefusesNaN) {
  Tmp t;
  const std::string dir = save_at(t.dir, 1);
  auto comm = dist::make_single_process_comm();
  std::string e = error_of([&] { ckpt::convert(dir, t.dir + "/out", 1000000000, *comm); });
  EXPECT_NE(e.find("--shards 1000000000 is outside [1, 6]"), std::string::npos) << e;
  EXPECT_FALSE(fs::exists(t.dir + "/out.tmp"));
  bool asked = false;
  EXPECT_THROW(ckpt::convert(dir, t.dir + "/out", 3, *comm, [&] { return asked = true; }), ckpt::Interrupted);
  EXPECT_TRUE(asked);
  EXPECT_FALSE(fs::exists(t.dir + "/out.tmp"));
  EXPECT_FALSE(fs::exists(t.dir + "/out"));
  ckpt::convert(dir, t.dir + "/out", 6, *comm);
  EXPECT_NE(ckpt::inspect(t.dir + "/out").find("verified"), std::string::npos);
}

TEST(CheckpointInspect, FindsWhatVerifiedUsedToMiss) {
  {  // a NaN in a moment (written behind mor-dist's back: the file and both checksums fixed up)
    Tmp t;
    const std::string dir = save_at(t.dir, 2);
    const std::string shard = dir + "/shard_00000_of_00001.h5";
    hid_t f = H5Fopen(shard.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t d = H5Dopen2(f, "exp_avg/w", H5P_DEFAULT);
    std::vector<float> v(24, std::nanf(""));
    H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data());
    H5Dclose(d), H5Fclose(f);
    edit_index(dir, [&](hid_t idx) {
      hid_t c = H5Dopen2(idx, "shards/xxh3_64", H5P_DEFAULT);
      uint64_t h = ckpt::detail::file_checksum(shard), n = fs::file_size(shard);
      H5Dwrite(c, H5T_NATIVE_UINT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, &h);
      H5Dclose(c);
      hid_t b = H5Dopen2(idx, "shards/bytes", H5P_DEFAULT);
      H5Dwrite(b, H5T_NATIVE_UINT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, &n);
      H5Dclose(b);
    });
    const std::string e = error_of([&] { ckpt::inspect(dir); });
    EXPECT_NE(e.find("NON-FINITE: exp_avg/w"), std::string::npos) << e;
    EXPECT_NE(ckpt::inspect(dir, /*quick=*/true).find("values not scanned"), std::string::npos);
  }
  {  // a virtual dataset removed
    Tmp t;
    const std::string dir = save_at(t.dir, 2);
    edit_index(dir, [](hid_t f) { H5Ldelete(f, "exp_avg_sq/b", H5P_DEFAULT); });
    EXPECT_NE(error_of([&] { ckpt::inspect(dir); }).find("dataset 'b' is missing"), std::string::npos);
  }
  {  // a tensor the model config implies is missing / has another shape / an extra one
    Tmp t;
    const std::string dir = save_at(t.dir, 2);
    std::vector<ckpt::TensorMeta> want = {{"w", 6, 4, false}, {"b", 5, 1, true}, {"c", 2, 2, false}};
    EXPECT_NE(error_of([&] { ckpt::inspect(dir, true, want); }).find("tensor 'c' of the model config is missing"),
              std::string::npos);
    want = {{"w", 6, 5, false}, {"b", 5, 1, true}};
    EXPECT_NE(error_of([&] { ckpt::inspect(dir, true, want); }).find("but the model config implies [6, 5]"),
              std::string::npos);
    want = {{"w", 6, 4, false}};
    EXPECT_NE(error_of([&] { ckpt::inspect(dir, true, want); }).find("holds 2 tensors but the model config implies 1"),
              std::string::npos);
  }
}
