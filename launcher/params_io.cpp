#include "launcher/params_io.h"

#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "launcher/log.h"

namespace mor {

static std::vector<int64_t> shape_of(const TensorInfo& t) {
  return t.is_1d ? std::vector<int64_t>{t.rows} : std::vector<int64_t>{t.rows, t.cols};
}

std::vector<io::NamedTensor> export_params(const Model& m, const kern::Buffer<float>& arena) {
  return export_params(m, arena.to_host_vector());
}

std::vector<io::NamedTensor> export_params(const Model& m, const std::vector<float>& arena) {
  std::vector<io::NamedTensor> out;
  for (const auto& t : m.layout.tensors) {
    io::NamedTensor nt;
    nt.name = t.name;
    nt.shape = shape_of(t);
    nt.f.assign(arena.begin() + t.offset, arena.begin() + t.offset + t.numel());
    out.push_back(std::move(nt));
  }
  return out;
}

void import_params(Model& m, const std::vector<io::NamedTensor>& ts, const std::string& source) {
  for (const auto& t : m.layout.tensors) {
    const io::NamedTensor* nt = io::find_tensor(ts, t.name);
    if (!nt) throw std::runtime_error(source + ": tensor '" + t.name + "' is missing");
    if (nt->is_int || nt->shape != shape_of(t))
      throw std::runtime_error(source + ": tensor '" + t.name + "' has another shape or dtype than the model");
    m.be.copy_from_host(m.params.data() + t.offset, nt->f.data(), nt->f.size() * sizeof(float));
  }
}

std::string checkpoint_dir(const std::string& src) {
  struct stat st;
  if (::stat((src + "/index.h5").c_str(), &st) == 0) return src;
  std::string note;
  const std::string dir = ckpt::resolve(src, "auto", &note);
  if (dir.empty()) throw std::runtime_error("'" + src + "' is neither a checkpoint nor a directory holding one");
  if (!note.empty()) logf("%s\n", note.c_str());
  return dir;
}

void load_checkpoint_params(const std::string& dir, const ckpt::Index& idx, const ParamLayout& layout, float* params) {
  ckpt::check_present(idx);
  ckpt::verify(idx);
  ckpt::LocalState st{{"param"}, {}};
  for (const TensorInfo& t : layout.tensors)
    st.tensors.push_back({t.name, t.rows, t.cols, t.is_1d, 0, t.rows, -1, {params + t.offset}});
  ckpt::load_rows(idx, st);
  for (int64_t i = 0; i < layout.total; ++i)
    if (!std::isfinite(params[i])) throw ckpt::NonFiniteError("checkpoint '" + dir + "' holds NaN/inf parameters");
  logf("parameters from %s (step %lld, %zu shard file%s)\n", dir.c_str(), (long long)idx.state.step, idx.files.size(),
       idx.files.size() == 1 ? "" : "s");
}

void load_checkpoint_params(const std::string& dir, const ckpt::Index& idx, const ParamLayout& layout,
                            kern::Buffer<float>& params) {
  if (params.size() != layout.total)
    throw std::logic_error("load_checkpoint_params: arena size differs from the layout");
  kern::Backend& be = *params.backend();
  if (be.host_addressable()) return load_checkpoint_params(dir, idx, layout, params.data());
  std::vector<float> host((size_t)layout.total);
  load_checkpoint_params(dir, idx, layout, host.data());
  params.from_host(host);
}

}  // namespace mor
