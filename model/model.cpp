#include "model/model.h"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace mor {

Model::Model(const ModelConfig& c, Backend& backend, bool trainable)
    : cfg((c.validate(), c)), layout(c), be(backend), params(backend, layout.total),
      grads(backend, trainable ? layout.total : 0), rope_(backend, c.head_dim(), c.seq_len, c.rope_theta),
      router_(make_router(c, backend)), recomputed_(backend), recomputed_y_(backend), scratch_(backend),
      inputs_(backend), targets_(backend), hid_(backend), dhid_(backend), hn_(backend), rstd_f_(backend), dhn_(backend),
      logits_(backend), buf_a_(backend), buf_b_(backend), gbuf_a_(backend), gbuf_b_(backend), params16_(backend),
      tmp16_(backend), hn16_(backend) {
  acts_.reserve(c.n_layers);
  for (int l = 0; l < c.n_layers; ++l) acts_.emplace_back(backend);
  grads.zero();
  stats.reset(c.n_recursions + 1);
}

void Model::init(uint64_t seed) {
  if (be.host_addressable()) return init_params(params.data(), layout, cfg, seed);
  std::vector<float> host((size_t)layout.total);
  init_params(host.data(), layout, cfg, seed);
  params.from_host(host);
}

bool Model::keeps_all(int visit) const {
  if (cfg.kv_mode != KvMode::Share) return false;
  for (int j = 0; j < layout.block_size; ++j)
    if (visit == visit_id(0, j)) return true;
  return false;
}

void Model::run_visit(int visit, int ul, const TokenSet& ts, const float* x, float* y, const LayerActs* kv_src) {
  if (recompute && !keeps_all(visit)) {
    layer_forward(env(), pw(ul), pw16(ul), ts, x, y, recomputed_, kv_src);
    acts_[visit].x.copy_from(x, (int64_t)ts.n() * cfg.d_model);  // all that backward needs to run it again
  } else {
    layer_forward(env(), pw(ul), pw16(ul), ts, x, y, acts_[visit], kv_src);
  }
  // FLOPs: 2 per weight per token, plus q.k and p.v over the visible pairs.
  const double D = cfg.d_model, F = cfg.d_ff, Hd = cfg.n_heads * cfg.head_dim(), KVd = cfg.n_kv_heads * cfg.head_dim();
  const double w = D * Hd * 2 + 3 * D * F + (kv_src ? 0 : 2 * D * KVd);
  double pairs = 0;
  for (int b = 0; b < ts.n_seq(); ++b)
    for (int i = ts.off[b]; i < ts.off[b + 1]; ++i) pairs += kv_src ? ts.pos[i] + 1 : i - ts.off[b] + 1;
  fwd_flops += 2 * w * ts.n() + 4 * Hd * pairs;
}
void Model::back_visit(int visit, int ul, const TokenSet& ts, const float* dy, float* dx, LayerActs* kv_src) {
  if (recompute && !keeps_all(visit)) {  // the same inputs and parameters: the same activations, bit for bit
    recomputed_y_.resize((int64_t)ts.n() * cfg.d_model);
    layer_forward(env(), pw(ul), pw16(ul), ts, acts_[visit].x.data(), recomputed_y_.data(), recomputed_, kv_src);
    layer_backward(env(), pw(ul), pw16(ul), gw(ul), ts, dy, dx, recomputed_, kv_src, scratch_);
  } else {
    layer_backward(env(), pw(ul), pw16(ul), gw(ul), ts, dy, dx, acts_[visit], kv_src, scratch_);
  }
}

int64_t Model::activation_bytes() const {
  auto bytes = [](const auto&... b) { return (0 + ... + (int64_t)(b.capacity() * sizeof(*b.data()))); };
  auto acts = [&](const LayerActs& A) {
    return bytes(A.x, A.a, A.rstd1, A.q, A.k, A.v, A.o, A.lse, A.h, A.m, A.rstd2, A.g, A.u, A.act, A.dk, A.dv, A.a16,
                 A.o16, A.m16, A.act16);
  };
  int64_t n =
      acts(recomputed_) + bytes(recomputed_y_, scratch_.dh, scratch_.dact, scratch_.dg, scratch_.du, scratch_.dm,
                                scratch_.dao, scratch_.dq, scratch_.da, scratch_.dg16, scratch_.du16, tmp16_);
  for (const LayerActs& A : acts_) n += acts(A);
  return n;
}

// ---- bf16 copies of the parameters (bf16 runs) ------------------------------------------------
// Rounded on first use after the parameters may have changed: every step() (the optimizer ran)
// and every all-gather (a released unit's copy is dropped with it). A unit used N_r times per
// pass (the shared block) is rounded once per gather, like it is gathered once.
LayerView16 Model::pw16(int ul) {
  if (!bf16) return {};
  const int64_t off = layout.layer_offset[ul];
  if (params16_.size() != layout.total) params16_.resize(layout.total);
  if (!fresh16_[ul]) {
    be.cast_to_bf16(params16_.data() + off, params.data() + off, layout.layer_numel_at(ul));
    fresh16_[ul] = 1;
  }
  const LayerView v = pw(ul);
  const float* base = params.data();
  const kern::bf16* b16 = params16_.data();
  return {b16 + (v.wq - base), b16 + (v.wk - base), b16 + (v.wv - base), b16 + (v.wo - base),
          b16 + (v.wg - base), b16 + (v.wu - base), b16 + (v.wd - base)};
}

const kern::bf16* Model::embed16() {
  const int64_t n = (int64_t)cfg.vocab_size * cfg.d_model;
  if (params16_.size() != layout.total) params16_.resize(layout.total);
  if (!embed_fresh16_) be.cast_to_bf16(params16_.data() + layout.embed, params.data() + layout.embed, n);
  embed_fresh16_ = true;
  return params16_.data() + layout.embed;
}

kern::bf16* Model::bf16_copy_for_update() {
  if (!bf16) return nullptr;
  if (params16_.size() != layout.total) params16_.resize(layout.total);
  return params16_.data();
}

void Model::bf16_copy_written() {
  if (!bf16) return;
  fresh16_.assign(layout.n_unique_layers, 1);
  embed_fresh16_ = true;
  copy16_written_ = true;
}

void Model::drop16(int unit) {
  if (!bf16 || params16_.size() != layout.total) return;
  for (int ul = 0; ul < layout.n_unique_layers; ++ul)
    if (layout.unit_of_layer[ul] == unit && fresh16_[ul]) {
      fresh16_[ul] = 0;
      be.discard(params16_.data() + layout.layer_offset[ul], (size_t)layout.layer_numel_at(ul) * sizeof(kern::bf16));
    }
  if (unit == ParamLayout::kEmbedUnit) embed_fresh16_ = false;
}

// kv_mode = share: recursion r >= 1 attends to recursion 0's keys/values of the same block layer.
const LayerActs* Model::kv_source(int r, int j) const {
  return (cfg.kv_mode == KvMode::Share && r > 0) ? &acts_[visit_id(0, j)] : nullptr;
}

void Model::block_forward(int r, const TokenSet& ts, const float* x, float* y) {
  const int64_t n = (int64_t)ts.n() * cfg.d_model;
  buf_a_.resize(n);
  buf_b_.resize(n);
  const float* in = x;
  for (int j = 0; j < layout.block_size; ++j) {  // adjacent layers alternate buffers
    float* out = j == layout.block_size - 1 ? y : (j % 2 ? buf_a_.data() : buf_b_.data());
    run_visit(visit_id(r, j), layout.block_first + j, ts, in, out, kv_source(r, j));
    in = out;
  }
}

void Model::block_backward(int r, const TokenSet& ts, const float* dy, float* dx) {
  const int64_t n = (int64_t)ts.n() * cfg.d_model;
  gbuf_a_.resize(n);
  gbuf_b_.resize(n);
  const float* g = dy;
  for (int j = layout.block_size - 1; j >= 0; --j) {
    float* out = j == 0 ? dx : (j % 2 ? gbuf_a_.data() : gbuf_b_.data());
    back_visit(visit_id(r, j), layout.block_first + j, ts, g, out, const_cast<LayerActs*>(kv_source(r, j)));
    g = out;
  }
}

// Fixed depth (no router): unrolled layer l over every token; cyclic sharing with kv_mode = share
// attends to recursion 0's keys/values.
void Model::section_layer_forward(int l, const float* x, float* y) {
  const int B = layout.block_size;
  const LayerActs* kv = cfg.cyclic() ? kv_source(l / B, l % B) : nullptr;
  run_visit(visit_id(0, 0) + l, layout.section_layer(l, cfg), all_, x, y, kv);
}
void Model::section_layer_backward(int l, const float* dy, float* dx) {
  const int B = layout.block_size;
  LayerActs* kv = cfg.cyclic() ? const_cast<LayerActs*>(kv_source(l / B, l % B)) : nullptr;
  back_visit(visit_id(0, 0) + l, layout.section_layer(l, cfg), all_, dy, dx, kv);
}

void Model::unique_layer_forward(int ul, int visit) {
  need(layout.unit_of_layer[ul], false);
  buf_a_.resize(hid_.size());
  run_visit(visit, ul, all_, hid_.data(), buf_a_.data(), nullptr);
  hid_.swap(buf_a_);
  done(layout.unit_of_layer[ul], false, true);
}
void Model::unique_layer_backward(int ul, int visit) {
  need(layout.unit_of_layer[ul], true);
  gbuf_a_.resize(dhid_.size());
  back_visit(visit, ul, all_, dhid_.data(), gbuf_a_.data(), nullptr);
  dhid_.swap(gbuf_a_);
  done(layout.unit_of_layer[ul], true, true);
}

Section Model::section(int n_seq, int global_batch) {
  return {be,
          cfg,
          layout,
          *this,
          all_,
          hid_,
          dhid_,
          params.data() + layout.routers,
          grads.data() + layout.routers,
          stats,
          n_seq,
          global_batch};
}

// ---- head: final norm, tied LM head, cross-entropy -------------------------------
// The final norm of the hidden state's N rows, into hn_ (fp32) or, in bf16 runs, straight into
// hn16_: its output is only the head's GEMM operand.
void Model::final_norm(int N) {
  const int D = cfg.d_model;
  const float* w = params.data() + layout.final_norm;
  rstd_f_.resize(N);
  if (bf16) {
    hn16_.resize((int64_t)N * D);
    be.rmsnorm_forward_bf16(hn16_.data(), rstd_f_.data(), hid_.data(), w, N, D, cfg.rms_eps);
  } else {
    hn_.resize((int64_t)N * D);
    be.rmsnorm_forward(hn_.data(), rstd_f_.data(), hid_.data(), w, N, D, cfg.rms_eps);
  }
}

double Model::head(int n_seq, int global_batch, bool backward) {
  const int D = cfg.d_model, V = cfg.vocab_size, N = n_seq * cfg.seq_len;
  const float* E = params.data() + layout.embed;
  final_norm(N);
  if (backward) dhn_.resize((int64_t)N * D);  // every row written below (dx with accumulate = false)
  // Logits in row chunks (at most ~128 MB): the [N, V] matrix never exists whole for large
  // batches. One 512-token sequence is one chunk: split 341 + 171, the head's GEMMs ran ~9 % slower.
  const int chunk = std::max(1, std::min(N, (1 << 25) / V));
  logits_.resize((int64_t)chunk * V);
  const float scale = 1.f / ((float)global_batch * cfg.seq_len);
  const kern::bf16* E16 = bf16 ? embed16() : nullptr;
  double ce = 0;
  for (int r0 = 0; r0 < N; r0 += chunk) {
    const int rows = std::min(chunk, N - r0);
    const size_t at = (size_t)r0 * D;
    if (bf16)
      be.linear_forward_bf16(logits_.data(), hn16_.data() + at, E16, rows, D, V);
    else
      be.linear_forward(logits_.data(), hn_.data() + at, E, rows, D, V);
    if (bf16 && backward) {  // the logits' gradient straight into bf16, for the GEMMs
      tmp16_.resize((int64_t)rows * V);
      ce += be.softmax_xent_bf16(logits_.data(), tmp16_.data(), targets_.data() + r0, rows, V, scale);
    } else {
      ce += be.softmax_xent(logits_.data(), targets_.data() + r0, rows, V, scale);
    }
    if (!backward) continue;
    if (bf16) {
      be.linear_backward_bf16(dhn_.data() + at, grads.data() + layout.embed, tmp16_.data(), hn16_.data() + at, E16,
                              rows, D, V, false);
    } else {
      be.linear_backward(dhn_.data() + at, grads.data() + layout.embed, logits_.data(), hn_.data() + at, E, rows, D, V,
                         false);
    }
  }
  if (backward) {
    dhid_.resize((int64_t)N * D);
    be.rmsnorm_backward(dhid_.data(), nullptr, grads.data() + layout.final_norm, dhn_.data(), hid_.data(),
                        params.data() + layout.final_norm, rstd_f_.data(), N, D);
  }
  return ce * scale;
}

// ---- the forward up to the last layer ----------------------------------------------
// inputs_ holds the micro-batch's input ids; leaves the last layer's output in hid_. The
// embedding unit is needed from here to the end of the step (the head is tied).
void Model::forward(int n_seq, int global_batch, const int* forced_depth, std::vector<LossTerm>& terms) {
  const int D = cfg.d_model, T = cfg.seq_len, N = n_seq * T;
  if (!copy16_written_) {  // bf16 runs: the parameters may have changed since
    fresh16_.assign(layout.n_unique_layers, 0);
    embed_fresh16_ = false;
  }
  copy16_written_ = false;                   // used once: later forwards cannot know who wrote the parameters since
  fwd_flops = 2.0 * N * D * cfg.vocab_size;  // the tied LM head
  if (all_.n_seq() != n_seq) all_ = TokenSet::all(be, n_seq, T);
  Section sec = section(n_seq, global_batch);
  sec.forced_depth = forced_depth;
  need(ParamLayout::kEmbedUnit, false);
  hid_.resize((int64_t)N * D);
  be.embedding_forward(hid_.data(), params.data() + layout.embed, inputs_.data(), N, D);
  if (layout.prelude >= 0) unique_layer_forward(layout.prelude, 0);
  router_->forward(sec, terms);
  if (layout.coda >= 0) unique_layer_forward(layout.coda, cfg.n_layers - 1);
}

std::vector<float> Model::forward_logits(const int32_t* inputs, int n_seq, const int* forced_depth) {
  const int D = cfg.d_model, V = cfg.vocab_size, N = n_seq * cfg.seq_len;
  for (int t = 0; forced_depth && t < N; ++t) {
    const int d = forced_depth[t], R = cfg.n_recursions;
    const int lo = cfg.router == RouterKind::None                                         ? R
                   : cfg.router == RouterKind::Expert && cfg.kv_mode == KvMode::Recursion ? 0
                                                                                          : 1;
    if (d < lo || d > R)
      throw std::invalid_argument("forward_logits: forced depth " + std::to_string(d) + " of token " +
                                  std::to_string(t) + " is outside [" + std::to_string(lo) + ", " + std::to_string(R) +
                                  "]");
  }
  inputs_.from_host(inputs, N);
  std::vector<LossTerm> terms = router_->loss_terms();
  forward(n_seq, n_seq, forced_depth, terms);
  final_norm(N);
  logits_.resize((int64_t)N * V);
  if (bf16) {
    be.linear_forward_bf16(logits_.data(), hn16_.data(), embed16(), N, D, V);
  } else {
    be.linear_forward(logits_.data(), hn_.data(), params.data() + layout.embed, N, D, V);
  }
  done(ParamLayout::kEmbedUnit, false, true);
  return logits_.to_host_vector();
}

// ---- one micro-step, top to bottom -----------------------------------------------
LossParts Model::step(const int32_t* tokens, int n_seq, int global_batch, bool backward) {
  if (backward && grads.size() != layout.total)
    throw std::logic_error("Model::step: backward on a model without gradients");
  const int D = cfg.d_model, T = cfg.seq_len, N = n_seq * T;
  LossParts loss;
  loss.terms = router_->loss_terms();
  std::vector<int32_t> in(N), tgt(N);
  for (int b = 0; b < n_seq; ++b)
    for (int t = 0; t < T; ++t) {
      in[b * T + t] = tokens[(size_t)b * (T + 1) + t];
      tgt[b * T + t] = tokens[(size_t)b * (T + 1) + t + 1];
    }
  inputs_.from_host(in);
  targets_.from_host(tgt);

  // Forward.
  forward(n_seq, global_batch, nullptr, loss.terms);
  loss.ce = head(n_seq, global_batch, backward);
  if (!backward) {
    done(ParamLayout::kEmbedUnit, false, true);
    return loss;
  }

  // Backward, in reverse (head() already produced dL/dH at the top).
  if (layout.coda >= 0) unique_layer_backward(layout.coda, cfg.n_layers - 1);
  Section sec = section(n_seq, global_batch);
  router_->backward(sec);
  if (layout.prelude >= 0) unique_layer_backward(layout.prelude, 0);
  be.embedding_backward(grads.data() + layout.embed, dhid_.data(), inputs_.data(), N, D);
  done(ParamLayout::kEmbedUnit, true, true);
  return loss;
}

}  // namespace mor
