// Causal attention on AVX-512 register tiles, for head_dim a multiple of 16 (64 in every
// SmolLM shape). Same contract and the same flash-style structure as attention.cpp.
//
// The products run on the register tiles of kernels/cpu/tile_product.h (fp32 here; with
// bf16 operands in attention_tiles_bf16.cpp). Keys and values are transposed once per call for
// the two products that need them as columns (scores q k^T and do v^T).
//
// Determinism: every output element is one tile's fixed-order sum over k, and per-head dk/dv are
// reduced in head order, so the bits do not depend on the thread count.
#include "kernels/cpu/attention_tiles.h"

#include <algorithm>
#include <cmath>

#include "kernels/cpu/tile_product.h"
#include "kernels/cpu/vec_math.h"

namespace mor::kern::detail {

#if !defined(__AVX512F__)
bool tiles_supported(int) { return false; }
void attention_forward_tiles(float*, float*, const float*, const float*, const float*, const int*, const int*,
                             const AttnShape&) {}
void attention_backward_tiles(float*, float*, float*, const float*, const float*, const float*, const float*,
                              const float*, const float*, const int*, const int*, const AttnShape&) {}
#else
bool tiles_supported(int head_dim) { return head_dim > 0 && head_dim % 16 == 0; }

namespace {

using tiles::F32;
using tiles::product;

// Scores S[m x n32] = a b^T for a rows (stride lda) against the transposed keys (or values) bt;
// row i only up to the 32-column panel holding its last visible key (vis[i]).
void scores(float* S, int m, int n32, int hd, const float* a, int64_t lda, const float* bt, int64_t nkp,
            const int* vis) {
  product<F32, 8, 2>(m, n32, hd, {a, lda, 1, bt, nkp, S, n32}, false, {.ncap = vis});
}

// xt[g][d][j] = x[j][g][d] for j < nk, zero up to nkp: the key (or value) vectors as columns.
void transpose_kv(float* xt, const float* x, int nk, int nkp, int Hkv, int hd) {
#pragma omp for schedule(static)
  for (int gd = 0; gd < Hkv * hd; ++gd) {
    float* row = xt + (int64_t)gd * nkp;
    const float* col = x + gd;  // x[j][g][d] at j * Hkv * hd + g * hd + d
    for (int j = 0; j < nk; ++j) row[j] = col[(int64_t)j * Hkv * hd];
    std::fill(row + nk, row + nkp, 0.f);
  }
}

// dx rows [0, filled) += a^T y, rows [filled, kn) = a^T y: a part's dk/dv rows are written by the
// first query block that sees them (keys only ever join as blocks advance), so nothing is zeroed.
// first_q[j]: the first of the m rows of a (queries) that sees key j; earlier rows are zero there.
void add_transposed(float* dx, int filled, int kn, int hd, const float* a, int64_t lda, int m, const float* y,
                    int64_t ldy, const int* first_q) {
  product<F32, 8, 2>(filled, hd, m, {a, 1, lda, y, ldy, dx, hd}, true, {.kfrom = first_q});
  product<F32, 8, 2>(kn - filled, hd, m, {a + filled, 1, lda, y, ldy, dx + (int64_t)filled * hd, hd}, false,
                     {.kfrom = first_q + filled});
}

}  // namespace

void attention_forward_tiles(float* o, float* lse, const float* q, const float* k, const float* v, const int* qpos,
                             const int* kpos, const AttnShape& s) {
  const Setup setup(s, qpos, kpos);
  // Plain locals, not a structured binding: OpenMP regions cannot capture those (clang rejects it).
  [[maybe_unused]] const int nq = setup.nq, nk = setup.nk, H = setup.H, Hkv = setup.Hkv, hd = setup.hd,
                             group = setup.group, nblk = setup.nblk, nkp = setup.nkp;
  const int64_t ldq = setup.ldq, ldkv = setup.ldkv;
  const float scale = setup.scale;
  const std::vector<int>& vis = setup.vis;
  float* kt = thread_buffer(4, (size_t)Hkv * hd * nkp).data();
#pragma omp parallel
  {
    transpose_kv(kt, k, nk, nkp, Hkv, hd);  // ends in a barrier
    float* P = thread_buffer(0, (size_t)kQB * nkp).data();
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
      const float* qh = q + i0 * ldq + (int64_t)h * hd;
      scores(P, m, kn32, hd, qh, ldq, kt + (int64_t)g * hd * nkp, nkp, &vis[i0]);
      softmax_rows(P, lse + (int64_t)h * nq + i0, m, kn, kn32, &vis[i0], scale);
      product<F32, 8, 2>(m, hd, kn, {P, kn32, 1, v + (int64_t)g * hd, ldkv, oh, ldq}, false,
                         {.kcap = &vis[i0]});  // o = p v
    }
  }
}

// ~90 lines on purpose: the backward's register-tile schedule (per-head task split, dS/dQ/dK/dV
// tiles) reads best in one piece; its parts share a dozen loop-carried values.
void attention_backward_tiles(float* dq, float* dk, float* dv, const float* dout, const float* o, const float* lse,
                              const float* q, const float* k, const float* v, const int* qpos, const int* kpos,
                              const AttnShape& s) {
  const Setup setup(s, qpos, kpos);
  // Plain locals, not a structured binding: OpenMP regions cannot capture those (clang rejects it).
  [[maybe_unused]] const int nq = setup.nq, nk = setup.nk, H = setup.H, Hkv = setup.Hkv, hd = setup.hd,
                             group = setup.group, nblk = setup.nblk, nkp = setup.nkp;
  const int64_t ldq = setup.ldq, ldkv = setup.ldkv;
  const float scale = setup.scale;
  const std::vector<int>& vis = setup.vis;
  const int split = balanced_split(setup);
  const int parts = 2;
  // dk/dv per (head, part) over the first filled[t] keys, summed per kv group afterwards in
  // (head, part) order: no races, and the same bits whatever the thread count.
  float* dk_t = thread_buffer(2, (size_t)parts * H * nk * hd).data();
  float* dv_t = thread_buffer(3, (size_t)parts * H * nk * hd).data();
  float* kt = thread_buffer(4, (size_t)Hkv * hd * nkp).data();
  float* vt = thread_buffer(5, (size_t)Hkv * hd * nkp).data();
  std::vector<int> filled(parts * H, 0);
#pragma omp parallel
  {
    transpose_kv(kt, k, nk, nkp, Hkv, hd);
    transpose_kv(vt, v, nk, nkp, Hkv, hd);
    float* P = thread_buffer(0, (size_t)kQB * nkp).data();
    float* dP = thread_buffer(1, (size_t)kQB * nkp).data();
    std::vector<int> first_q;
#pragma omp for schedule(dynamic, 1)
    for (int t = 0; t < parts * H; ++t) {
      const int h = t / parts, part = t % parts, g = h / group;
      const float* kg = k + (int64_t)g * hd;
      float* dkh = dk_t + (int64_t)t * nk * hd;
      float* dvh = dv_t + (int64_t)t * nk * hd;
      int& done = filled[t];
      for (int b = part ? split : 0; b < (part ? nblk : split); ++b) {  // in order: a fixed summation order
        const int i0 = b * kQB, i1 = std::min(nq, i0 + kQB), m = i1 - i0, kn = vis[i1 - 1], kn32 = round_up(kn, 32);
        const float* qh = q + i0 * ldq + (int64_t)h * hd;
        const float* doh = dout + i0 * ldq + (int64_t)h * hd;
        const float* oh = o + i0 * ldq + (int64_t)h * hd;
        float* dqh = dq + i0 * ldq + (int64_t)h * hd;
        if (kn == 0) {
          for (int i = 0; i < m; ++i) std::fill(dqh + i * ldq, dqh + i * ldq + hd, 0.f);
          continue;
        }
        // p recomputed from the saved log-sum-exp; zero past each query's visible prefix
        scores(P, m, kn32, hd, qh, ldq, kt + (int64_t)g * hd * nkp, nkp, &vis[i0]);
        first_queries(first_q, &vis[i0], m, kn);
        recompute_p(P, lse + (int64_t)h * nq + i0, m, kn, kn32, &vis[i0], scale);
        add_transposed(dvh, done, kn, hd, P, kn32, m, doh, ldq, first_q.data());       // dv += p^T do
        scores(dP, m, kn32, hd, doh, ldq, vt + (int64_t)g * hd * nkp, nkp, &vis[i0]);  // dp = do v^T
        ds_rows(P, dP, doh, oh, ldq, m, kn32, &vis[i0], hd, scale);  // ds = p * (dp - rowdot(do, o)) * scale
        product<F32, 8, 2>(m, hd, kn, {P, kn32, 1, kg, ldkv, dqh, ldq}, false, {.kcap = &vis[i0]});  // dq = ds k
        add_transposed(dkh, done, kn, hd, P, kn32, m, qh, ldq, first_q.data());                      // dk += ds^T q
        done = kn;
      }
    }
    sum_head_parts(dk, dv, dk_t, dv_t, filled.data(), parts, setup);
  }
}
#endif  // __AVX512F__

}  // namespace mor::kern::detail
