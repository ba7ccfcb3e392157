// Causal attention on AVX-512 register tiles, for head_dim a multiple of 16 (64 in every
// SmolLM shape). Same contract and the same flash-style structure as attention.cpp.
//
// Why not BLAS here: per (head, 64-query block) attention is a handful of products that each have
// a side of 64 (q k^T and p v forward; p^T do, do v^T, ds k, ds^T q backward). OpenBLAS packs both
// operands of every call and falls back to its small-matrix kernels: 35-45 % of the FMA peak, and
// attention took 13 % of a 135M training step. Here each product is a loop over register tiles of
// the output (8 x 32 or 4 x 64 floats: 16 zmm accumulators) that reads its operands in place: no
// packing. Keys and values are transposed once per call for the two products that need them as
// columns (scores q k^T and do v^T).
//
// Determinism: every output element is one tile's fixed-order sum over k, and per-head dk/dv are
// reduced in head order, so the bits do not depend on the thread count.
#include "kernels/cpu/attention_tiles.h"

#include <algorithm>
#include <cmath>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

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

// C = a B over K, with a read in place: a(r, k) = A[r * rs + k * cs] (rs = 1, cs = row length
// reads a stored matrix transposed). B row k holds the output columns at B + k * ldb.
struct Product {
  const float* A;
  int64_t rs, cs;
  const float* B;
  int64_t ldb;
  float* C;
  int64_t ldc;
};

// C[r][0, 16 NV) (+)= sum over k < K of a(r, k) B[k][0, 16 NV), for r < MR. acc: add to C, else write.
template <int MR, int NV>
void tile(const Product& p, int K, bool acc) {
  __m512 c[MR][NV];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) c[r][v] = acc ? _mm512_loadu_ps(p.C + r * p.ldc + 16 * v) : _mm512_setzero_ps();
  const float* a = p.A;
  const float* b = p.B;
  for (int k = 0; k < K; ++k, a += p.cs, b += p.ldb) {
    __m512 bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      bv[v] = _mm512_loadu_ps(b + 16 * v);
      // Keep b in a register: GCC otherwise folds the load into each row's FMA, and those
      // memory-operand FMAs ran at 40 % of the register form here (load-port bound).
      asm("" : "+v"(bv[v]));
    }
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      const __m512 av = _mm512_set1_ps(a[r * p.rs]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) c[r][v] = _mm512_fmadd_ps(av, bv[v], c[r][v]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) _mm512_storeu_ps(p.C + r * p.ldc + 16 * v, c[r][v]);
}

// The edge tiles: mr <= MR rows, nv <= NV vectors, each its own compiled tile.
template <int MR, int NV>
void tile_edge(int mr, int nv, const Product& p, int K, bool acc) {
  if constexpr (MR > 1)
    if (mr < MR) return tile_edge<MR - 1, NV>(mr, nv, p, K, acc);
  if constexpr (NV > 1)
    if (nv < NV) return tile_edge<MR, NV - 1>(mr, nv, p, K, acc);
  tile<MR, NV>(p, K, acc);
}

// Causal trimming for product(), per tile of rows (row bounds are non-decreasing down the rows,
// as visible counts are). Only zeros are skipped, so the sums keep their bits.
//   ncap[r]: row r needs output columns < ncap[r] only (scores past a query's last visible key
//            are never read: softmax fills them with zeros)
//   kcap[r]: a(r, k) = 0 for k >= kcap[r] (p and ds rows are zero past the visible keys)
//   kfrom[r]: a(r, k) = 0 for k < kfrom[r] (rows of p^T / ds^T: queries before the first one
//            that sees key r)
struct Trim {
  const int* ncap = nullptr;
  const int* kcap = nullptr;
  const int* kfrom = nullptr;
};

// C[M x N] (+)= a B over K, N a multiple of 16: column panels of 16 NV outside (the panel of B
// stays in L1), tiles of MR rows inside. 8 x 32 tiles measured fastest here (~92 % of the FMA
// peak on one core; 4 x 64 and 8 x 48 tiles: 65-75 %).
template <int MR, int NV>
void product(int M, int N, int K, const Product& p, bool acc, const Trim& trim = {}) {
  for (int n0 = 0; n0 < N; n0 += 16 * NV) {
    const int nv = std::min(NV, (N - n0) / 16);
    for (int m0 = 0; m0 < M; m0 += MR) {
      const int mr = std::min(MR, M - m0), last = m0 + mr - 1;
      if (trim.ncap && n0 >= trim.ncap[last]) continue;
      const int k0 = trim.kfrom ? std::min(K, trim.kfrom[m0]) : 0;
      const int k1 = trim.kcap ? std::min(K, trim.kcap[last]) : K;
      const Product t{p.A + m0 * p.rs + k0 * p.cs, p.rs, p.cs, p.B + n0 + k0 * p.ldb, p.ldb,
                      p.C + m0 * p.ldc + n0,       p.ldc};
      tile_edge<MR, NV>(mr, nv, t, std::max(0, k1 - k0), acc);
    }
  }
}

// Scores S[m x n32] = a b^T for a rows (stride lda) against the transposed keys (or values) bt;
// row i only up to the 32-column panel holding its last visible key (vis[i]).
void scores(float* S, int m, int n32, int hd, const float* a, int64_t lda, const float* bt, int64_t nkp,
            const int* vis) {
  product<8, 2>(m, n32, hd, {a, lda, 1, bt, nkp, S, n32}, false, {.ncap = vis});
}

int round_up(int n, int to) { return (n + to - 1) / to * to; }

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
  product<8, 2>(filled, hd, m, {a, 1, lda, y, ldy, dx, hd}, true, {.kfrom = first_q});
  product<8, 2>(kn - filled, hd, m, {a + filled, 1, lda, y, ldy, dx + (int64_t)filled * hd, hd}, false,
                {.kfrom = first_q + filled});
}

// first[j] for keys j < kn: the first of queries [0, m) whose visible count (vis, non-decreasing)
// exceeds j.
void first_queries(std::vector<int>& first, const int* vis, int m, int kn) {
  first.resize(kn);
  int i = 0;
  for (int j = 0; j < kn; ++j) {
    while (i < m && vis[i] <= j) ++i;
    first[j] = i;
  }
}

// What both directions derive from the shape: strides of q/o (ldq) and k/v (ldkv), key count
// padded for the 32-wide score tiles (nkp), and each query's number of visible keys.
struct Setup {
  int nq, nk, H, Hkv, hd, group, nblk, nkp;
  int64_t ldq, ldkv;
  float scale;
  std::vector<int> vis;
  Setup(const AttnShape& s, const int* qpos, const int* kpos)
      : nq(s.nq), nk(s.nk), H(s.n_heads), Hkv(s.n_kv_heads), hd(s.head_dim), group(H / Hkv), nblk((nq + kQB - 1) / kQB),
        nkp(round_up(std::max(nk, 1), 32)), ldq((int64_t)H * hd), ldkv((int64_t)Hkv * hd),
        scale(1.f / std::sqrt((float)hd)), vis(visible_counts(qpos, kpos, nq, nk)) {}
};

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
      for (int i = 0; i < m; ++i) {  // softmax over the visible prefix; zeros up to kn
        float* p = P + (int64_t)i * kn32;
        const int n = vis[i0 + i];
        const float mx = max_row(p, n);
#pragma omp simd
        for (int j = 0; j < n; ++j) p[j] = fast_exp((p[j] - mx) * scale);
        const float sum = sum_row(p, n);
        const float inv = n > 0 ? 1.f / sum : 0.f;
#pragma omp simd
        for (int j = 0; j < n; ++j) p[j] *= inv;
        std::fill(p + n, p + kn, 0.f);
        lse[(int64_t)h * nq + i0 + i] = n > 0 ? mx * scale + std::log(sum) : -INFINITY;
      }
      product<8, 2>(m, hd, kn, {P, kn32, 1, v + (int64_t)g * hd, ldkv, oh, ldq}, false, {.kcap = &vis[i0]});  // o = p v
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
  // Each head's query blocks in two parts of about equal work (a causal block's work grows with
  // the keys it sees): 2H tasks, so two threads are not left with 5 heads against 4.
  int split = nblk;
  {
    double total = 0, acc = 0;
    for (int b = 0; b < nblk; ++b) total += (double)vis[std::min(nq, (b + 1) * kQB) - 1];
    for (split = 0; split < nblk && acc < total / 2; ++split) acc += vis[std::min(nq, (split + 1) * kQB) - 1];
  }
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
        for (int i = 0; i < m; ++i) {
          float* p = P + (int64_t)i * kn32;
          const float l = lse[(int64_t)h * nq + i0 + i];
          const int n = vis[i0 + i];
#pragma omp simd
          for (int j = 0; j < n; ++j) p[j] = fast_exp(p[j] * scale - l);
          std::fill(p + n, p + kn, 0.f);
        }
        add_transposed(dvh, done, kn, hd, P, kn32, m, doh, ldq, first_q.data());       // dv += p^T do
        scores(dP, m, kn32, hd, doh, ldq, vt + (int64_t)g * hd * nkp, nkp, &vis[i0]);  // dp = do v^T
        for (int i = 0; i < m; ++i) {  // ds = p * (dp - rowdot(do, o)) * scale
          const float* di = doh + i * ldq;
          const float* oi = oh + i * ldq;
          float D = 0.f;
#pragma omp simd reduction(+ : D)
          for (int c = 0; c < hd; ++c) D += di[c] * oi[c];
          float* p = P + (int64_t)i * kn32;
          const float* dp = dP + (int64_t)i * kn32;
          const int n = vis[i0 + i];
#pragma omp simd
          for (int j = 0; j < n; ++j) p[j] = p[j] * (dp[j] - D) * scale;
        }
        product<8, 2>(m, hd, kn, {P, kn32, 1, kg, ldkv, dqh, ldq}, false, {.kcap = &vis[i0]});  // dq = ds k
        add_transposed(dkh, done, kn, hd, P, kn32, m, qh, ldq, first_q.data());                 // dk += ds^T q
        done = kn;
      }
    }
#pragma omp for schedule(static)
    for (int j = 0; j < nk; ++j)
      for (int g = 0; g < Hkv; ++g) {
        float* dkj = dk + ((int64_t)j * Hkv + g) * hd;
        float* dvj = dv + ((int64_t)j * Hkv + g) * hd;
        for (int t = g * group * parts; t < (g + 1) * group * parts; ++t) {
          if (j >= filled[t]) continue;
          const float* a = dk_t + ((int64_t)t * nk + j) * hd;
          const float* b = dv_t + ((int64_t)t * nk + j) * hd;
#pragma omp simd
          for (int c = 0; c < hd; ++c) {
            dkj[c] += a[c];
            dvj[c] += b[c];
          }
        }
      }
  }
}
#endif  // __AVX512F__

}  // namespace mor::kern::detail
