#include "model/params.h"

#include <cmath>

#include "model/rng.h"

namespace mor {

namespace {
const char* kLayerTensors[9] = {"input_layernorm.weight",  "self_attn.q_proj.weight", "self_attn.k_proj.weight",
                                "self_attn.v_proj.weight", "self_attn.o_proj.weight", "post_attention_layernorm.weight",
                                "mlp.gate_proj.weight",    "mlp.up_proj.weight",      "mlp.down_proj.weight"};
}

ParamLayout::ParamLayout(const ModelConfig& c) {
  const int64_t D = c.d_model, F = c.d_ff, Hd = (int64_t)c.n_heads * c.head_dim(),
                KVd = (int64_t)c.n_kv_heads * c.head_dim();
  auto add = [&](std::string name, int64_t rows, int64_t cols, bool decay, bool is_1d) {
    tensors.push_back({std::move(name), rows, cols, total, decay, is_1d});
    total += rows * cols;
    return tensors.back().offset;
  };
  embed = add("model.embed_tokens.weight", c.vocab_size, D, true, false);

  block_size = c.block_size();
  const bool used_once = c.n_recursions == 1;
  std::vector<std::string> prefixes;
  if (c.middle()) prefixes.push_back("model.layers.0");
  for (int j = 0; j < block_size; ++j)
    prefixes.push_back(used_once ? "model.layers." + std::to_string(j + (c.middle() ? 1 : 0))
                                 : "model.shared_layers." + std::to_string(j));
  if (c.middle()) prefixes.push_back("model.layers." + std::to_string(c.n_layers - 1));
  n_unique_layers = (int)prefixes.size();
  prelude = c.middle() ? 0 : -1;
  block_first = c.middle() ? 1 : 0;
  coda = c.middle() ? n_unique_layers - 1 : -1;

  const int64_t shapes[9][2] = {{D, 1}, {Hd, D}, {KVd, D}, {KVd, D}, {D, Hd}, {D, 1}, {F, D}, {F, D}, {D, F}};
  for (const auto& p : prefixes) {
    layer_offset.push_back(total);
    for (int t = 0; t < 9; ++t) {
      bool norm = shapes[t][1] == 1;
      add(p + "." + kLayerTensors[t], shapes[t][0], shapes[t][1], !norm, norm);
    }
  }
  final_norm = add("model.norm.weight", D, 1, false, true);
  routers = total;
  if (c.router == RouterKind::Expert)
    for (int r = 0; r < c.n_recursions; ++r) add("model.routers." + std::to_string(r) + ".weight", 1, D, true, false);
  if (c.router == RouterKind::Token) add("model.router.weight", c.n_recursions, D, true, false);

  // Units, in forward order: embedding (+ final norm), prelude, section layers / shared block, coda.
  const int n_layer_tensors = 9;
  const int final_norm_idx = 1 + n_layer_tensors * n_unique_layers;
  units.push_back({"embed", {0, final_norm_idx}});
  unit_of_layer.assign(n_unique_layers, -1);
  const bool shared = c.cyclic() && c.n_recursions > 1;
  for (int ul = 0; ul < n_unique_layers; ++ul) {
    const bool in_block = ul >= block_first && ul < block_first + block_size;
    if (in_block && shared) {
      if (shared_unit < 0) {
        shared_unit = (int)units.size();
        units.push_back({"shared_block", {}});
      }
    } else {
      units.push_back({prefixes[ul], {}});
    }
    unit_of_layer[ul] = in_block && shared ? shared_unit : (int)units.size() - 1;
    for (int t = 0; t < n_layer_tensors; ++t) units[unit_of_layer[ul]].tensors.push_back(1 + n_layer_tensors * ul + t);
  }
  for (int t = final_norm_idx + 1; t < (int)tensors.size(); ++t) units[shared_unit].tensors.push_back(t);  // routers
}

LayerView ParamLayout::layer(float* a, int ul, const ModelConfig& c) const {
  const int64_t D = c.d_model, F = c.d_ff, Hd = (int64_t)c.n_heads * c.head_dim(),
                KVd = (int64_t)c.n_kv_heads * c.head_dim();
  float* p = a + layer_offset[ul];
  LayerView v;
  v.attn_norm = p;
  p += D;
  v.wq = p;
  p += Hd * D;
  v.wk = p;
  p += KVd * D;
  v.wv = p;
  p += KVd * D;
  v.wo = p;
  p += D * Hd;
  v.mlp_norm = p;
  p += D;
  v.wg = p;
  p += F * D;
  v.wu = p;
  p += F * D;
  v.wd = p;
  return v;
}

const TensorInfo* ParamLayout::find(const std::string& name) const {
  for (const auto& t : tensors)
    if (t.name == name) return &t;
  return nullptr;
}

int ParamLayout::section_layer(int l, const ModelConfig& c) const {
  return block_first + (c.cyclic() ? l % block_size : l / c.n_recursions);
}

static int64_t layer_numel(const ModelConfig& c) {
  const int64_t D = c.d_model, F = c.d_ff, Hd = (int64_t)c.n_heads * c.head_dim(),
                KVd = (int64_t)c.n_kv_heads * c.head_dim();
  return 2 * D + 2 * Hd * D + 2 * KVd * D + 3 * F * D;
}

int64_t ParamLayout::count_embedding() const { return tensors[0].numel(); }
int64_t ParamLayout::layer_numel_at(int ul) const {
  return (ul + 1 < n_unique_layers ? layer_offset[ul + 1] : final_norm) - layer_offset[ul];
}
int64_t ParamLayout::count_shared() const {
  int64_t s = 0;
  for (int j = 0; j < block_size; ++j) s += layer_numel_at(block_first + j);
  return s;
}
int64_t ParamLayout::count_unique_layers() const {
  int64_t s = 0;
  for (int ul : {prelude, coda})
    if (ul >= 0) s += layer_numel_at(ul);
  return s;
}
int64_t ParamLayout::count_other() const { return total - final_norm; }

int64_t analytic_param_count(const ModelConfig& c) {
  int64_t n = (int64_t)c.vocab_size * c.d_model;  // tied embedding / LM head
  n += layer_numel(c) * (c.block_size() + (c.middle() ? 2 : 0));
  n += c.d_model;  // final norm
  if (c.router == RouterKind::Expert) n += (int64_t)c.n_recursions * c.d_model;
  if (c.router == RouterKind::Token) n += (int64_t)c.n_recursions * c.d_model;
  return n;
}

void init_params(float* a, const ParamLayout& lay, const ModelConfig& c, uint64_t seed) {
  // One stream per tensor: adding a tensor never changes the others' values, and tensors can be
  // filled in parallel without the values depending on the thread count.
#pragma omp parallel for schedule(dynamic, 1)
  for (size_t t = 0; t < lay.tensors.size(); ++t) {
    const TensorInfo& ti = lay.tensors[t];
    if (ti.is_1d) {
      for (int64_t i = 0; i < ti.numel(); ++i) a[ti.offset + i] = 1.f;
    } else {
      Rng rng(seed, 0x9a3a0000ull + t);
      for (int64_t i = 0; i < ti.numel(); ++i) a[ti.offset + i] = (float)(rng.normal() * c.init_std);
    }
  }
}

}  // namespace mor
