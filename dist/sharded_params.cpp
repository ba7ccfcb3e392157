#include "dist/sharded_params.h"
#include "dist/partition.h"

#include <algorithm>
#include <cstring>
#include <functional>

#include "model/optimizer.h"

namespace mor::dist {

ShardedParams::ShardedParams(Model& m, Communicator& comm, ShardOptions opt)
    : param(m.be), grad(m.be), m_(m), be_(m.be), comm_(comm), opt_(opt) {
  const int W = comm.size();
  const ParamLayout& L = m.layout;
  int64_t off = 0;
  units_.resize(L.units.size());
  for (size_t u = 0; u < L.units.size(); ++u) {
    Unit& U = units_[u];
    U.off = off;
    for (int t : L.units[u].tensors) {
      const TensorInfo& ti = L.tensors[t];
      const int64_t rpr = rows_per_part(ti.rows, W);
      U.slices.push_back({t, ti.rows, ti.cols, rpr, U.len});
      U.len += rpr * ti.cols;
    }
    off += U.len;
    fwd_order_.push_back((int)u);
    for (auto* b : {&U.recv, &U.send}) b->bind(be_);
    for (auto* b : {&U.gather_send16, &U.gather_recv16, &U.reduce_send16, &U.reduce_recv16}) b->bind(be_);
  }
  param.assign_zero(off);
  grad.assign_zero(off);
}

ShardedParams::~ShardedParams() {
  for (auto& U : units_)
    if (U.gather) U.gather->wait();
  for (auto& r : reductions_) r->wait();
}

std::string ShardedParams::tag(const char* op, int u) const { return std::string(op) + "/" + m_.layout.units[u].name; }

int64_t ShardedParams::unit_bytes(int u) const { return units_[u].len * comm_.size() * (int64_t)sizeof(float); }

void ShardedParams::shard_from_full() {
  const int r = comm_.rank();
  for (size_t u = 0; u < units_.size(); ++u) {
    Unit& U = units_[u];
    for (const Slice& s : U.slices) {
      const TensorInfo& ti = m_.layout.tensors[s.tensor];
      const auto [r0, r1] = row_block(s.rows, r, comm_.size());
      be_.copy(param.data() + U.off + s.shard_off, m_.params.data() + ti.offset + r0 * s.cols,
               (r1 - r0) * s.cols * sizeof(float));
    }
    release_params((int)u);
  }
}

void ShardedParams::unpack(int u, const float* packed, float* full) {
  const Unit& U = units_[u];
  for (int q = 0; q < comm_.size(); ++q)
    for (const Slice& s : U.slices) {
      const auto [r0, r1] = row_block(s.rows, q, comm_.size());
      be_.copy(full + m_.layout.tensors[s.tensor].offset + r0 * s.cols, packed + (size_t)q * U.len + s.shard_off,
               (r1 - r0) * s.cols * sizeof(float));
    }
}

void ShardedParams::pack(int u, const float* full, float* packed) {
  const Unit& U = units_[u];
  for (int q = 0; q < comm_.size(); ++q)
    for (const Slice& s : U.slices) {
      const auto [r0, r1] = row_block(s.rows, q, comm_.size());
      be_.copy(packed + (size_t)q * U.len + s.shard_off, full + m_.layout.tensors[s.tensor].offset + r0 * s.cols,
               (r1 - r0) * s.cols * sizeof(float));
    }
}

void ShardedParams::start_gather(int u) {
  Unit& U = units_[u];
  const int64_t all = U.len * comm_.size();
  if (opt_.param_dtype == kern::DType::BF16) {
    U.gather_send16.resize(U.len);
    be_.cast_to_bf16(U.gather_send16.data(), param.data() + U.off, U.len);
    U.gather_recv16.resize(all);
    U.gather = comm_.iall_gather(U.gather_send16.data(), U.gather_recv16.data(), U.len, tag("allgather", u));
    return;
  }
  U.recv.resize(all);
  U.gather = comm_.iall_gather(param.data() + U.off, U.recv.data(), U.len, tag("allgather", u));
}

void ShardedParams::finish_gather(int u) {
  Unit& U = units_[u];
  U.gather->wait();
  U.gather.reset();
  if (opt_.param_dtype == kern::DType::BF16) {  // upcast, exactly: the model sees bf16-valued fp32 weights
    U.recv.resize(U.gather_recv16.size());
    be_.cast_to_f32(U.recv.data(), U.gather_recv16.data(), U.gather_recv16.size());
    U.gather_send16.reset();
    U.gather_recv16.reset();
  }
  unpack(u, U.recv.data(), m_.params.data());
  U.present = true;
  gathered_bytes += unit_bytes(u);
  gathered_peak_bytes = std::max(gathered_peak_bytes, gathered_bytes);
}

void ShardedParams::release_params(int u) {
  Unit& U = units_[u];
  for (const Slice& s : U.slices) {
    const TensorInfo& ti = m_.layout.tensors[s.tensor];
    be_.discard(m_.params.data() + ti.offset, ti.numel() * sizeof(float));
  }
  U.recv.reset();
  if (U.present) gathered_bytes -= unit_bytes(u);
  U.present = false;
}

void ShardedParams::release_grads(int u) {
  for (const Slice& s : units_[u].slices) {
    const TensorInfo& ti = m_.layout.tensors[s.tensor];
    be_.discard(m_.grads.data() + ti.offset, ti.numel() * sizeof(float));
  }
}

void ShardedParams::prefetch_after(int u, bool backward) {
  if (!opt_.overlap) return;
  auto it = std::find(fwd_order_.begin(), fwd_order_.end(), u);
  int next = -1;
  if (!backward && it + 1 != fwd_order_.end()) next = *(it + 1);
  if (backward && it != fwd_order_.begin() && *(it - 1) != ParamLayout::kEmbedUnit)
    next = *(it - 1);  // the embedding stays gathered
  if (next < 0 || units_[next].present || units_[next].gather) return;
  start_gather(next);
}

void ShardedParams::poke() {
  for (auto& U : units_)
    if (U.gather) U.gather->test();
  for (auto& r : reductions_) r->test();
}

void ShardedParams::need(int u, bool backward) {
  poke();  // let the prefetches and reductions in flight advance
  Unit& U = units_[u];
  if (!U.present) {
    if (!U.gather) start_gather(u);
    finish_gather(u);
  }
  prefetch_after(u, backward);
}

void ShardedParams::done(int u, bool backward, bool last_use) {
  poke();
  const bool shared = u == m_.layout.shared_unit;
  if (backward && last_use && last_micro_) {
    // This unit's gradient is complete: pack every rank's rows and reduce-scatter into our shard.
    Unit& U = units_[u];
    U.send.assign_zero(U.len * comm_.size());  // padding rows of short blocks stay 0
    pack(u, m_.grads.data(), U.send.data());
    if (opt_.reduce_dtype == kern::DType::BF16) {  // the sum lands in reduce_recv16; finish_backward casts it
      U.reduce_send16.resize(U.send.size());
      be_.cast_to_bf16(U.reduce_send16.data(), U.send.data(), U.send.size());
      U.reduce_recv16.resize(U.len);
      reductions_.push_back(
          comm_.ireduce_scatter(U.reduce_send16.data(), U.reduce_recv16.data(), U.len, tag("reducescatter", u)));
      bf16_reduced_.push_back(u);
    } else {
      reductions_.push_back(comm_.ireduce_scatter(U.send.data(), grad.data() + U.off, U.len, tag("reducescatter", u)));
    }
    release_grads(u);
  }
  bool free_params = last_use;
  if (shared && opt_.regather_per_recursion) free_params = true;
  if (shared && !backward && opt_.keep_shared_gathered && !opt_.regather_per_recursion) free_params = false;
  if (free_params && units_[u].present) release_params(u);
}

void ShardedParams::finish_backward() {
  for (auto& r : reductions_) r->wait();
  reductions_.clear();
  for (int u : bf16_reduced_) {
    Unit& U = units_[u];
    be_.cast_to_f32(grad.data() + U.off, U.reduce_recv16.data(), U.len);
    U.reduce_send16.reset();
    U.reduce_recv16.reset();
  }
  bf16_reduced_.clear();
  for (auto& U : units_) U.send.reset();
}

void ShardedParams::gather_full() {
  for (size_t u = 0; u < units_.size(); ++u)
    if (!units_[u].present) {
      start_gather((int)u);
      finish_gather((int)u);
    }
}

namespace {
// The descriptors of every tensor, rows [row0, row1) at `offset` in params and each optimizer state.
LocalState describe(const Model& m, AdamW& opt, float* params,
                    const std::function<void(int tensor, ShardedTensor& t, int64_t& offset)>& rows_of) {
  LocalState st;
  st.groups.push_back("param");
  auto groups = opt.state_groups();
  for (const auto& g : groups) st.groups.push_back(g.name);
  const ParamLayout& L = m.layout;
  std::vector<int> unit_of(L.tensors.size(), -1);
  for (size_t u = 0; u < L.units.size(); ++u)
    for (int t : L.units[u].tensors) unit_of[t] = (int)u;
  for (size_t t = 0; t < L.tensors.size(); ++t) {  // in the layout's order, which checkpoints keep
    const TensorInfo& ti = L.tensors[t];
    st.tensors.push_back({ti.name, ti.rows, ti.cols, ti.is_1d, 0, ti.rows, unit_of[t], {}});
  }
  for (size_t t = 0; t < st.tensors.size(); ++t) {
    ShardedTensor& d = st.tensors[t];
    int64_t off = L.tensors[t].offset;
    rows_of((int)t, d, off);
    d.data.push_back(params + off);
    for (const auto& g : groups) d.data.push_back(g.data->data() + off);
  }
  return st;
}
}  // namespace

LocalState ShardedParams::local_tensors(AdamW& opt) {
  return describe(m_, opt, param.data(), [&](int tensor, ShardedTensor& d, int64_t& offset) {
    for (const Unit& U : units_)
      for (const Slice& s : U.slices)
        if (s.tensor == tensor) {
          const RowBlock b = row_block(s.rows, comm_.rank(), comm_.size());
          d.row0 = b.begin;
          d.row1 = b.end;
          offset = U.off + s.shard_off;
        }
  });
}

LocalState whole_tensors(Model& m, AdamW& opt) {
  return describe(m, opt, m.params.data(), [](int, ShardedTensor&, int64_t&) {});
}

std::vector<uint8_t> ShardedParams::decay_mask(const std::string& no_decay) const {
  const std::vector<uint8_t> full = mor::decay_mask(m_.layout, no_decay, 0, m_.layout.total);
  std::vector<uint8_t> mask(param.size(), 0);
  const int r = comm_.rank();
  for (const Unit& U : units_)
    for (const Slice& s : U.slices) {
      const TensorInfo& ti = m_.layout.tensors[s.tensor];
      const auto [r0, r1] = row_block(s.rows, r, comm_.size());
      for (int64_t i = 0; i < (r1 - r0) * s.cols; ++i)
        mask[U.off + s.shard_off + i] = full[ti.offset + r0 * s.cols + i];
    }
  return mask;
}

}  // namespace mor::dist
