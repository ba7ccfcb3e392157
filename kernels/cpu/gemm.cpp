// GEMM and linear layers on OpenBLAS (Debian's OpenMP build), so BLAS threads
// and our own parallel loops share one libgomp pool.
#include <cblas.h>
#include <omp.h>

#include "kernels/kernels.h"

extern "C" void openblas_set_num_threads(int);

namespace mor::kern {

void set_num_threads(int n) {
  if (n <= 0) n = omp_get_num_procs();
  omp_set_num_threads(n);
  openblas_set_num_threads(n);
}

int num_threads() { return omp_get_max_threads(); }

void gemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda,
          const float* B, int ldb, float beta, float* C, int ldc) {
  if (M == 0 || N == 0) return;
  if (K == 0) {  // BLAS leaves C untouched for K = 0 only when beta = 1; be explicit.
    for (int i = 0; i < M; ++i)
      for (int j = 0; j < N; ++j) C[(int64_t)i * ldc + j] = beta == 0.f ? 0.f : beta * C[(int64_t)i * ldc + j];
    return;
  }
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
              M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void linear_forward(float* y, const float* x, const float* W, int n, int in, int out) {
  gemm(false, true, n, out, in, 1.f, x, in, W, in, 0.f, y, out);
}

void linear_backward(float* dx, float* dW, const float* dy, const float* x, const float* W, int n,
                     int in, int out, bool accumulate_dx) {
  if (dx) gemm(false, false, n, in, out, 1.f, dy, out, W, in, accumulate_dx ? 1.f : 0.f, dx, in);
  if (dW) gemm(true, false, out, in, n, 1.f, dy, out, x, in, 1.f, dW, in);
}

}  // namespace mor::kern
