#include "model/decode.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

namespace mor {

namespace {
inline float sigmoid(float x) { return 1.f / (1.f + std::exp(-x)); }
}  // namespace

Decoder::Decoder(Model& m, int slots, float threshold)
    : m_(m), c_(m.cfg), L_(m.layout), be_(m.be), threshold_(threshold),
      rope_(m.be, m.cfg.head_dim(), m.cfg.seq_len, m.cfg.rope_theta) {
  if (slots < 1) throw std::invalid_argument("decode: the number of slots must be >= 1");
  if (!(threshold >= 0.f && threshold <= 1.f))
    throw std::invalid_argument("decode: the expert-choice threshold must be in [0, 1]");
  caches_.reserve(slots);
  for (int s = 0; s < slots; ++s) caches_.emplace_back(be_, c_);
  len_.assign(slots, 0);
  for (kern::Buffer<int32_t>* b : {&ids_, &moves_}) b->bind(be_);
  for (kern::Buffer<float>* b : {&h_, &xcur_, &xin_, &y_,   &ping_, &pong_,   &scores_, &gate_, &a_,   &rstd_,  &q_,
                                 &k_, &v_,    &o_,   &lse_, &hmid_, &mlp_in_, &g_,      &u_,    &act_, &logits_})
    b->bind(be_);
}

void Decoder::Rows::upload(kern::Backend& be) {
  dev_pos.bind(be);
  dev_idx.bind(be);
  dev_pos.from_host(pos.data(), n());
  dev_idx.from_host(idx.data(), n());
}

void Decoder::reset(int slot) {
  caches_.at(slot).clear();
  len_[slot] = 0;
}

void Decoder::check(const std::vector<DecodeChunk>& chunks) const {
  const int R = c_.n_recursions;
  const int lo = c_.router == RouterKind::None                                        ? R
                 : c_.router == RouterKind::Expert && c_.kv_mode == KvMode::Recursion ? 0
                                                                                      : 1;
  std::vector<char> seen(slots(), 0);
  for (const DecodeChunk& ch : chunks) {
    const std::string at = "decode: slot " + std::to_string(ch.slot);
    if (ch.slot < 0 || ch.slot >= slots() || seen[ch.slot]++)
      throw std::invalid_argument(at + " is out of range or appears twice in one step");
    if (ch.tokens.empty()) throw std::invalid_argument(at + ": no tokens");
    if ((int64_t)len_[ch.slot] + (int64_t)ch.tokens.size() > c_.seq_len)
      throw std::invalid_argument(at + ": " + std::to_string(len_[ch.slot] + ch.tokens.size()) +
                                  " tokens exceed the model's " + std::to_string(c_.seq_len) + " positions");
    for (int32_t id : ch.tokens)
      if (id < 0 || id >= c_.vocab_size)
        throw std::invalid_argument(at + ": token id " + std::to_string(id) + " is outside the vocabulary (0.." +
                                    std::to_string(c_.vocab_size - 1) + ")");
    if (!ch.forced_depth.empty() && ch.forced_depth.size() != ch.tokens.size())
      throw std::invalid_argument(at + ": forced depths and tokens differ in number");
    for (int d : ch.forced_depth)
      if (d < lo || d > R)
        throw std::invalid_argument(at + ": forced depth " + std::to_string(d) + " is outside [" + std::to_string(lo) +
                                    ", " + std::to_string(R) + "]");
  }
}

// ---- one decode step, top to bottom ---------------------------------------------------
std::vector<DecodeOut> Decoder::step(const std::vector<DecodeChunk>& chunks, bool all_logits) {
  check(chunks);
  const int D = c_.d_model;
  // Every new row, chunk by chunk, at the positions after its sequence's cache.
  all_.off.assign(1, 0);
  all_.pos.clear();
  all_.idx.clear();
  slot_of_.clear();
  forced_.clear();
  std::vector<int32_t> ids;
  for (const DecodeChunk& ch : chunks) {
    for (size_t i = 0; i < ch.tokens.size(); ++i) {
      all_.idx.push_back(all_.n());
      all_.pos.push_back(len_[ch.slot] + (int)i);
      ids.push_back(ch.tokens[i]);
      forced_.push_back(ch.forced_depth.empty() ? -1 : ch.forced_depth[i]);
    }
    all_.off.push_back(all_.n());
    slot_of_.push_back(ch.slot);
  }
  all_.upload(be_);
  const int n = all_.n();
  depth_.assign(n, c_.router == RouterKind::Expert ? 0 : c_.n_recursions);

  ids_.from_host(ids);
  h_.resize((int64_t)n * D);
  be_.embedding_forward(h_.data(), m_.params.data() + L_.embed, ids_.data(), n, D);
  if (L_.prelude >= 0) unique_layer(0, L_.prelude);
  if (c_.router == RouterKind::Expert)
    section_expert();
  else if (c_.router == RouterKind::Token)
    section_token();
  else
    section_none();
  if (L_.coda >= 0) unique_layer(c_.n_layers - 1, L_.coda);
  for (const DecodeChunk& ch : chunks) len_[ch.slot] += (int)ch.tokens.size();

  std::vector<DecodeOut> out(chunks.size());
  head(all_logits, out);
  for (size_t c = 0; c < chunks.size(); ++c)
    out[c].depth.assign(depth_.begin() + all_.off[c], depth_.begin() + all_.off[c + 1]);
  return out;
}

// y = Layer(x) on the rows of `set` (docs/MODEL.md "Layer"). Unless kv_visit names another visit
// (kv_mode share), the rows' keys and values join their sequences' caches of this visit first;
// each sequence's queries then attend to its cache of kv_visit (key visible iff its position <=
// the query's: the chunk's own later tokens are hidden).
void Decoder::layer(int visit, int kv_visit, int ul, const Rows& set, const float* x, float* y) {
  const int n = set.n();
  if (n == 0) return;
  const int D = c_.d_model, F = c_.d_ff, H = c_.n_heads, Hkv = c_.n_kv_heads, hd = c_.head_dim();
  const int Hd = H * hd, KVd = Hkv * hd;
  const LayerView w = L_.layer(m_.params.data(), ul, c_);
  a_.resize((int64_t)n * D);
  rstd_.resize(n);
  q_.resize((int64_t)n * Hd);
  o_.resize((int64_t)n * Hd);
  lse_.resize((int64_t)n * H);
  be_.rmsnorm_forward(a_.data(), rstd_.data(), x, w.attn_norm, n, D, c_.rms_eps);
  be_.linear_forward(q_.data(), a_.data(), w.wq, n, D, Hd);
  be_.rope_forward(q_.data(), set.dev_pos.data(), n, H, rope_);
  if (kv_visit == visit) {
    k_.resize((int64_t)n * KVd);
    v_.resize((int64_t)n * KVd);
    be_.linear_forward_pair(k_.data(), w.wk, KVd, v_.data(), w.wv, KVd, a_.data(), n, D);
    be_.rope_forward(k_.data(), set.dev_pos.data(), n, Hkv, rope_);
    for (size_t c = 0; c + 1 < set.off.size(); ++c) {
      const int r0 = set.off[c];
      caches_[slot_of_[c]].append(visit, k_.data() + (int64_t)r0 * KVd, v_.data() + (int64_t)r0 * KVd,
                                  set.dev_pos.data() + r0, set.off[c + 1] - r0);
    }
  }
  for (size_t c = 0; c + 1 < set.off.size(); ++c) {
    const int r0 = set.off[c], nq = set.off[c + 1] - r0;
    if (nq == 0) continue;
    const KvRows& kv = caches_[slot_of_[c]].rows(kv_visit);
    be_.attention_forward(o_.data() + (int64_t)r0 * Hd, lse_.data() + (int64_t)r0 * H, q_.data() + (int64_t)r0 * Hd,
                          kv.k.data(), kv.v.data(), set.dev_pos.data() + r0, kv.pos.data(), {nq, kv.n, H, Hkv, hd});
  }
  // h = x + o Wo^T; y = h + SwiGLU MLP(RMSNorm(h))
  hmid_.resize((int64_t)n * D);
  be_.linear_forward(hmid_.data(), o_.data(), w.wo, n, Hd, D);
  be_.add_inplace(hmid_.data(), x, (int64_t)n * D);
  mlp_in_.resize((int64_t)n * D);
  be_.rmsnorm_forward(mlp_in_.data(), rstd_.data(), hmid_.data(), w.mlp_norm, n, D, c_.rms_eps);
  g_.resize((int64_t)n * F);
  u_.resize((int64_t)n * F);
  act_.resize((int64_t)n * F);
  be_.linear_forward_pair(g_.data(), w.wg, F, u_.data(), w.wu, F, mlp_in_.data(), n, D);
  be_.swiglu_forward(act_.data(), g_.data(), u_.data(), (int64_t)n * F);
  be_.linear_forward(y, act_.data(), w.wd, n, F, D);
  be_.add_inplace(y, hmid_.data(), (int64_t)n * D);
}

// The shared block at recursion r: its B layers, adjacent ones alternating buffers. kv_mode share:
// recursions >= 1 read recursion 0's cache of the same block layer.
void Decoder::block(int r, const Rows& set, const float* x, float* y) {
  const int B = L_.block_size;
  ping_.resize((int64_t)set.n() * c_.d_model);
  pong_.resize((int64_t)set.n() * c_.d_model);
  const float* in = x;
  for (int j = 0; j < B; ++j) {
    float* out = j == B - 1 ? y : (j % 2 ? ping_.data() : pong_.data());
    const int kv = c_.kv_mode == KvMode::Share && r > 0 ? visit(0, j) : visit(r, j);
    layer(visit(r, j), kv, L_.block_first + j, set, in, out);
    in = out;
  }
}

void Decoder::unique_layer(int v, int ul) {
  y_.resize(h_.size());
  layer(v, v, ul, all_, h_.data(), y_.data());
  h_.swap(y_);
}

// No router: every token through every unrolled layer of the section.
void Decoder::section_none() {
  const int B = L_.block_size;
  for (int l = 0; l < c_.section_layers(); ++l) {
    const int v = visit(0, 0) + l;
    const int kv = c_.cyclic() && c_.kv_mode == KvMode::Share && l >= B ? visit(0, l % B) : v;
    y_.resize(h_.size());
    layer(v, kv, L_.section_layer(l, c_), all_, h_.data(), y_.data());
    h_.swap(y_);
  }
}

// Expert-choice, causally: recursion r scores the tokens recursion r-1 kept on their current hidden
// state and keeps those whose sigmoid(score) reaches the threshold, or all of them where training's
// capacity keeps all (k_r >= k_{r-1}; k_{-1} = T); H[S_r] += alpha sigmoid(s) Block_r(H[S_r]).
void Decoder::section_expert() {
  const int D = c_.d_model, R = c_.n_recursions;
  Rows* cand = &rows_[0];  // the rows of recursion r's candidates, then of the selected (two buffers, swapped)
  Rows* sel = &rows_[1];
  cand->off = all_.off;
  cand->pos = all_.pos;
  cand->idx = all_.idx;
  cand->upload(be_);
  std::vector<float> s, gate;
  for (int r = 0; r < R && cand->n() > 0; ++r) {
    const int nc = cand->n();
    xin_.resize((int64_t)nc * D);
    be_.copy_rows(xin_.data(), nullptr, h_.data(), cand->dev_idx.data(), nullptr, nc, D, false);
    scores_.resize(nc);
    be_.linear_forward(scores_.data(), xin_.data(), m_.params.data() + L_.routers + (int64_t)r * D, nc, D, 1);
    s.resize(nc);
    scores_.to_host(s.data());
    const bool keep_all = c_.expert_k(r) >= (r == 0 ? c_.seq_len : c_.expert_k(r - 1));
    sel->clear();
    gate.clear();
    for (size_t c = 0; c + 1 < cand->off.size(); ++c) {
      for (int i = cand->off[c]; i < cand->off[c + 1]; ++i) {
        const int row = cand->idx[i];
        const float p = sigmoid(s[i]);
        if (forced_[row] >= 0 ? forced_[row] <= r : !(keep_all || p >= threshold_)) continue;
        sel->pos.push_back(cand->pos[i]);
        sel->idx.push_back(row);
        gate.push_back(c_.ec_alpha * p);
        depth_[row] = r + 1;
      }
      sel->off.push_back(sel->n());
    }
    const int ns = sel->n();
    sel->upload(be_);
    gate_.from_host(gate);
    xin_.resize((int64_t)ns * D);
    be_.copy_rows(xin_.data(), nullptr, h_.data(), sel->dev_idx.data(), nullptr, ns, D, false);
    y_.resize((int64_t)ns * D);
    block(r, *sel, xin_.data(), y_.data());
    be_.copy_rows(h_.data(), sel->dev_idx.data(), y_.data(), nullptr, gate_.data(), ns, D, true);
    std::swap(cand, sel);
  }
}

// Token-choice: the router picks each token's depth from the section's input, as in training;
// recursion r runs on the tokens with depth > r; a token leaving adds gate * output to its hidden
// state, a token going on hands its output to the next recursion unscaled.
void Decoder::section_token() {
  const int D = c_.d_model, R = c_.n_recursions, n = all_.n();
  scores_.resize((int64_t)n * R);
  be_.linear_forward(scores_.data(), h_.data(), m_.params.data() + L_.routers, n, D, R);
  std::vector<float> lg((size_t)n * R), q(R), gate(n);
  scores_.to_host(lg.data());
  std::vector<int> choice(n);
  for (int t = 0; t < n; ++t) {  // softmax and argmax exactly as router_token.cpp
    const float* l = &lg[(size_t)t * R];
    const float mx = *std::max_element(l, l + R);
    float sum = 0.f;
    for (int j = 0; j < R; ++j) sum += (q[j] = std::exp(l[j] - mx));
    for (int j = 0; j < R; ++j) q[j] /= sum;
    choice[t] = forced_[t] >= 0 ? forced_[t] - 1 : (int)(std::max_element(q.begin(), q.end()) - q.begin());
    gate[t] = c_.tc_alpha * q[choice[t]];
    depth_[t] = choice[t] + 1;
  }
  xcur_.copy_from(h_.data(), (int64_t)n * D);
  for (int r = 0; r < R; ++r) {
    Rows& act = rows_[0];
    act.clear();
    std::vector<int32_t> exit_src, exit_dst, carry_src, carry_dst;
    std::vector<float> exit_gate;
    for (size_t c = 0; c + 1 < all_.off.size(); ++c) {
      for (int t = all_.off[c]; t < all_.off[c + 1]; ++t) {
        if (choice[t] < r) continue;
        (choice[t] == r ? exit_src : carry_src).push_back(act.n());
        (choice[t] == r ? exit_dst : carry_dst).push_back(t);
        if (choice[t] == r) exit_gate.push_back(gate[t]);
        act.pos.push_back(all_.pos[t]);
        act.idx.push_back(t);
      }
      act.off.push_back(act.n());
    }
    const int na = act.n(), ne = (int)exit_src.size(), nk = (int)carry_src.size();
    if (na == 0) break;
    act.upload(be_);
    xin_.resize((int64_t)na * D);
    be_.copy_rows(xin_.data(), nullptr, xcur_.data(), act.dev_idx.data(), nullptr, na, D, false);
    y_.resize((int64_t)na * D);
    block(r, act, xin_.data(), y_.data());
    std::vector<int32_t> mv = exit_src;  // one upload: exit src, exit dst, carry src, carry dst
    for (const auto* v : {&exit_dst, &carry_src, &carry_dst}) mv.insert(mv.end(), v->begin(), v->end());
    moves_.from_host(mv);
    gate_.from_host(exit_gate);
    const int32_t* M = moves_.data();
    be_.copy_rows(h_.data(), M + ne, y_.data(), M, gate_.data(), ne, D, true);
    be_.copy_rows(xcur_.data(), M + 2 * ne + nk, y_.data(), M + 2 * ne, nullptr, nk, D, false);
  }
}

// Final norm and the tied head on each chunk's last row (or every row).
void Decoder::head(bool all_logits, std::vector<DecodeOut>& out) {
  const int D = c_.d_model, V = c_.vocab_size;
  std::vector<int32_t> rows;
  for (size_t c = 0; c < out.size(); ++c)
    for (int i = all_logits ? all_.off[c] : all_.off[c + 1] - 1; i < all_.off[c + 1]; ++i) rows.push_back(i);
  const int nr = (int)rows.size();
  moves_.from_host(rows);
  xin_.resize((int64_t)nr * D);
  be_.copy_rows(xin_.data(), nullptr, h_.data(), moves_.data(), nullptr, nr, D, false);
  a_.resize((int64_t)nr * D);
  rstd_.resize(nr);
  be_.rmsnorm_forward(a_.data(), rstd_.data(), xin_.data(), m_.params.data() + L_.final_norm, nr, D, c_.rms_eps);
  logits_.resize((int64_t)nr * V);
  be_.linear_forward(logits_.data(), a_.data(), m_.params.data() + L_.embed, nr, D, V);
  const std::vector<float> host = logits_.to_host_vector();
  size_t at = 0;
  for (size_t c = 0; c < out.size(); ++c) {
    const size_t rows_c = all_logits ? (size_t)(all_.off[c + 1] - all_.off[c]) : 1;
    out[c].logits.assign(host.begin() + at * V, host.begin() + (at + rows_c) * V);
    at += rows_c;
  }
}

}  // namespace mor
