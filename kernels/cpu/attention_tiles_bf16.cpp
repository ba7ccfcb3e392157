// Causal attention with bf16 products (AttnShape::bf16, --train.precision bf16), on a CPU built
// with AVX512-BF16: the same flash-style structure as attention_tiles.cpp, but every product takes
// its operands rounded to bf16 and runs on vdpbf16ps (fp32 sums; tile_product.h's BF16Pair), at
// twice the fp32 FMA rate. Softmax, the log-sum-exp, rowdot(do, o) and every output stay fp32.
//
// vdpbf16ps multiplies pairs of adjacent bf16 values, so each operand is packed with the two
// elements of a pair along the summed dimension in one 32-bit word:
//   scores = q k^T, dp = do v^T  sum over head dims: q and do rows as they are (cast), keys and
//                                values transposed into [d/2][key] words (once per call)
//   o = p v, dq = ds k           sum over keys: p and ds rows (cast), values and keys in
//                                [key/2][d] words (once per call)
//   dv += p^T do, dk += ds^T q   sum over queries: p, ds, do and q in [query/2][key or d] words
//                                (per block)
// A missing partner (an odd count) is a zero. Deterministic like the fp32 path: fixed-order sums
// per output element, per-head dk/dv reduced in head order.
#include "kernels/cpu/attention_tiles.h"
#include "kernels/cpu/tile_product.h"

namespace mor::kern::detail {

#if !defined(__AVX512BF16__)
bool tiles_bf16_supported(int) { return false; }
void attention_forward_tiles_bf16(float*, float*, const float*, const float*, const float*, const int*, const int*,
                                  const AttnShape&) {}
void attention_backward_tiles_bf16(float*, float*, float*, const float*, const float*, const float*, const float*,
                                   const float*, const float*, const int*, const int*, const AttnShape&) {}
#else
bool tiles_bf16_supported(int head_dim) { return head_dim > 0 && head_dim % 16 == 0; }

namespace {

using tiles::BF16Pair;
using tiles::product;

using Word = uint32_t;  // two bf16 values, the first in the low half

inline Word pack(float first, float second) {
  return (Word)float_to_bf16(first).bits | (Word)float_to_bf16(second).bits << 16;
}

// Per-thread packed operands that live across calls (as thread_buffer): slots 0 p / ds rows,
// 1 p^T / ds^T, 2 do / q pairs (each thread's own); 3-6 the call's shared k, v packs and casts.
std::vector<Word>& words(int slot, size_t n) {
  static thread_local std::vector<Word> bufs[8];
  if (bufs[slot].size() < n) bufs[slot].resize(n);
  return bufs[slot];
}

// Rows of x[n][ld] (first `cols` of each, cols even) as words: out[i][c/2].
void cast_rows(Word* out, const float* x, int n, int64_t ld, int cols) {
#pragma omp for schedule(static)
  for (int i = 0; i < n; ++i)
    for (int c = 0; c < cols / 2; ++c)
      out[(int64_t)i * (cols / 2) + c] = pack(x[i * ld + 2 * c], x[i * ld + 2 * c + 1]);
}

// xt[g][d/2][j] = (x[j][g][d], x[j][g][d+1]) for j < nk, zeros up to nkp: pairs of head dims as columns.
void transpose_dim_pairs(Word* xt, const float* x, int nk, int nkp, int Hkv, int hd) {
#pragma omp for schedule(static)
  for (int gd = 0; gd < Hkv * hd / 2; ++gd) {
    Word* row = xt + (int64_t)gd * nkp;
    const float* col = x + 2 * gd;  // x[j][g][2 dp] at j * Hkv * hd + g * hd + 2 dp = 2 gd
    for (int j = 0; j < nk; ++j) row[j] = pack(col[(int64_t)j * Hkv * hd], col[(int64_t)j * Hkv * hd + 1]);
    std::fill(row + nk, row + nkp, Word{0});
  }
}

// xp[g][j/2][d] = (x[j][g][d], x[j+1][g][d]) for pairs of keys j < nkp (zeros past nk).
void pair_keys(Word* xp, const float* x, int nk, int nkp, int Hkv, int hd) {
  const int np = nkp / 2;
  const int64_t ld = (int64_t)Hkv * hd;
#pragma omp for schedule(static)
  for (int gp = 0; gp < Hkv * np; ++gp) {
    const int g = gp / np, jp = gp % np, j = 2 * jp;
    Word* row = xp + (int64_t)gp * hd;
    const float* a = x + j * ld + (int64_t)g * hd;
    for (int d = 0; d < hd; ++d) row[d] = pack(j < nk ? a[d] : 0.f, j + 1 < nk ? a[ld + d] : 0.f);
  }
}

// out[i/2][d] = (y[i][d], y[i+1][d]) for the m rows of y (stride ld): pairs of queries.
void pair_rows(Word* out, const float* y, int m, int64_t ld, int hd) {
  for (int ip = 0; ip < (m + 1) / 2; ++ip) {
    const float* a = y + 2 * ip * ld;
    const bool second = 2 * ip + 1 < m;
    for (int d = 0; d < hd; ++d) out[ip * hd + d] = pack(a[d], second ? a[ld + d] : 0.f);
  }
}

// pt[i/2][j] = (P[i][j], P[i+1][j]) for keys j < kn, the m rows of P (stride ldp): pairs of
// queries, each a row over the keys (read transposed by the product: contiguous both ways here).
void pair_query_rows(Word* pt, const float* P, int m, int64_t ldp, int kn) {
  for (int ip = 0; ip < (m + 1) / 2; ++ip) {
    const float* a = P + 2 * ip * ldp;
    const float* b = 2 * ip + 1 < m ? a + ldp : nullptr;
    Word* out = pt + (int64_t)ip * kn;
    if (b)
      for (int j = 0; j < kn; ++j) out[j] = pack(a[j], b[j]);
    else
      for (int j = 0; j < kn; ++j) out[j] = pack(a[j], 0.f);
  }
}

// dx rows [0, filled) += a^T y, rows [filled, kn) = a^T y (as attention_tiles.cpp's add_transposed),
// with a as query pairs over the keys (pair_query_rows, rows of kn) and y as query pairs; kfrom in
// query pairs.
void add_transposed_pairs(float* dx, int filled, int kn, int hd, const Word* a, int m2, const Word* y,
                          const int* kfrom) {
  product<BF16Pair, 8, 2>(filled, hd, m2, {a, 1, kn, y, hd, dx, hd}, true, {.kfrom = kfrom});
  product<BF16Pair, 8, 2>(kn - filled, hd, m2, {a + filled, 1, kn, y, hd, dx + (int64_t)filled * hd, hd}, false,
                          {.kfrom = kfrom + filled});
}

// Bounds of a block in pairs: kcap2[i] = ceil(vis[i] / 2) keys pairs per query row,
// first2[j] = first_q[j] / 2 query pairs before any that sees key j.
void pair_bounds(std::vector<int>& kcap2, const int* vis, int m) {
  kcap2.resize(m);
  for (int i = 0; i < m; ++i) kcap2[i] = (vis[i] + 1) / 2;
}
void halve(std::vector<int>& v) {
  for (int& x : v) x /= 2;
}

// out[i][c/2] = (P[i][c], P[i][c+1]) for the m rows of P[m][cols] (one thread's block).
void cast_block(Word* out, const float* P, int m, int cols) {
  for (int64_t e = 0; e < (int64_t)m * cols / 2; ++e) out[e] = pack(P[2 * e], P[2 * e + 1]);
}

}  // namespace

void attention_forward_tiles_bf16(float* o, float* lse, const float* q, const float* k, const float* v, const int* qpos,
                                  const int* kpos, const AttnShape& s) {
  const Setup setup(s, qpos, kpos);
  [[maybe_unused]] const int nq = setup.nq, nk = setup.nk, H = setup.H, Hkv = setup.Hkv, hd = setup.hd,
                             group = setup.group, nblk = setup.nblk, nkp = setup.nkp, hd2 = hd / 2;
  const int64_t ldq = setup.ldq, ldq2 = ldq / 2;
  const float scale = setup.scale;
  const std::vector<int>& vis = setup.vis;
  Word* q16 = words(3, (size_t)nq * ldq2).data();
  Word* kt = words(4, (size_t)Hkv * hd2 * nkp).data();
  Word* v2 = words(5, (size_t)Hkv * (nkp / 2) * hd).data();
#pragma omp parallel
  {
    cast_rows(q16, q, nq, ldq, (int)ldq);
    transpose_dim_pairs(kt, k, nk, nkp, Hkv, hd);
    pair_keys(v2, v, nk, nkp, Hkv, hd);  // ends in a barrier
    float* P = thread_buffer(0, (size_t)kQB * nkp).data();
    Word* p16 = words(0, (size_t)kQB * nkp / 2).data();
    std::vector<int> kcap2;
#pragma omp for schedule(dynamic, 1)
    for (int task = 0; task < H * nblk; ++task) {
      const int h = task / nblk, i0 = (task % nblk) * kQB, i1 = std::min(nq, i0 + kQB), m = i1 - i0, g = h / group;
      const int kn = vis[i1 - 1], kn32 = round_up(kn, 32);
      float* oh = o + i0 * ldq + (int64_t)h * hd;
      if (kn == 0) {
        for (int i = 0; i < m; ++i) {
          std::fill(oh + i * ldq, oh + i * ldq + hd, 0.f);
          lse[(int64_t)h * nq + i0 + i] = -INFINITY;
        }
        continue;
      }
      product<BF16Pair, 8, 2>(m, kn32, hd2,
                              {q16 + i0 * ldq2 + (int64_t)h * hd2, ldq2, 1, kt + (int64_t)g * hd2 * nkp, nkp, P, kn32},
                              false, {.ncap = &vis[i0]});  // scores = q k^T
      softmax_rows(P, lse + (int64_t)h * nq + i0, m, kn32, kn32, &vis[i0], scale);
      cast_block(p16, P, m, kn32);
      pair_bounds(kcap2, &vis[i0], m);
      product<BF16Pair, 8, 2>(m, hd, (kn + 1) / 2, {p16, kn32 / 2, 1, v2 + (int64_t)g * (nkp / 2) * hd, hd, oh, ldq},
                              false, {.kcap = kcap2.data()});  // o = p v
    }
  }
}

// As attention_backward_tiles (attention_tiles.cpp), with bf16 products.
void attention_backward_tiles_bf16(float* dq, float* dk, float* dv, const float* dout, const float* o, const float* lse,
                                   const float* q, const float* k, const float* v, const int* qpos, const int* kpos,
                                   const AttnShape& s) {
  const Setup setup(s, qpos, kpos);
  [[maybe_unused]] const int nq = setup.nq, nk = setup.nk, H = setup.H, Hkv = setup.Hkv, hd = setup.hd,
                             group = setup.group, nblk = setup.nblk, nkp = setup.nkp, hd2 = hd / 2;
  const int64_t ldq = setup.ldq, ldq2 = ldq / 2;
  const float scale = setup.scale;
  const std::vector<int>& vis = setup.vis;
  const int split = balanced_split(setup), parts = 2;
  float* dk_t = thread_buffer(2, (size_t)parts * H * nk * hd).data();
  float* dv_t = thread_buffer(3, (size_t)parts * H * nk * hd).data();
  Word* q16 = words(3, (size_t)nq * ldq2).data();
  Word* do16 = words(4, (size_t)nq * ldq2).data();
  Word* kt = words(5, (size_t)Hkv * hd2 * nkp).data();
  Word* vt = words(6, (size_t)Hkv * hd2 * nkp).data();
  Word* k2 = words(7, (size_t)Hkv * (nkp / 2) * hd).data();
  std::vector<int> filled(parts * H, 0);
#pragma omp parallel
  {
    cast_rows(q16, q, nq, ldq, (int)ldq);
    cast_rows(do16, dout, nq, ldq, (int)ldq);
    transpose_dim_pairs(kt, k, nk, nkp, Hkv, hd);
    transpose_dim_pairs(vt, v, nk, nkp, Hkv, hd);
    pair_keys(k2, k, nk, nkp, Hkv, hd);  // ends in a barrier
    float* P = thread_buffer(0, (size_t)kQB * nkp).data();
    float* dP = thread_buffer(1, (size_t)kQB * nkp).data();
    Word* rows16 = words(0, (size_t)kQB * nkp / 2).data();    // ds rows
    Word* cols16 = words(1, (size_t)nkp * (kQB / 2)).data();  // p, then ds, in query pairs over the keys
    Word* pairs16 = words(2, (size_t)(kQB / 2) * hd).data();  // do, then q, in query pairs
    std::vector<int> first_q, kcap2;
#pragma omp for schedule(dynamic, 1)
    for (int t = 0; t < parts * H; ++t) {
      const int h = t / parts, part = t % parts, g = h / group;
      float* dkh = dk_t + (int64_t)t * nk * hd;
      float* dvh = dv_t + (int64_t)t * nk * hd;
      int& done = filled[t];
      for (int b = part ? split : 0; b < (part ? nblk : split); ++b) {  // in order: a fixed summation order
        const int i0 = b * kQB, i1 = std::min(nq, i0 + kQB), m = i1 - i0, kn = vis[i1 - 1], kn32 = round_up(kn, 32);
        const int m2 = (m + 1) / 2;
        const int64_t qoff = i0 * ldq + (int64_t)h * hd, qoff2 = i0 * ldq2 + (int64_t)h * hd2;
        float* dqh = dq + qoff;
        if (kn == 0) {
          for (int i = 0; i < m; ++i) std::fill(dqh + i * ldq, dqh + i * ldq + hd, 0.f);
          continue;
        }
        product<BF16Pair, 8, 2>(m, kn32, hd2, {q16 + qoff2, ldq2, 1, kt + (int64_t)g * hd2 * nkp, nkp, P, kn32}, false,
                                {.ncap = &vis[i0]});  // scores, as in forward
        recompute_p(P, lse + (int64_t)h * nq + i0, m, kn32, kn32, &vis[i0], scale);
        first_queries(first_q, &vis[i0], m, kn);
        halve(first_q);
        pair_bounds(kcap2, &vis[i0], m);
        pair_query_rows(cols16, P, m, kn32, kn);
        pair_rows(pairs16, dout + qoff, m, ldq, hd);
        add_transposed_pairs(dvh, done, kn, hd, cols16, m2, pairs16, first_q.data());  // dv += p^T do
        product<BF16Pair, 8, 2>(m, kn32, hd2, {do16 + qoff2, ldq2, 1, vt + (int64_t)g * hd2 * nkp, nkp, dP, kn32},
                                false, {.ncap = &vis[i0]});  // dp = do v^T
        ds_rows(P, dP, dout + qoff, o + qoff, ldq, m, kn32, &vis[i0], hd, scale);
        cast_block(rows16, P, m, kn32);
        product<BF16Pair, 8, 2>(m, hd, (kn + 1) / 2,
                                {rows16, kn32 / 2, 1, k2 + (int64_t)g * (nkp / 2) * hd, hd, dqh, ldq}, false,
                                {.kcap = kcap2.data()});  // dq = ds k
        pair_query_rows(cols16, P, m, kn32, kn);
        pair_rows(pairs16, q + qoff, m, ldq, hd);
        add_transposed_pairs(dkh, done, kn, hd, cols16, m2, pairs16, first_q.data());  // dk += ds^T q
        done = kn;
      }
    }
    sum_head_parts(dk, dv, dk_t, dv_t, filled.data(), parts, setup);
  }
}
#endif  // __AVX512BF16__

}  // namespace mor::kern::detail
