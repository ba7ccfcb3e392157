// GEMM and linear layers on OpenBLAS (Debian's OpenMP build), so BLAS threads
// and our own parallel loops share one libgomp pool.
//
// Threads: OpenBLAS's own threaded sgemm shares packed panels between its threads
// and spins (sched_yield) waiting for them; on the model's shapes it reaches ~84 %
// of the FMA peak on 2 threads where one thread alone reaches ~91 %. So we thread
// GEMMs ourselves: independent GEMMs (a backward's dx and dW) run side by side,
// and a lone GEMM is cut into blocks of rows (or columns), one per thread.
// OpenBLAS called inside our parallel region runs single-threaded. K is never
// split, so every element of C is summed over K by one kernel call.
#include <cblas.h>
#include <omp.h>

#include <algorithm>

#include "kernels/kernels.h"

extern "C" void openblas_set_num_threads(int);

namespace mor::kern {

void set_num_threads(int n) {
  if (n <= 0) n = omp_get_num_procs();
  omp_set_num_threads(n);
  openblas_set_num_threads(n);
}

int num_threads() { return omp_get_max_threads(); }

namespace {

struct Gemm {
  bool ta, tb;
  int M, N, K;
  float alpha;
  const float* A;
  int lda;
  const float* B;
  int ldb;
  float beta;
  float* C;
  int ldc;
};

void run(const Gemm& g) {
  if (g.M == 0 || g.N == 0) return;
  if (g.K == 0) {  // BLAS leaves C untouched for K = 0 only when beta = 1; be explicit.
    for (int i = 0; i < g.M; ++i)
      for (int j = 0; j < g.N; ++j) {
        float& c = g.C[(int64_t)i * g.ldc + j];
        c = g.beta == 0.f ? 0.f : g.beta * c;
      }
    return;
  }
  cblas_sgemm(CblasRowMajor, g.ta ? CblasTrans : CblasNoTrans, g.tb ? CblasTrans : CblasNoTrans, g.M, g.N, g.K,
              g.alpha, g.A, g.lda, g.B, g.ldb, g.beta, g.C, g.ldc);
}

// Block p of P of g: rows of C for the model's per-layer shapes at full batch (measured best),
// columns for the 49k-wide LM head and for few rows (MoR's deeper recursions see a third of the
// tokens). Edges fall on multiples of 16, so column blocks never share a cache line.
Gemm part(const Gemm& g, int p, int P) {
  if (P == 1) return g;
  Gemm s = g;
  const bool rows = g.N < 4096 && g.M >= 128 * P;
  const int n = rows ? g.M : g.N;
  auto edge = [&](int q) { return q == P ? n : std::min(n, (int)((int64_t)n * q / P) / 16 * 16); };
  const int a = edge(p), b = edge(p + 1);
  if (rows) {
    s.M = b - a;
    s.A = g.ta ? g.A + a : g.A + (int64_t)a * g.lda;
    s.C = g.C + (int64_t)a * g.ldc;
  } else {
    s.N = b - a;
    s.B = g.tb ? g.B + (int64_t)a * g.ldb : g.B + a;
    s.C = g.C + a;
  }
  return s;
}

// Runs n independent GEMMs on all threads: each cut into P blocks, n * P blocks spread evenly.
// With 2 threads and 2 GEMMs each thread runs one whole GEMM (no block packs twice).
void run_all(const Gemm* gs, int n) {
  const int T = omp_in_parallel() ? 1 : omp_get_max_threads();
  double flops = 0;
  for (int i = 0; i < n; ++i) flops += 2.0 * gs[i].M * gs[i].N * gs[i].K;
  if (T == 1 || flops < 2e7) {  // small: not worth a parallel region; OpenBLAS decides
    for (int i = 0; i < n; ++i) run(gs[i]);
    return;
  }
  const int P = T % n == 0 ? T / n : T;
#pragma omp parallel for schedule(static) num_threads(T)
  for (int t = 0; t < n * P; ++t) run(part(gs[t / P], t % P, P));
}

}  // namespace

void gemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda,
          const float* B, int ldb, float beta, float* C, int ldc) {
  const Gemm g{trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc};
  run_all(&g, 1);
}

void linear_forward(float* y, const float* x, const float* W, int n, int in, int out) {
  gemm(false, true, n, out, in, 1.f, x, in, W, in, 0.f, y, out);
}

void linear_forward_pair(float* y1, const float* W1, int out1, float* y2, const float* W2, int out2,
                         const float* x, int n, int in) {
  const Gemm gs[2] = {{false, true, n, out1, in, 1.f, x, in, W1, in, 0.f, y1, out1},
                      {false, true, n, out2, in, 1.f, x, in, W2, in, 0.f, y2, out2}};
  run_all(gs, 2);
}

void linear_backward(float* dx, float* dW, const float* dy, const float* x, const float* W, int n,
                     int in, int out, bool accumulate_dx) {
  Gemm gs[2];
  int k = 0;
  if (dx) gs[k++] = {false, false, n, in, out, 1.f, dy, out, W, in, accumulate_dx ? 1.f : 0.f, dx, in};
  if (dW) gs[k++] = {true, false, out, in, n, 1.f, dy, out, x, in, 1.f, dW, in};
  run_all(gs, k);
}

}  // namespace mor::kern
