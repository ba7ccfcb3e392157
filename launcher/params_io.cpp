#include "launcher/params_io.h"

#include <algorithm>
#include <stdexcept>

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

}  // namespace mor
