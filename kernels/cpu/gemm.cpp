// GEMM and linear layers on OpenBLAS (Debian's OpenMP build, so BLAS threads
// and our own parallel loops share one libgomp pool) and oneDNN (libdnnl, also
// OpenMP). By default (GemmLib::Mixed) the forward GEMMs (x W^T) and input
// gradients (dy W) run on oneDNN's JIT sgemm and the weight gradients (dy^T x,
// transposed A) on OpenBLAS: measured per thread on the model's shapes (Xeon,
// AVX-512, two GEMMs side by side), oneDNN 2.6 is 4-14 % faster on the first two
// and 3-6 % slower on the third; the mix gave +7 % tokens/s on the 135M models.
//
// Threads: OpenBLAS's own threaded sgemm shares packed panels between its threads
// and spins (sched_yield) waiting for them; on the model's shapes it reaches ~84 %
// of the FMA peak on 2 threads where one thread alone reaches ~91 %. So we thread
// GEMMs ourselves: independent GEMMs (a backward's dx and dW) run side by side,
// and a lone GEMM is cut into blocks of rows (or columns), one per thread.
// OpenBLAS called inside our parallel region runs single-threaded. K is never
// split, so every element of C is summed over K by one kernel call.
//
// bf16 (--train.precision bf16): every GEMM with bf16 operands runs on oneDNN's
// dnnl_gemm_bf16bf16f32 (bf16 A and B, fp32 accumulation and C; AVX512-BF16 or AMX
// where the CPU has them), blocked and threaded exactly like the fp32 ones. That
// function is exported by libdnnl (oneDNN's own tests and other frameworks call it)
// but not declared in its public header, so it is declared here; CMake checks that
// the library provides it.
#include <cblas.h>
#include <dnnl.h>
#include <omp.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "kernels/cpu/cpu_kernels.h"

extern "C" void openblas_set_num_threads(int);
extern "C" dnnl_status_t dnnl_gemm_bf16bf16f32(char transa, char transb, dnnl_dim_t M, dnnl_dim_t N, dnnl_dim_t K,
                                               float alpha, const uint16_t* A, dnnl_dim_t lda, const uint16_t* B,
                                               dnnl_dim_t ldb, float beta, float* C, dnnl_dim_t ldc);

namespace mor::kern::cpu {

void set_num_threads(int n) {
  if (n <= 0) n = omp_get_num_procs();
  omp_set_num_threads(n);
  openblas_set_num_threads(n);
}

int num_threads() { return omp_get_max_threads(); }

namespace {
GemmLib g_lib = GemmLib::Mixed;
}  // namespace

void set_gemm_lib(GemmLib lib) { g_lib = lib; }
GemmLib gemm_lib() { return g_lib; }

namespace {

// One GEMM; A and B are fp32 or (bf16) bfloat16, C is always fp32.
struct Gemm {
  bool ta, tb;
  int M, N, K;
  float alpha;
  const void* A;
  int lda;
  const void* B;
  int ldb;
  float beta;
  float* C;
  int ldc;
  bool bf16 = false;
  size_t esize() const { return bf16 ? 2 : 4; }
  // Element i of A or B as an address.
  const void* at(const void* p, int64_t i) const { return static_cast<const char*>(p) + i * (int64_t)esize(); }
};

[[noreturn]] void gemm_failed(const char* fn, const Gemm& g, int status) {
  // only for arguments BLAS would also reject: a bug, not bad input
  std::fprintf(stderr, "%s(M=%d N=%d K=%d lda=%d ldb=%d ldc=%d) failed with status %d\n", fn, g.M, g.N, g.K, g.lda,
               g.ldb, g.ldc, status);
  std::abort();
}

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
  const char ta = g.ta ? 'T' : 'N', tb = g.tb ? 'T' : 'N';  // oneDNN's gemms are row-major, like our calls
  if (g.bf16) {
    const dnnl_status_t st = dnnl_gemm_bf16bf16f32(ta, tb, g.M, g.N, g.K, g.alpha, static_cast<const uint16_t*>(g.A),
                                                   g.lda, static_cast<const uint16_t*>(g.B), g.ldb, g.beta, g.C, g.ldc);
    if (st != dnnl_success) gemm_failed("dnnl_gemm_bf16bf16f32", g, (int)st);
    return;
  }
  const float* A = static_cast<const float*>(g.A);
  const float* B = static_cast<const float*>(g.B);
  if (g_lib == GemmLib::Mixed && !g.ta) {
    const dnnl_status_t st = dnnl_sgemm(ta, tb, g.M, g.N, g.K, g.alpha, A, g.lda, B, g.ldb, g.beta, g.C, g.ldc);
    if (st != dnnl_success) gemm_failed("dnnl_sgemm", g, (int)st);
    return;
  }
  cblas_sgemm(CblasRowMajor, g.ta ? CblasTrans : CblasNoTrans, g.tb ? CblasTrans : CblasNoTrans, g.M, g.N, g.K, g.alpha,
              A, g.lda, B, g.ldb, g.beta, g.C, g.ldc);
}

// Block p of P of g, by rows or by columns of C. Row edges fall on multiples of 4 (the
// micro-kernel's row step in OpenBLAS's column-major view), rounded to the nearest so that
// blocks stay even; column edges on multiples of 16, so column blocks never share a cache line.
Gemm part(const Gemm& g, int p, int P, bool rows) {
  if (P == 1) return g;
  Gemm s = g;
  const int n = rows ? g.M : g.N, u = rows ? 4 : 16;
  auto edge = [&](int q) {  // n q / P rounded to the nearest multiple of u
    return q == P ? n : std::min(n, (int)(((int64_t)n * q + (int64_t)P * u / 2) / ((int64_t)P * u)) * u);
  };
  const int a = edge(p), b = edge(p + 1);
  if (rows) {
    s.M = b - a;
    s.A = g.ta ? g.at(g.A, a) : g.at(g.A, (int64_t)a * g.lda);
    s.C = g.C + (int64_t)a * g.ldc;
  } else {
    s.N = b - a;
    s.B = g.tb ? g.at(g.B, (int64_t)a * g.ldb) : g.at(g.B, a);
    s.C = g.C + a;
  }
  return s;
}

// Runs n independent GEMMs on all threads, as tasks taken in order by whichever thread is
// free. Normally each GEMM is cut into P even blocks (one per thread, or with 2 threads and 2
// GEMMs each thread runs one whole GEMM, so no block packs twice): rows for the model's
// per-layer shapes, columns for the 49k-wide LM head and for few rows (MoR's deeper recursions).
// A tall GEMM (the LM head's dW: one row per vocabulary entry) paired with another is cut into
// row blocks of ~4096 that the threads share out: its partner (the head's dx) takes as long as
// it does but runs at another speed, and fixed halves left one thread idle for ~10 % of it.
void run_all(const Gemm* gs, int n) {
  const int T = omp_in_parallel() ? 1 : omp_get_max_threads();
  double flops = 0;
  for (int i = 0; i < n; ++i) flops += 2.0 * gs[i].M * gs[i].N * gs[i].K;
  if (T == 1 || flops < 2e7) {  // small: not worth a parallel region; OpenBLAS decides
    for (int i = 0; i < n; ++i) run(gs[i]);
    return;
  }
  struct Task {
    int g, p, P;
    bool rows;
  };
  std::vector<Task> tasks;
  auto tall = [&](const Gemm& g) { return n > 1 && g.M >= 16384; };
  const int P = T % n == 0 ? T / n : T;
  for (int i = 0; i < n; ++i)  // tall ones last, so that their partner starts first
    if (!tall(gs[i])) {
      const bool rows = gs[i].N < 4096 && gs[i].M >= 128 * P;
      for (int p = 0; p < P; ++p) tasks.push_back({i, p, P, rows});
    }
  for (int i = 0; i < n; ++i)
    if (tall(gs[i])) {
      const int pieces = std::max(P, (gs[i].M + 4095) / 4096);
      for (int p = 0; p < pieces; ++p) tasks.push_back({i, p, pieces, true});
    }
  const int nt = (int)tasks.size();
#pragma omp parallel for schedule(dynamic, 1) num_threads(T)
  for (int t = 0; t < nt; ++t) run(part(gs[tasks[t].g], tasks[t].p, tasks[t].P, tasks[t].rows));
}

}  // namespace

void gemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda, const float* B,
          int ldb, float beta, float* C, int ldc) {
  const Gemm g{trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc};
  run_all(&g, 1);
}

void linear_forward(float* y, const float* x, const float* W, int n, int in, int out) {
  gemm(false, true, n, out, in, 1.f, x, in, W, in, 0.f, y, out);
}

void linear_forward_pair(float* y1, const float* W1, int out1, float* y2, const float* W2, int out2, const float* x,
                         int n, int in) {
  const Gemm gs[2] = {{false, true, n, out1, in, 1.f, x, in, W1, in, 0.f, y1, out1},
                      {false, true, n, out2, in, 1.f, x, in, W2, in, 0.f, y2, out2}};
  run_all(gs, 2);
}

void linear_backward(float* dx, float* dW, const float* dy, const float* x, const float* W, int n, int in, int out,
                     bool accumulate_dx) {
  Gemm gs[2];
  int k = 0;
  if (dx) gs[k++] = {false, false, n, in, out, 1.f, dy, out, W, in, accumulate_dx ? 1.f : 0.f, dx, in};
  if (dW) gs[k++] = {true, false, out, in, n, 1.f, dy, out, x, in, 1.f, dW, in};
  run_all(gs, k);
}

void linear_forward_bf16(float* y, const bf16* x, const bf16* W, int n, int in, int out) {
  const Gemm g{false, true, n, out, in, 1.f, x, in, W, in, 0.f, y, out, true};
  run_all(&g, 1);
}

void linear_forward_pair_bf16(float* y1, const bf16* W1, int out1, float* y2, const bf16* W2, int out2, const bf16* x,
                              int n, int in) {
  const Gemm gs[2] = {{false, true, n, out1, in, 1.f, x, in, W1, in, 0.f, y1, out1, true},
                      {false, true, n, out2, in, 1.f, x, in, W2, in, 0.f, y2, out2, true}};
  run_all(gs, 2);
}

void linear_backward_bf16(float* dx, float* dW, const bf16* dy, const bf16* x, const bf16* W, int n, int in, int out,
                          bool accumulate_dx) {
  Gemm gs[2];
  int k = 0;
  if (dx) gs[k++] = {false, false, n, in, out, 1.f, dy, out, W, in, accumulate_dx ? 1.f : 0.f, dx, in, true};
  if (dW) gs[k++] = {true, false, out, in, n, 1.f, dy, out, x, in, 1.f, dW, in, true};
  run_all(gs, k);
}

}  // namespace mor::kern::cpu
