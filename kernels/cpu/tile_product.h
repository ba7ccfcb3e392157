// Internal to kernels/cpu (attention_tiles.cpp, attention_tiles_bf16.cpp): the small dense products
// of causal attention on AVX-512 register tiles, with operands read in place (no packing).
//
// Why not BLAS here: per (head, 64-query block) attention is a handful of products that each have
// a side of 64 (q k^T and p v forward; p^T do, do v^T, ds k, ds^T q backward). OpenBLAS packs both
// operands of every call and falls back to its small-matrix kernels: 35-45 % of the FMA peak, and
// attention took 13 % of a 135M training step. Here each product is a loop over register tiles of
// the output (8 x 32 floats: 16 zmm accumulators).
//
// The k dimension comes in two element kinds (Op): F32, one fp32 FMA per k; and BF16Pair (built
// with AVX512-BF16), a 32-bit word holding the bf16 values of k and k + 1, multiplied by
// vdpbf16ps: two products per lane per instruction, summed in fp32. Pair operands are packed by
// the caller so that both elements of a pair are adjacent (attention_tiles_bf16.cpp).
#pragma once

#if defined(__AVX512F__)
#include <immintrin.h>

#include <algorithm>
#include <cstdint>

namespace mor::kern::detail::tiles {

struct F32 {
  using T = float;
  static __m512 bcast(const float* a) { return _mm512_set1_ps(*a); }
  static __m512 load(const float* b) { return _mm512_loadu_ps(b); }
  static __m512 madd(__m512 c, __m512 a, __m512 b) { return _mm512_fmadd_ps(a, b, c); }
};

#if defined(__AVX512BF16__)
struct BF16Pair {
  using T = uint32_t;
  static __m512 bcast(const uint32_t* a) { return _mm512_castsi512_ps(_mm512_set1_epi32((int)*a)); }
  static __m512 load(const uint32_t* b) { return _mm512_castsi512_ps(_mm512_loadu_si512(b)); }
  static __m512 madd(__m512 c, __m512 a, __m512 b) { return _mm512_dpbf16_ps(c, (__m512bh)a, (__m512bh)b); }
};
#endif

// C = a B over K (in elements of Op::T), a read in place: a(r, k) = A[r * rs + k * cs] (rs = 1,
// cs = row length reads a stored matrix transposed). B row k holds the output columns at B + k * ldb.
template <class Op>
struct Product {
  const typename Op::T* A;
  int64_t rs, cs;
  const typename Op::T* B;
  int64_t ldb;
  float* C;
  int64_t ldc;
};

// C[r][0, 16 NV) (+)= sum over k < K of a(r, k) B[k][0, 16 NV), for r < MR. acc: add to C, else write.
template <class Op, int MR, int NV>
void tile(const Product<Op>& p, int K, bool acc) {
  __m512 c[MR][NV];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) c[r][v] = acc ? _mm512_loadu_ps(p.C + r * p.ldc + 16 * v) : _mm512_setzero_ps();
  const typename Op::T* a = p.A;
  const typename Op::T* b = p.B;
  for (int k = 0; k < K; ++k, a += p.cs, b += p.ldb) {
    __m512 bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      bv[v] = Op::load(b + 16 * v);
      // Keep b in a register: GCC otherwise folds the load into each row's FMA, and those
      // memory-operand FMAs ran at 40 % of the register form here (load-port bound).
      asm("" : "+v"(bv[v]));
    }
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      const __m512 av = Op::bcast(a + r * p.rs);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) c[r][v] = Op::madd(c[r][v], av, bv[v]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) _mm512_storeu_ps(p.C + r * p.ldc + 16 * v, c[r][v]);
}

// The edge tiles: mr <= MR rows, nv <= NV vectors, each its own compiled tile.
template <class Op, int MR, int NV>
void tile_edge(int mr, int nv, const Product<Op>& p, int K, bool acc) {
  if constexpr (MR > 1)
    if (mr < MR) return tile_edge<Op, MR - 1, NV>(mr, nv, p, K, acc);
  if constexpr (NV > 1)
    if (nv < NV) return tile_edge<Op, MR, NV - 1>(mr, nv, p, K, acc);
  tile<Op, MR, NV>(p, K, acc);
}

// Causal trimming for product(), per tile of rows (row bounds are non-decreasing down the rows,
// as visible counts are). Only zeros are skipped, so the sums keep their bits. k bounds are in
// elements of Op::T (pairs for BF16Pair).
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
template <class Op, int MR, int NV>
void product(int M, int N, int K, const Product<Op>& p, bool acc, const Trim& trim = {}) {
  for (int n0 = 0; n0 < N; n0 += 16 * NV) {
    const int nv = std::min(NV, (N - n0) / 16);
    for (int m0 = 0; m0 < M; m0 += MR) {
      const int mr = std::min(MR, M - m0), last = m0 + mr - 1;
      if (trim.ncap && n0 >= trim.ncap[last]) continue;
      const int k0 = trim.kfrom ? std::min(K, trim.kfrom[m0]) : 0;
      const int k1 = trim.kcap ? std::min(K, trim.kcap[last]) : K;
      const Product<Op> t{p.A + m0 * p.rs + k0 * p.cs, p.rs, p.cs, p.B + n0 + k0 * p.ldb, p.ldb,
                          p.C + m0 * p.ldc + n0,       p.ldc};
      tile_edge<Op, MR, NV>(mr, nv, t, std::max(0, k1 - k0), acc);
    }
  }
}

}  // namespace mor::kern::detail::tiles
#endif  // __AVX512F__
