// Every numeric CPU kernel of kernels/cpu/cpu_kernels.h against an independent reference (one file
// over ~800 lines on purpose: the references and the finite-difference stencil serve every kernel):
// naive double-precision loops for the forward maps and finite differences for
// the gradients. Finite differences use a 4th-order central stencil with a
// power-of-two step on inputs quantised to multiples of 2^-12, so x +- h and
// x +- 2h are exact in fp32 and the only noise is the fp32 rounding of the kernel
// outputs themselves. Sizes are tiny, except where a test needs the multi-threaded GEMM paths
// (~2e7 flops and up): the whole binary runs in about a second.
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <ostream>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "kernels/cpu/vec_math.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_kernels.h"

namespace kern = mor::kern::cpu;  // the CPU kernels, called directly

namespace {

// Uniform in [lo, hi), quantised to multiples of 2^-12 (see the header comment).
std::vector<float> rand_vec(size_t n, unsigned seed, float lo = -1.f, float hi = 1.f) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = std::round(d(gen) * 4096.f) / 4096.f;
  return v;
}

bool close(double ref, double got, double rtol, double atol) {
  return std::isfinite(got) && std::fabs(got - ref) <= atol + rtol * std::fabs(ref);
}

// Element-wise comparison; reports at most a few mismatches per call.
template <class G>
void expect_all_close(const std::vector<double>& ref, const G* got, double rtol, double atol, const std::string& what) {
  int bad = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (!close(ref[i], (double)got[i], rtol, atol)) {
      if (++bad <= 5)
        ADD_FAILURE() << what << "[" << i << "]: expected " << ref[i] << ", got " << got[i] << " (diff "
                      << (double)got[i] - ref[i] << ")";
    }
  }
  if (bad > 5) ADD_FAILURE() << what << ": " << bad << " mismatches in total of " << ref.size();
}

// 4th-order central difference of f() with respect to x[i]; x[i] is restored.
constexpr double kStep = 1.0 / 32;
double fd(std::vector<float>& x, size_t i, const std::function<double()>& f, double h = kStep) {
  const float x0 = x[i];
  auto at = [&](double d) {
    x[i] = (float)(x0 + d);
    return f();
  };
  const double fp1 = at(h), fm1 = at(-h), fp2 = at(2 * h), fm2 = at(-2 * h);
  x[i] = x0;
  return (8.0 * (fp1 - fm1) - (fp2 - fm2)) / (12.0 * h);
}

std::vector<double> fd_all(std::vector<float>& x, const std::function<double()>& f) {
  std::vector<double> g(x.size());
  for (size_t i = 0; i < x.size(); ++i) g[i] = fd(x, i, f);
  return g;
}

double dot(const std::vector<float>& a, const std::vector<float>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += (double)a[i] * b[i];
  return s;
}

std::vector<double> minus(const std::vector<float>& a, const std::vector<float>& b) {
  std::vector<double> d(a.size());
  for (size_t i = 0; i < a.size(); ++i) d[i] = (double)a[i] - b[i];
  return d;
}

std::vector<double> to_double(const std::vector<float>& a) { return {a.begin(), a.end()}; }

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// Runs the body with the given thread count and restores the previous one.
struct ThreadScope {
  int saved;
  explicit ThreadScope(int n) : saved(kern::num_threads()) { kern::set_num_threads(n); }
  ~ThreadScope() { kern::set_num_threads(saved); }
};

// ============================================================================ GEMM
// op(A)[M,K] op(B)[K,N] in double; A/B stored row-major with leading dimensions.
std::vector<double> naive_gemm(bool ta, bool tb, int M, int N, int K, double alpha, const std::vector<float>& A,
                               int lda, const std::vector<float>& B, int ldb, double beta, const std::vector<float>& C,
                               int ldc) {
  std::vector<double> out(C.begin(), C.end());
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < N; ++j) {
      double acc = 0;
      for (int k = 0; k < K; ++k) {
        double a = ta ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k];
        double b = tb ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j];
        acc += a * b;
      }
      double c0 = beta == 0.0 ? 0.0 : beta * C[(size_t)i * ldc + j];
      out[(size_t)i * ldc + j] = alpha * acc + c0;
    }
  return out;
}

struct GemmCase {
  int M, N, K;
};

// Every GEMM and linear-layer test runs on both GEMM set-ups (--train.gemm): Mixed (oneDNN
// for GEMMs with an untransposed A, OpenBLAS for the rest) and OpenBLAS alone.
class Gemm : public ::testing::TestWithParam<kern::GemmLib> {
 protected:
  void SetUp() override {
    saved_ = kern::gemm_lib();
    kern::set_gemm_lib(GetParam());
  }
  void TearDown() override { kern::set_gemm_lib(saved_); }

 private:
  kern::GemmLib saved_ = kern::GemmLib::Mixed;
};
class Linear : public Gemm {};
std::string gemm_lib_name(const ::testing::TestParamInfo<kern::GemmLib>& i) {
  return i.param == kern::GemmLib::Mixed ? "Mixed" : "OpenBLAS";
}
INSTANTIATE_TEST_SUITE_P(Libs, Gemm, ::testing::Values(kern::GemmLib::Mixed, kern::GemmLib::OpenBLAS), gemm_lib_name);
INSTANTIATE_TEST_SUITE_P(Libs, Linear, ::testing::Values(kern::GemmLib::Mixed, kern::GemmLib::OpenBLAS), gemm_lib_name);

// The vectorizable exp used by softmax, cross-entropy, attention and SwiGLU, against double exp:
// within 2 ulp over the whole normal range, exact at 0, flushed to a tiny value far below it.
TEST(FastExp, WithinTwoUlpOfDoubleExp) {
  double worst = 0;
  float at = 0;
  for (int i = 0; i <= 2000000; ++i) {
    const float x = -87.3f + (88.0f + 87.3f) * (float)i / 2000000.f;
    const double want = std::exp((double)x);
    const double ulp = std::ldexp(1.0, std::ilogb(want) - 23);
    const double err = std::fabs((double)mor::kern::fast_exp(x) - want) / ulp;
    if (err > worst) worst = err, at = x;
  }
  EXPECT_LE(worst, 2.0) << "at x = " << at;
  EXPECT_EQ(mor::kern::fast_exp(0.f), 1.f);
  EXPECT_LE(mor::kern::fast_exp(-100.f), 1.2e-38f);
  EXPECT_GE(mor::kern::fast_exp(-100.f), 0.f);
  EXPECT_LE(mor::kern::fast_exp(-std::numeric_limits<float>::infinity()), 1.2e-38f);
  EXPECT_TRUE(std::isfinite(mor::kern::fast_exp(88.f)));
}

// sum_row: every element counted once, for lengths around the 16-lane blocks.
TEST(FastExp, SumRowCountsEveryElement) {
  for (int n : {0, 1, 15, 16, 17, 31, 32, 33, 1000}) {
    std::vector<float> x(n);
    double want = 0;
    for (int i = 0; i < n; ++i) x[i] = (float)(i % 7 + 1), want += x[i];
    EXPECT_EQ((double)mor::kern::sum_row(x.data(), n), want) << "n = " << n;
  }
}

TEST_P(Gemm, AllTransposeCombosWithPaddedLeadingDims) {
  for (GemmCase g : {GemmCase{5, 7, 3}, GemmCase{3, 2, 9}, GemmCase{17, 13, 21}}) {
    for (int ta = 0; ta < 2; ++ta)
      for (int tb = 0; tb < 2; ++tb)
        for (float beta : {0.f, 1.f, -0.5f})
          for (float alpha : {1.f, 0.75f}) {
            const int M = g.M, N = g.N, K = g.K;
            // Row widths of the stored matrices, plus padding that must be ignored / left alone.
            const int a_rows = ta ? K : M, a_w = ta ? M : K, lda = a_w + 3;
            const int b_rows = tb ? N : K, b_w = tb ? K : N, ldb = b_w + 2;
            const int ldc = N + 4;
            unsigned seed = 100 * M + 10 * ta + tb;
            std::vector<float> A = rand_vec((size_t)a_rows * lda, seed);
            std::vector<float> B = rand_vec((size_t)b_rows * ldb, seed + 1);
            std::vector<float> C = rand_vec((size_t)M * ldc, seed + 2);
            const std::vector<float> C0 = C;
            kern::gemm(ta, tb, M, N, K, alpha, A.data(), lda, B.data(), ldb, beta, C.data(), ldc);
            std::vector<double> ref = naive_gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C0, ldc);
            SCOPED_TRACE("M=" + std::to_string(M) + " N=" + std::to_string(N) + " K=" + std::to_string(K) +
                         " ta=" + std::to_string(ta) + " tb=" + std::to_string(tb) + " alpha=" + std::to_string(alpha) +
                         " beta=" + std::to_string(beta));
            expect_all_close(ref, C.data(), 1e-5, 1e-5, "C");  // padding columns: ref keeps C0
          }
  }
}

// Above ~2e7 flops and with several threads, gemm cuts C into row blocks (or column blocks when
// N >= 4096), one per thread; odd sizes put the block edges off the 16-float grid.
TEST_P(Gemm, ThreadedBlocksMatchNaive) {
  for (int threads : {2, 3}) {
    ThreadScope ts(threads);
    for (GemmCase g : {GemmCase{203, 301, 333}, GemmCase{37, 4133, 140}})
      for (int ta = 0; ta < 2; ++ta)
        for (int tb = 0; tb < 2; ++tb)
          for (float beta : {0.f, -0.5f}) {
            const int M = g.M, N = g.N, K = g.K;
            const int lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 2, ldc = N + 4;
            std::vector<float> A = rand_vec((size_t)(ta ? K : M) * lda, 7 + ta);
            std::vector<float> B = rand_vec((size_t)(tb ? N : K) * ldb, 9 + tb);
            std::vector<float> C = rand_vec((size_t)M * ldc, 11);
            if (beta == 0.f)  // garbage that "write" must not read
              for (int i = 0; i < M; ++i)
                for (int j = 0; j < N; ++j) C[(size_t)i * ldc + j] = std::numeric_limits<float>::quiet_NaN();
            const std::vector<float> C0 = C;
            kern::gemm(ta, tb, M, N, K, 0.75f, A.data(), lda, B.data(), ldb, beta, C.data(), ldc);
            SCOPED_TRACE("threads=" + std::to_string(threads) + " M=" + std::to_string(M) + " N=" + std::to_string(N) +
                         " ta=" + std::to_string(ta) + " tb=" + std::to_string(tb) + " beta=" + std::to_string(beta));
            expect_all_close(naive_gemm(ta, tb, M, N, K, 0.75, A, lda, B, ldb, beta, C0, ldc), C.data(), 1e-4, 1e-4,
                             "C");
          }
  }
}

TEST_P(Gemm, BetaZeroOverwritesGarbage) {
  // beta = 0 means "write": NaN already in C must not leak into the result
  // (linear_backward with accumulate_dx = false and attention's dq rely on it).
  for (GemmCase g : {GemmCase{4, 6, 5}, GemmCase{33, 20, 17}})
    for (int ta = 0; ta < 2; ++ta)
      for (int tb = 0; tb < 2; ++tb) {
        const int M = g.M, N = g.N, K = g.K, lda = ta ? M : K, ldb = tb ? K : N;
        std::vector<float> A = rand_vec((size_t)M * K, 1), B = rand_vec((size_t)K * N, 2);
        std::vector<float> C((size_t)M * N, std::numeric_limits<float>::quiet_NaN());
        std::vector<float> Czero((size_t)M * N, 0.f);
        kern::gemm(ta, tb, M, N, K, 1.f, A.data(), lda, B.data(), ldb, 0.f, C.data(), N);
        SCOPED_TRACE("M=" + std::to_string(M) + " ta=" + std::to_string(ta) + " tb=" + std::to_string(tb));
        expect_all_close(naive_gemm(ta, tb, M, N, K, 1, A, lda, B, ldb, 0, Czero, N), C.data(), 1e-5, 1e-5, "C");
      }
}

TEST_P(Gemm, KZero) {
  const int M = 3, N = 4, ldc = 6;
  std::vector<float> dummy(1, 1.f);
  std::vector<float> C = rand_vec(M * ldc, 5);
  const std::vector<float> C0 = C;
  // beta = 1: untouched.
  kern::gemm(false, false, M, N, 0, 1.f, dummy.data(), 1, dummy.data(), N, 1.f, C.data(), ldc);
  EXPECT_TRUE(same_bits(C, C0));
  // beta = 0.5: scaled, padding untouched.
  kern::gemm(true, true, M, N, 0, 2.f, dummy.data(), M, dummy.data(), 1, 0.5f, C.data(), ldc);
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < ldc; ++j)
      EXPECT_EQ(C[i * ldc + j], j < N ? 0.5f * C0[i * ldc + j] : C0[i * ldc + j]) << i << "," << j;
  // beta = 0: zeroed, even over NaN.
  for (int i = 0; i < M; ++i) C[i * ldc + 1] = std::numeric_limits<float>::quiet_NaN();
  kern::gemm(false, true, M, N, 0, 1.f, dummy.data(), 1, dummy.data(), 1, 0.f, C.data(), ldc);
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < ldc; ++j) EXPECT_EQ(C[i * ldc + j], j < N ? 0.f : C0[i * ldc + j]) << i << "," << j;
  // M = 0 or N = 0: nothing happens.
  std::vector<float> C1 = C0;
  kern::gemm(false, false, 0, N, 3, 1.f, dummy.data(), 3, dummy.data(), N, 0.f, C1.data(), ldc);
  kern::gemm(false, false, M, 0, 3, 1.f, dummy.data(), 3, dummy.data(), 1, 0.f, C1.data(), ldc);
  EXPECT_TRUE(same_bits(C1, C0));
}

// ============================================================================ Linear
struct LinearData {
  int n, in, out;
  std::vector<float> x, W, r;
  explicit LinearData(int n_ = 5, int in_ = 7, int out_ = 4)
      : n(n_), in(in_), out(out_), x(rand_vec((size_t)n * in, 11)), W(rand_vec((size_t)out * in, 12)),
        r(rand_vec((size_t)n * out, 13)) {}
};

std::vector<double> naive_linear(const LinearData& d) {
  std::vector<double> y((size_t)d.n * d.out);
  for (int i = 0; i < d.n; ++i)
    for (int o = 0; o < d.out; ++o) {
      double a = 0;
      for (int k = 0; k < d.in; ++k) a += (double)d.x[i * d.in + k] * d.W[o * d.in + k];
      y[i * d.out + o] = a;
    }
  return y;
}

TEST_P(Linear, ForwardMatchesNaive) {
  LinearData d;
  std::vector<float> y((size_t)d.n * d.out, std::numeric_limits<float>::quiet_NaN());
  kern::linear_forward(y.data(), d.x.data(), d.W.data(), d.n, d.in, d.out);
  expect_all_close(naive_linear(d), y.data(), 1e-5, 1e-6, "y");
}

// loose: tolerance factor (sums over more terms lose more bits in fp32).
void expect_linear_backward_matches_naive(const LinearData& d, double loose = 1) {
  const std::vector<float>& dy = d.r;
  std::vector<double> dx_ref((size_t)d.n * d.in, 0.0), dW_ref((size_t)d.out * d.in, 0.0);
  for (int i = 0; i < d.n; ++i)
    for (int k = 0; k < d.in; ++k)
      for (int o = 0; o < d.out; ++o) {
        dx_ref[i * d.in + k] += (double)dy[i * d.out + o] * d.W[o * d.in + k];
        dW_ref[o * d.in + k] += (double)dy[i * d.out + o] * d.x[i * d.in + k];
      }
  const std::vector<float> dx0 = rand_vec(dx_ref.size(), 21), dW0 = rand_vec(dW_ref.size(), 22);

  {  // dx written (over garbage), dW accumulated
    std::vector<float> dx(dx_ref.size(), std::numeric_limits<float>::quiet_NaN()), dW = dW0;
    kern::linear_backward(dx.data(), dW.data(), dy.data(), d.x.data(), d.W.data(), d.n, d.in, d.out, false);
    expect_all_close(dx_ref, dx.data(), 1e-5 * loose, 1e-6 * loose, "dx (write)");
    expect_all_close(dW_ref, minus(dW, dW0).data(), 1e-5 * loose, 1e-5 * loose, "dW - dW0");
  }
  {  // dx accumulated
    std::vector<float> dx = dx0, dW = dW0;
    kern::linear_backward(dx.data(), dW.data(), dy.data(), d.x.data(), d.W.data(), d.n, d.in, d.out, true);
    expect_all_close(dx_ref, minus(dx, dx0).data(), 1e-5 * loose, 1e-5 * loose, "dx - dx0 (accumulate)");
    expect_all_close(dW_ref, minus(dW, dW0).data(), 1e-5 * loose, 1e-5 * loose, "dW - dW0");
  }
  {  // null outputs are skipped
    std::vector<float> dx = dx0, dW = dW0;
    kern::linear_backward(nullptr, dW.data(), dy.data(), d.x.data(), d.W.data(), d.n, d.in, d.out, false);
    expect_all_close(dW_ref, minus(dW, dW0).data(), 1e-5 * loose, 1e-5 * loose, "dW - dW0 (dx null)");
    kern::linear_backward(dx.data(), nullptr, dy.data(), d.x.data(), d.W.data(), d.n, d.in, d.out, false);
    expect_all_close(dx_ref, dx.data(), 1e-5 * loose, 1e-6 * loose, "dx (dW null)");
  }
}

TEST_P(Linear, BackwardMatchesNaive) { expect_linear_backward_matches_naive(LinearData()); }

// Two layers of one input: small (one thread, in order) and large (side by side on 2 and 3 threads).
TEST_P(Linear, ForwardPairMatchesNaive) {
  for (int threads : {1, 2, 3}) {
    ThreadScope ts(threads);
    for (const auto& [n, in, out1, out2] : {std::array<int, 4>{5, 7, 4, 3}, std::array<int, 4>{256, 193, 224, 96}}) {
      SCOPED_TRACE("threads=" + std::to_string(threads) + " n=" + std::to_string(n));
      LinearData d1(n, in, out1), d2(n, in, out2);  // the same x (same seed)
      d2.W = rand_vec(d2.W.size(), 99);             // another W
      std::vector<float> y1((size_t)n * out1, std::numeric_limits<float>::quiet_NaN());
      std::vector<float> y2((size_t)n * out2, std::numeric_limits<float>::quiet_NaN());
      kern::linear_forward_pair(y1.data(), d1.W.data(), out1, y2.data(), d2.W.data(), out2, d1.x.data(), n, in);
      expect_all_close(naive_linear(d1), y1.data(), 1e-4, 1e-5, "y1");
      expect_all_close(naive_linear(d2), y2.data(), 1e-4, 1e-5, "y2");
    }
  }
}

// Large enough that dx and dW run side by side (2 threads: one each; 3 threads: both cut in 3).
TEST_P(Linear, BackwardMatchesNaiveThreaded) {
  for (int threads : {2, 3}) {
    ThreadScope ts(threads);
    SCOPED_TRACE("threads=" + std::to_string(threads));
    expect_linear_backward_matches_naive(LinearData(256, 193, 224), 10);
  }
}

// An LM-head-shaped backward: dW has so many rows (out >= 16384) that it is cut into row pieces
// shared out between the threads while dx runs whole; 16411 rows leave a short last piece.
TEST_P(Linear, BackwardTallMatchesNaiveThreaded) {
  const LinearData d(12, 40, 16411);
  for (int threads : {2, 3}) {
    ThreadScope ts(threads);
    SCOPED_TRACE("threads=" + std::to_string(threads));
    expect_linear_backward_matches_naive(d, 10);
  }
}

TEST_P(Linear, BackwardFiniteDifference) {
  LinearData d;
  std::vector<float> y((size_t)d.n * d.out);
  auto loss = [&] {
    kern::linear_forward(y.data(), d.x.data(), d.W.data(), d.n, d.in, d.out);
    return dot(y, d.r);
  };
  std::vector<float> dx((size_t)d.n * d.in), dW((size_t)d.out * d.in, 0.f);
  kern::linear_backward(dx.data(), dW.data(), d.r.data(), d.x.data(), d.W.data(), d.n, d.in, d.out, false);
  ThreadScope one(1);
  expect_all_close(fd_all(d.x, loss), dx.data(), 1e-3, 1e-4, "dx vs FD");
  expect_all_close(fd_all(d.W, loss), dW.data(), 1e-3, 1e-4, "dW vs FD");
}

// ============================================================================ RMSNorm
TEST(RMSNorm, ForwardMatchesFormula) {
  const int n = 4, d = 12;
  const float eps = 1e-5f;
  std::vector<float> x = rand_vec(n * d, 31, -2.f, 2.f), w = rand_vec(d, 32, 0.5f, 1.5f);
  for (int j = 0; j < d; ++j) x[3 * d + j] *= 1e-3f;  // a row where eps is not negligible
  std::vector<float> y(n * d), rstd(n);
  kern::rmsnorm_forward(y.data(), rstd.data(), x.data(), w.data(), n, d, eps);
  std::vector<double> y_ref(n * d), r_ref(n);
  for (int i = 0; i < n; ++i) {
    double ms = 0;
    for (int j = 0; j < d; ++j) ms += (double)x[i * d + j] * x[i * d + j];
    ms /= d;
    r_ref[i] = 1.0 / std::sqrt(ms + eps);
    for (int j = 0; j < d; ++j) y_ref[i * d + j] = x[i * d + j] / std::sqrt(ms + eps) * w[j];
  }
  expect_all_close(r_ref, rstd.data(), 1e-5, 0, "rstd");
  expect_all_close(y_ref, y.data(), 1e-5, 1e-6, "y");
}

TEST(RMSNorm, BackwardFiniteDifference) {
  const int n = 3, d = 8;
  const float eps = 1e-5f;
  std::vector<float> x = rand_vec(n * d, 41, -2.f, 2.f), w = rand_vec(d, 42, 0.5f, 1.5f), r = rand_vec(n * d, 43);
  std::vector<float> y(n * d), rstd(n);
  auto loss = [&] {
    kern::rmsnorm_forward(y.data(), rstd.data(), x.data(), w.data(), n, d, eps);
    return dot(y, r);
  };
  loss();
  const std::vector<float> dx0 = rand_vec(n * d, 44), dw0 = rand_vec(d, 45);
  std::vector<float> dx = dx0, dw = dw0;
  kern::rmsnorm_backward(dx.data(), dx.data(), dw.data(), r.data(), x.data(), w.data(), rstd.data(), n, d);
  // The two other forms: a separate residual gradient, and none (dx written).
  std::vector<float> dx_res(n * d, 7.f), dx_none(n * d, 7.f), dw_unused(d);
  kern::rmsnorm_backward(dx_res.data(), dx0.data(), dw_unused.data(), r.data(), x.data(), w.data(), rstd.data(), n, d);
  kern::rmsnorm_backward(dx_none.data(), nullptr, dw_unused.data(), r.data(), x.data(), w.data(), rstd.data(), n, d);
  ThreadScope one(1);
  const std::vector<double> fd_x = fd_all(x, loss);
  expect_all_close(fd_x, minus(dx, dx0).data(), 1e-3, 2e-4, "dx - dx0 vs FD");
  expect_all_close(fd_x, minus(dx_res, dx0).data(), 1e-3, 2e-4, "dx (separate residual) - dx0 vs FD");
  expect_all_close(fd_x, dx_none.data(), 1e-3, 2e-4, "dx (no residual) vs FD");
  expect_all_close(fd_all(w, loss), minus(dw, dw0).data(), 1e-3, 2e-4, "dw - dw0 vs FD");
}

// ============================================================================ RoPE
// docs/MODEL.md: inv_freq[i] = theta^(-2i/hd); y[i] = x[i] c - x[i+hd/2] s; y[i+hd/2] = x[i+hd/2] c + x[i] s.
std::vector<double> rope_ref(const std::vector<float>& x, const std::vector<int>& pos, int H, int hd, double theta) {
  std::vector<double> y(x.size());
  const int half = hd / 2;
  for (size_t t = 0; t < pos.size(); ++t)
    for (int h = 0; h < H; ++h) {
      const size_t b = (t * H + h) * hd;
      for (int i = 0; i < half; ++i) {
        const double a = pos[t] * std::pow(theta, -2.0 * i / hd), c = std::cos(a), s = std::sin(a);
        y[b + i] = x[b + i] * c - x[b + i + half] * s;
        y[b + i + half] = x[b + i + half] * c + x[b + i] * s;
      }
    }
  return y;
}

TEST(RoPE, ForwardMatchesFormula) {
  for (int hd : {8, 6}) {
    const int H = 3, max_pos = 40;
    const double theta = 10000;
    const std::vector<int> pos = {0, 1, 5, 2, 39, 17};  // any order, with gaps
    kern::RopeTable t(mor::kern::cpu_backend(), hd, max_pos, theta);
    ASSERT_EQ(t.cos.size(), (size_t)max_pos * hd / 2);
    std::vector<float> x = rand_vec(pos.size() * H * hd, 51 + hd);
    std::vector<double> ref = rope_ref(x, pos, H, hd, theta);
    kern::rope_forward(x.data(), pos.data(), (int)pos.size(), H, t);
    SCOPED_TRACE("hd=" + std::to_string(hd));
    expect_all_close(ref, x.data(), 1e-5, 1e-6, "rope(x)");
  }
  // A small theta makes every frequency rotate visibly.
  {
    const int H = 2, hd = 4;
    const std::vector<int> pos = {3, 7};
    kern::RopeTable t(mor::kern::cpu_backend(), hd, 8, 3.0);
    std::vector<float> x = rand_vec(pos.size() * H * hd, 59);
    std::vector<double> ref = rope_ref(x, pos, H, hd, 3.0);
    kern::rope_forward(x.data(), pos.data(), (int)pos.size(), H, t);
    expect_all_close(ref, x.data(), 1e-5, 1e-6, "rope(x), theta=3");
  }
}

TEST(RoPE, BackwardIsTransposeAndNormIsPreserved) {
  const int H = 2, hd = 8;
  const std::vector<int> pos = {0, 3, 4, 9, 11};
  const int n = (int)pos.size();
  kern::RopeTable t(mor::kern::cpu_backend(), hd, 16, 10000.0);
  const std::vector<float> x = rand_vec(n * H * hd, 61), y = rand_vec(n * H * hd, 62);
  std::vector<float> rx = x, by = y;
  kern::rope_forward(rx.data(), pos.data(), n, H, t);
  kern::rope_backward(by.data(), pos.data(), n, H, t);
  const double lhs = dot(rx, y), rhs = dot(x, by);
  EXPECT_NEAR(lhs, rhs, 1e-5 * (1 + std::fabs(lhs))) << "<rope(x), y> != <x, rope_backward(y)>";
  // The transpose is not the identity (rope actually rotates something).
  EXPECT_GT(std::fabs(dot(rx, y) - dot(x, y)), 1e-3);
  // Norm per (token, head) is preserved by both directions.
  for (int i = 0; i < n; ++i)
    for (int h = 0; h < H; ++h) {
      double a = 0, b = 0, c = 0;
      for (int j = 0; j < hd; ++j) {
        size_t e = ((size_t)i * H + h) * hd + j;
        a += (double)x[e] * x[e];
        b += (double)rx[e] * rx[e];
        c += (double)by[e] * by[e] - (double)y[e] * y[e];
      }
      EXPECT_NEAR(a, b, 1e-5 * a) << "token " << i << " head " << h;
      EXPECT_NEAR(c, 0.0, 1e-5) << "token " << i << " head " << h;
    }
  // backward undoes forward.
  kern::rope_backward(rx.data(), pos.data(), n, H, t);
  expect_all_close(to_double(x), rx.data(), 1e-5, 1e-6, "rope_backward(rope(x))");
}

// ============================================================================ SwiGLU
TEST(SwiGLU, ForwardMatchesFormula) {
  std::vector<float> g = rand_vec(40, 71, -6.f, 6.f), u = rand_vec(40, 72, -2.f, 2.f);
  // Saturated tails must stay finite.
  g[0] = 100.f, g[1] = -100.f, g[2] = 0.f, g[3] = -30.f;
  std::vector<float> h(g.size());
  kern::swiglu_forward(h.data(), g.data(), u.data(), (int64_t)g.size());
  std::vector<double> ref(g.size());
  for (size_t i = 0; i < g.size(); ++i) ref[i] = (double)g[i] / (1.0 + std::exp(-(double)g[i])) * u[i];
  expect_all_close(ref, h.data(), 1e-5, 1e-7, "h");
}

TEST(SwiGLU, BackwardFiniteDifference) {
  const size_t n = 30;
  std::vector<float> g = rand_vec(n, 81, -4.f, 4.f), u = rand_vec(n, 82, -2.f, 2.f), r = rand_vec(n, 83);
  std::vector<float> h(n);
  auto loss = [&] {
    kern::swiglu_forward(h.data(), g.data(), u.data(), (int64_t)n);
    return dot(h, r);
  };
  // Outputs are written: garbage beforehand must not matter.
  std::vector<float> dg(n, 123.f), du(n, -7.f);
  kern::swiglu_backward(dg.data(), du.data(), r.data(), g.data(), u.data(), (int64_t)n);
  ThreadScope one(1);
  expect_all_close(fd_all(g, loss), dg.data(), 1e-3, 1e-4, "dg vs FD");
  expect_all_close(fd_all(u, loss), du.data(), 1e-3, 1e-4, "du vs FD");
  // Saturated tails: finite, and the analytic limits (silu' -> 1 and 0).
  std::vector<float> gs = {100.f, -100.f}, us = {2.f, 2.f}, dh = {1.f, 1.f}, dgs(2), dus(2);
  kern::swiglu_backward(dgs.data(), dus.data(), dh.data(), gs.data(), us.data(), 2);
  EXPECT_NEAR(dgs[0], 2.f, 1e-5);
  EXPECT_NEAR(dgs[1], 0.f, 1e-5);
  EXPECT_NEAR(dus[0], 100.f, 1e-3);
  EXPECT_NEAR(dus[1], 0.f, 1e-5);
}

// ============================================================================ Attention
struct AttnCase {
  std::string name;
  std::vector<int> qpos, kpos;
  int H, Hkv, hd;
};
// Stable, readable ctest names (the default printer dumps the object's bytes, pointers included).
void PrintTo(const AttnCase& c, std::ostream* os) { *os << c.name; }

std::vector<int> iota_vec(int n) {
  std::vector<int> v(n);
  for (int i = 0; i < n; ++i) v[i] = i;
  return v;
}

struct AttnData {
  kern::AttnShape s;
  std::vector<float> q, k, v, r;
  explicit AttnData(const AttnCase& c, unsigned seed = 91) {
    s = {(int)c.qpos.size(), (int)c.kpos.size(), c.H, c.Hkv, c.hd};
    q = rand_vec((size_t)s.nq * c.H * c.hd, seed, -1.5f, 1.5f);
    k = rand_vec((size_t)s.nk * c.Hkv * c.hd, seed + 1, -1.5f, 1.5f);
    v = rand_vec((size_t)s.nk * c.Hkv * c.hd, seed + 2);
    r = rand_vec((size_t)s.nq * c.H * c.hd, seed + 3);
  }
};

// Naive softmax attention in double; mask key_pos <= query_pos.
void attention_ref(const AttnCase& c, const AttnData& d, std::vector<double>& o, std::vector<double>& lse) {
  const int nq = d.s.nq, nk = d.s.nk, H = c.H, Hkv = c.Hkv, hd = c.hd;
  o.assign((size_t)nq * H * hd, 0.0);
  lse.assign((size_t)H * nq, 0.0);
  const double scale = 1.0 / std::sqrt((double)hd);
  for (int h = 0; h < H; ++h) {
    const int g = h / (H / Hkv);
    for (int i = 0; i < nq; ++i) {
      std::vector<double> sc(nk, -INFINITY);
      double mx = -INFINITY;
      for (int j = 0; j < nk; ++j) {
        if (c.kpos[j] > c.qpos[i]) continue;
        double a = 0;
        for (int t = 0; t < hd; ++t)
          a += (double)d.q[((size_t)i * H + h) * hd + t] * d.k[((size_t)j * Hkv + g) * hd + t];
        sc[j] = a * scale;
        mx = std::max(mx, sc[j]);
      }
      double sum = 0;
      for (int j = 0; j < nk; ++j) sum += std::exp(sc[j] - mx);
      lse[(size_t)h * nq + i] = mx + std::log(sum);
      for (int j = 0; j < nk; ++j) {
        const double p = std::exp(sc[j] - mx) / sum;
        for (int t = 0; t < hd; ++t) o[((size_t)i * H + h) * hd + t] += p * d.v[((size_t)j * Hkv + g) * hd + t];
      }
    }
  }
}

class Attention : public ::testing::TestWithParam<AttnCase> {};

TEST_P(Attention, ForwardMatchesNaive) {
  const AttnCase& c = GetParam();
  AttnData d(c);
  std::vector<float> o(d.r.size(), std::numeric_limits<float>::quiet_NaN()), lse((size_t)c.H * d.s.nq);
  kern::attention_forward(o.data(), lse.data(), d.q.data(), d.k.data(), d.v.data(), c.qpos.data(), c.kpos.data(), d.s);
  std::vector<double> o_ref, lse_ref;
  attention_ref(c, d, o_ref, lse_ref);
  expect_all_close(o_ref, o.data(), 1e-5, 1e-6, "o");
  expect_all_close(lse_ref, lse.data(), 1e-5, 1e-6, "lse");
}

TEST_P(Attention, BackwardFiniteDifference) {
  const AttnCase& c = GetParam();
  AttnData d(c);
  std::vector<float> o(d.r.size()), lse((size_t)c.H * d.s.nq);
  auto loss = [&] {
    kern::attention_forward(o.data(), lse.data(), d.q.data(), d.k.data(), d.v.data(), c.qpos.data(), c.kpos.data(),
                            d.s);
    return dot(o, d.r);
  };
  loss();
  // dq written (over garbage); dk, dv accumulated onto pre-filled values.
  std::vector<float> dq(d.q.size(), std::numeric_limits<float>::quiet_NaN());
  const std::vector<float> dk0 = rand_vec(d.k.size(), 95), dv0 = rand_vec(d.v.size(), 96);
  std::vector<float> dk = dk0, dv = dv0;
  kern::attention_backward(dq.data(), dk.data(), dv.data(), d.r.data(), o.data(), lse.data(), d.q.data(), d.k.data(),
                           d.v.data(), c.qpos.data(), c.kpos.data(), d.s);
  ThreadScope one(1);  // ~1000 forward calls: keep them off a loaded machine's OpenMP barriers
  expect_all_close(fd_all(d.q, loss), dq.data(), 2e-3, 3e-4, "dq vs FD");
  expect_all_close(fd_all(d.k, loss), minus(dk, dk0).data(), 2e-3, 3e-4, "dk - dk0 vs FD");
  expect_all_close(fd_all(d.v, loss), minus(dv, dv0).data(), 2e-3, 3e-4, "dv - dv0 vs FD");
}

INSTANTIATE_TEST_SUITE_P(
    Kernels, Attention,
    ::testing::Values(AttnCase{"Causal", iota_vec(6), iota_vec(6), 2, 2, 4},
                      AttnCase{"CompactedGaps", {0, 2, 3, 7, 9}, {0, 2, 3, 7, 9}, 2, 2, 4},
                      AttnCase{"KvShareSubsetQueries", {1, 4, 5, 8}, iota_vec(10), 2, 2, 4},
                      AttnCase{"GqaTwoKvHeads", iota_vec(5), iota_vec(5), 4, 2, 4},
                      AttnCase{"GqaOneKvHead", {0, 2, 3, 7, 9}, {0, 2, 3, 7, 9}, 4, 1, 4},
                      AttnCase{"GqaKvShare", {0, 3, 6}, iota_vec(7), 4, 2, 6},
                      AttnCase{"GqaOneKvHeadKvShare", {2, 5}, iota_vec(6), 4, 1, 4},
                      // head_dim a multiple of 16: the register-tiled path (attention_tiles.cpp) on AVX-512 builds
                      AttnCase{"TilesCausal", iota_vec(9), iota_vec(9), 2, 2, 16},
                      AttnCase{"TilesGqaCompacted", {0, 2, 3, 7, 9, 12, 13}, {0, 2, 3, 7, 9, 12, 13}, 6, 2, 32},
                      AttnCase{"TilesKvShare", {1, 4, 5, 8}, iota_vec(37), 2, 1, 64}),
    [](const ::testing::TestParamInfo<AttnCase>& i) { return i.param.name; });

// Sets longer than one query block (the kernels process queries in blocks of 64
// and skip keys no query of a block can see): forward against the naive
// reference, backward by directional derivatives along random directions.
TEST(Attention, LongSetsSpanningQueryBlocks) {
  std::vector<int> gaps;
  for (int p = 0; p < 400 && gaps.size() < 150; p += 1 + (p * 7) % 3) gaps.push_back(p);
  std::vector<int> sub;
  for (int p = 3; p < 200; p += 2) sub.push_back(p);
  for (const AttnCase& c :
       {AttnCase{"LongCompacted", gaps, gaps, 4, 2, 8}, AttnCase{"LongKvShare", sub, iota_vec(200), 2, 1, 8},
        AttnCase{"LongCausal", iota_vec(130), iota_vec(130), 2, 2, 8},
        AttnCase{"LongCompactedTiles", gaps, gaps, 6, 2, 32},
        AttnCase{"LongKvShareTiles", sub, iota_vec(200), 2, 1, 16},
        AttnCase{"LongCausalTiles", iota_vec(300), iota_vec(300), 3, 1, 64}}) {
    SCOPED_TRACE(c.name);
    AttnData d(c, 17);
    std::vector<float> o(d.r.size()), lse((size_t)c.H * d.s.nq);
    kern::attention_forward(o.data(), lse.data(), d.q.data(), d.k.data(), d.v.data(), c.qpos.data(), c.kpos.data(),
                            d.s);
    std::vector<double> o_ref, lse_ref;
    attention_ref(c, d, o_ref, lse_ref);
    expect_all_close(o_ref, o.data(), 1e-5, 1e-6, "o");
    expect_all_close(lse_ref, lse.data(), 1e-5, 1e-6, "lse");
    std::vector<float> dq(d.q.size()), dk(d.k.size(), 0.f), dv(d.v.size(), 0.f);
    kern::attention_backward(dq.data(), dk.data(), dv.data(), d.r.data(), o.data(), lse.data(), d.q.data(), d.k.data(),
                             d.v.data(), c.qpos.data(), c.kpos.data(), d.s);
    auto loss = [&] {
      std::vector<float> oo(d.r.size()), ll((size_t)c.H * d.s.nq);
      kern::attention_forward(oo.data(), ll.data(), d.q.data(), d.k.data(), d.v.data(), c.qpos.data(), c.kpos.data(),
                              d.s);
      double acc = 0;
      for (size_t i = 0; i < oo.size(); ++i) acc += (double)oo[i] * d.r[i];
      return acc;
    };
    for (auto [x, g, name] : {std::tuple{&d.q, &dq, "dq"}, std::tuple{&d.k, &dk, "dk"}, std::tuple{&d.v, &dv, "dv"}})
      for (unsigned dir = 0; dir < 3; ++dir) {
        const std::vector<float> e = rand_vec(x->size(), 500 + dir), x0 = *x;
        const double h = 1e-2;
        for (size_t i = 0; i < x->size(); ++i) (*x)[i] = x0[i] + (float)h * e[i];
        const double lp = loss();
        for (size_t i = 0; i < x->size(); ++i) (*x)[i] = x0[i] - (float)h * e[i];
        const double lm = loss();
        *x = x0;
        double an = 0;
        for (size_t i = 0; i < x->size(); ++i) an += (double)(*g)[i] * e[i];
        EXPECT_NEAR((lp - lm) / (2 * h), an, 2e-3 * std::fabs(an) + 2e-3) << name << " direction " << dir;
      }
  }
}

// ============================================================================ Softmax cross-entropy
double xent_ref(const std::vector<float>& logits, const std::vector<int32_t>& tgt, int V, double scale,
                std::vector<double>* grad) {
  const int n = (int)tgt.size();
  double total = 0;
  if (grad) grad->assign(logits.size(), 0.0);
  for (int i = 0; i < n; ++i) {
    double mx = -INFINITY;
    for (int j = 0; j < V; ++j) mx = std::max(mx, (double)logits[(size_t)i * V + j]);
    double s = 0;
    for (int j = 0; j < V; ++j) s += std::exp(logits[(size_t)i * V + j] - mx);
    const double lse = mx + std::log(s);
    total += lse - logits[(size_t)i * V + tgt[i]];
    if (grad)
      for (int j = 0; j < V; ++j)
        (*grad)[(size_t)i * V + j] = scale * (std::exp(logits[(size_t)i * V + j] - lse) - (j == tgt[i] ? 1 : 0));
  }
  return total;
}

TEST(SoftmaxXent, LossGradientAndScale) {
  const int n = 4, V = 11;
  const float scale = 0.25f;
  std::vector<float> logits = rand_vec(n * V, 101, -3.f, 3.f);
  const std::vector<int32_t> tgt = {0, 10, 3, 3};
  std::vector<double> g_ref;
  const double loss_ref = xent_ref(logits, tgt, V, scale, &g_ref);
  std::vector<float> g = logits;
  const double loss = kern::softmax_xent(g.data(), tgt.data(), n, V, scale);
  EXPECT_NEAR(loss, loss_ref, 1e-5 * loss_ref);
  expect_all_close(g_ref, g.data(), 1e-5, 1e-7, "grad vs reference");
  // The gradient is that of scale * (returned loss sum): check by finite differences.
  std::vector<float> work(logits.size());
  auto f = [&] {
    work = logits;
    return scale * kern::softmax_xent(work.data(), tgt.data(), n, V, scale);
  };
  ThreadScope one(1);
  expect_all_close(fd_all(logits, f), g.data(), 1e-3, 1e-4, "grad vs FD");
}

TEST(SoftmaxXent, LargeLogitsStayFinite) {
  const int n = 3, V = 6;
  std::vector<float> logits = {1000.f,  999.f,   -1000.f, 0.f,     998.5f,  1000.f,   //
                               -1000.f, -1001.f, -999.f,  -1000.f, -1000.f, -1002.f,  //
                               3e4f,    -3e4f,   0.f,     1.f,     2.f,     3.f};
  const std::vector<int32_t> tgt = {1, 2, 1};
  std::vector<double> g_ref;
  const double loss_ref = xent_ref(logits, tgt, V, 1.0, &g_ref);
  std::vector<float> g = logits;
  const double loss = kern::softmax_xent(g.data(), tgt.data(), n, V, 1.f);
  ASSERT_TRUE(std::isfinite(loss));
  EXPECT_NEAR(loss, loss_ref, 1e-5 * loss_ref);
  expect_all_close(g_ref, g.data(), 1e-5, 1e-7, "grad");
}

TEST(SoftmaxXent, VeryNegativeTargetLogitGivesLargeFiniteLoss) {
  const int V = 5;
  for (float t : {-1e4f, -1e30f}) {
    std::vector<float> logits = {0.5f, -0.25f, t, 1.f, 0.f};
    const std::vector<int32_t> tgt = {2};
    std::vector<double> g_ref;
    const double loss_ref = xent_ref(logits, tgt, V, 2.0, &g_ref);
    std::vector<float> g = logits;
    const double loss = kern::softmax_xent(g.data(), tgt.data(), 1, V, 2.f);
    SCOPED_TRACE("target logit " + std::to_string(t));
    ASSERT_TRUE(std::isfinite(loss));
    EXPECT_NEAR(loss, loss_ref, 1e-6 * loss_ref);
    EXPECT_GE(loss, -(double)t);
    expect_all_close(g_ref, g.data(), 1e-5, 1e-7, "grad");
    EXPECT_FLOAT_EQ(g[2], -2.f);
  }
}

TEST(SoftmaxXent, SameBitsWithOneAndTwoThreads) {
  const int n = 70, V = 33;
  const std::vector<float> logits = rand_vec(n * V, 111, -5.f, 5.f);
  std::vector<int32_t> tgt(n);
  for (int i = 0; i < n; ++i) tgt[i] = (i * 7) % V;
  std::vector<float> g1 = logits, g2 = logits;
  double l1, l2;
  {
    ThreadScope ts(1);
    l1 = kern::softmax_xent(g1.data(), tgt.data(), n, V, 0.5f);
  }
  {
    ThreadScope ts(2);
    l2 = kern::softmax_xent(g2.data(), tgt.data(), n, V, 0.5f);
  }
  EXPECT_EQ(std::memcmp(&l1, &l2, sizeof l1), 0) << l1 << " vs " << l2;
  EXPECT_TRUE(same_bits(g1, g2));
}

// The fused bf16-gradient form is bitwise the fp32 form followed by cast_to_bf16 (what the head
// of a bf16 run did before the fusion): same loss bits, same gradient bits.
TEST(SoftmaxXent, Bf16FormIsTheFp32FormRounded) {
  const int n = 37, V = 1001;
  const std::vector<float> logits = rand_vec(n * V, 112, -8.f, 8.f);
  std::vector<int32_t> tgt(n);
  for (int i = 0; i < n; ++i) tgt[i] = (i * 13) % V;
  std::vector<float> g32 = logits, scratch = logits;
  std::vector<kern::bf16> want(n * V), got(n * V);
  const double l32 = kern::softmax_xent(g32.data(), tgt.data(), n, V, 0.125f);
  kern::cast_to_bf16(want.data(), g32.data(), n * V);
  const double l16 = kern::softmax_xent_bf16(scratch.data(), got.data(), tgt.data(), n, V, 0.125f);
  EXPECT_EQ(std::memcmp(&l32, &l16, sizeof l32), 0) << l32 << " vs " << l16;
  EXPECT_EQ(std::memcmp(want.data(), got.data(), want.size() * sizeof(kern::bf16)), 0);
}

// The bf16-output forms of RMSNorm and SwiGLU are bitwise the fp32 forms followed by
// cast_to_bf16 (what a bf16 layer did before they existed).
TEST(Bf16Outputs, NormAndSwigluAreTheFp32FormsRounded) {
  const int n = 70, d = 96;
  const std::vector<float> x = rand_vec(n * d, 113, -3.f, 3.f), w = rand_vec(d, 114, -1.f, 1.f);
  std::vector<float> y(n * d), r32(n), r16(n);
  std::vector<kern::bf16> want(n * d), got(n * d);
  kern::rmsnorm_forward(y.data(), r32.data(), x.data(), w.data(), n, d, 1e-5f);
  kern::cast_to_bf16(want.data(), y.data(), n * d);
  kern::rmsnorm_forward_bf16(got.data(), r16.data(), x.data(), w.data(), n, d, 1e-5f);
  EXPECT_EQ(std::memcmp(want.data(), got.data(), want.size() * sizeof(kern::bf16)), 0) << "rmsnorm";
  EXPECT_TRUE(same_bits(r32, r16));
  const std::vector<float> g = rand_vec(n * d, 115, -6.f, 6.f);
  kern::swiglu_forward(y.data(), g.data(), x.data(), n * d);
  kern::cast_to_bf16(want.data(), y.data(), n * d);
  kern::swiglu_forward_bf16(got.data(), g.data(), x.data(), n * d);
  EXPECT_EQ(std::memcmp(want.data(), got.data(), want.size() * sizeof(kern::bf16)), 0) << "swiglu";
  // SwiGLU's backward: dg and du rounded from the very values the fp32 form writes.
  const std::vector<float> dh = rand_vec(n * d, 116, -2.f, 2.f);
  std::vector<float> dg(n * d), du(n * d);
  std::vector<kern::bf16> want_du(n * d), got_du(n * d);
  kern::swiglu_backward(dg.data(), du.data(), dh.data(), g.data(), x.data(), n * d);
  kern::cast_to_bf16(want.data(), dg.data(), n * d);
  kern::cast_to_bf16(want_du.data(), du.data(), n * d);
  kern::swiglu_backward_bf16(got.data(), got_du.data(), dh.data(), g.data(), x.data(), n * d);
  EXPECT_EQ(std::memcmp(want.data(), got.data(), want.size() * sizeof(kern::bf16)), 0) << "swiglu backward dg";
  EXPECT_EQ(std::memcmp(want_du.data(), got_du.data(), want.size() * sizeof(kern::bf16)), 0) << "swiglu backward du";
}

// AdamW's bf16 form: parameters and moments bitwise those of the fp32 form, and the bf16 copy
// bitwise cast_to_bf16 of the updated parameters (what a bf16 run's next forward did before).
TEST(Bf16Outputs, AdamWWritesTheRoundedParameters) {
  const int64_t n = 100003;  // past the threading threshold, and an odd tail
  const std::vector<float> p0 = rand_vec(n, 117, -1.f, 1.f), g = rand_vec(n, 118, -1.f, 1.f);
  std::vector<float> m0 = rand_vec(n, 119, -0.1f, 0.1f), v0 = rand_vec(n, 120, 0.f, 0.01f);
  const kern::AdamWParams a{3e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 7, 0.8f};
  std::vector<float> p1 = p0, m1 = m0, v1 = v0, p2 = p0, m2 = m0, v2 = v0;
  std::vector<kern::bf16> want(n), got(n);
  kern::adamw_update(p1.data(), g.data(), m1.data(), v1.data(), n, a);
  kern::cast_to_bf16(want.data(), p1.data(), n);
  kern::adamw_update_bf16(p2.data(), got.data(), g.data(), m2.data(), v2.data(), n, a);
  EXPECT_TRUE(same_bits(p1, p2));
  EXPECT_TRUE(same_bits(m1, m2));
  EXPECT_TRUE(same_bits(v1, v2));
  EXPECT_EQ(std::memcmp(want.data(), got.data(), want.size() * sizeof(kern::bf16)), 0);
}

// ============================================================================ AdamW
// torch.optim.AdamW (single tensor): p *= 1 - lr*wd; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
// p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps).
struct AdamRef {
  std::vector<double> p, m, v;
  void step(const std::vector<float>& g, const kern::AdamWParams& a) {
    const double lr = a.lr, b1 = a.beta1, b2 = a.beta2, eps = a.eps, wd = a.weight_decay;
    const double bc1 = 1 - std::pow(b1, (double)a.step), bc2 = 1 - std::pow(b2, (double)a.step);
    for (size_t i = 0; i < p.size(); ++i) {
      p[i] *= 1 - lr * wd;
      m[i] = b1 * m[i] + (1 - b1) * g[i];
      v[i] = b2 * v[i] + (1 - b2) * (double)g[i] * g[i];
      const double denom = std::sqrt(v[i]) / std::sqrt(bc2) + eps;
      p[i] -= lr / bc1 * m[i] / denom;
    }
  }
};

void run_adamw(float wd) {
  const size_t n = 12;
  std::vector<float> p = rand_vec(n, 121, -2.f, 2.f), m(n, 0.f), v(n, 0.f);
  AdamRef ref{to_double(p), std::vector<double>(n, 0.0), std::vector<double>(n, 0.0)};
  for (int t = 1; t <= 3; ++t) {
    std::vector<float> g = rand_vec(n, 130 + t, -1.f, 1.f);
    g[0] = 0.f;               // no gradient: only decay moves it (from m, v after step 1)
    g[1] = 1e-8f * (float)t;  // sqrt(v_hat) ~ eps: eps placement matters
    g[2] = -3e-8f;
    g[3] = 50.f * (t == 2 ? -1 : 1);  // large, sign-flipping
    const kern::AdamWParams a{0.05f, 0.9f, 0.999f, 1e-8f, wd, t};
    kern::adamw_update(p.data(), g.data(), m.data(), v.data(), (int64_t)n, a);
    ref.step(g, a);
    SCOPED_TRACE("step " + std::to_string(t) + " wd " + std::to_string(wd));
    expect_all_close(ref.p, p.data(), 1e-5, 1e-6, "param");
    expect_all_close(ref.m, m.data(), 1e-5, 1e-12, "m");
    expect_all_close(ref.v, v.data(), 1e-5, 1e-24, "v");
  }
}

TEST(AdamW, MatchesTorchFormulaOverThreeSteps) { run_adamw(0.5f); }
TEST(AdamW, MatchesTorchFormulaWithoutWeightDecay) { run_adamw(0.f); }

TEST(AdamW, GradScaleEqualsPrescaledGradient) {
  const size_t n = 1000;
  const std::vector<float> g = rand_vec(n, 41);
  std::vector<float> p1 = rand_vec(n, 42), m1(n, 0.f), v1(n, 0.f), p2 = p1, m2 = m1, v2 = v1, gs(n);
  for (size_t i = 0; i < n; ++i) gs[i] = g[i] * 0.37f;
  for (int64_t step = 1; step <= 2; ++step) {
    kern::adamw_update(p1.data(), g.data(), m1.data(), v1.data(), n, {1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f, step, 0.37f});
    kern::adamw_update(p2.data(), gs.data(), m2.data(), v2.data(), n, {1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f, step});
  }
  EXPECT_EQ(std::memcmp(p1.data(), p2.data(), n * sizeof(float)), 0);
  EXPECT_EQ(std::memcmp(v1.data(), v2.data(), n * sizeof(float)), 0);
}

TEST(AdamW, ZeroGradientZeroDecayLeavesParamUnchanged) {
  std::vector<float> p = {1.5f, -2.f, 0.25f}, g(3, 0.f), m(3, 0.f), v(3, 0.f);
  const std::vector<float> p0 = p;
  kern::adamw_update(p.data(), g.data(), m.data(), v.data(), 3, {1e-3f, 0.9f, 0.95f, 1e-8f, 0.f, 1});
  EXPECT_TRUE(same_bits(p, p0));
}

// ============================================================================ helpers
TEST(SumSquares, MatchesDoubleLoopAndIsThreadIndependent) {
  for (int64_t n : {(int64_t)0, (int64_t)1, (int64_t)4097, (int64_t)100003}) {
    // Full-precision values over several octaves (quantised ones would make every
    // partial sum exact in double and hide a change of summation order).
    std::mt19937 gen(141);
    std::uniform_real_distribution<float> mant(1.f, 2.f);
    std::uniform_int_distribution<int> ex(-6, 6);
    std::vector<float> x((size_t)n);
    for (auto& a : x) a = std::ldexp(mant(gen), ex(gen)) * (gen() & 1 ? 1.f : -1.f);
    double ref = 0;
    for (float a : x) ref += (double)a * a;
    double s1, s2;
    {
      ThreadScope ts(1);
      s1 = kern::sum_squares(x.data(), n);
    }
    {
      ThreadScope ts(2);
      s2 = kern::sum_squares(x.data(), n);
    }
    SCOPED_TRACE("n=" + std::to_string(n));
    EXPECT_NEAR(s1, ref, 1e-12 * (1 + ref));
    EXPECT_EQ(std::memcmp(&s1, &s2, sizeof s1), 0) << s1 << " vs " << s2;
  }
}

TEST(Helpers, ScaleAndAddInplace) {
  const std::vector<float> x = rand_vec(70000, 151), y0 = rand_vec(70000, 152);  // > 65536: parallel path
  std::vector<float> y = y0, z = x;
  kern::add_inplace(y.data(), x.data(), (int64_t)y.size());
  kern::scale_inplace(z.data(), -0.5f, (int64_t)z.size());
  for (size_t i = 0; i < y.size(); ++i) {
    ASSERT_EQ(y[i], y0[i] + x[i]) << i;
    ASSERT_EQ(z[i], -0.5f * x[i]) << i;
  }
}

// ============================================================================ determinism
TEST(Determinism, AttentionSameBitsWithOneAndTwoThreads) {
  // Enough heads and work per head that the second thread takes part in the head loop; several
  // query blocks, so the tiled backward's two parts per head both have work. head_dim 16: the
  // tiled path, 12: the general one.
  for (int hd : {16, 12}) {
    SCOPED_TRACE("head_dim " + std::to_string(hd));
    AttnCase c{"det", iota_vec(200), iota_vec(200), 8, 2, hd};
    AttnData d(c, 161);
    auto run = [&](int threads, std::vector<float>& o, std::vector<float>& dq, std::vector<float>& dk,
                   std::vector<float>& dv) {
      ThreadScope ts(threads);
      std::vector<float> lse((size_t)c.H * d.s.nq);
      o.assign(d.r.size(), 0.f);
      dq.assign(d.q.size(), 0.f);
      dk = rand_vec(d.k.size(), 162);
      dv = rand_vec(d.v.size(), 163);
      kern::attention_forward(o.data(), lse.data(), d.q.data(), d.k.data(), d.v.data(), c.qpos.data(), c.kpos.data(),
                              d.s);
      kern::attention_backward(dq.data(), dk.data(), dv.data(), d.r.data(), o.data(), lse.data(), d.q.data(),
                               d.k.data(), d.v.data(), c.qpos.data(), c.kpos.data(), d.s);
    };
    std::vector<float> o1, dq1, dk1, dv1, o2, dq2, dk2, dv2;
    run(1, o1, dq1, dk1, dv1);
    run(2, o2, dq2, dk2, dv2);
    EXPECT_TRUE(same_bits(o1, o2));
    EXPECT_TRUE(same_bits(dq1, dq2));
    EXPECT_TRUE(same_bits(dk1, dk2));
    EXPECT_TRUE(same_bits(dv1, dv2));
  }
}

TEST(Determinism, RMSNormSameBitsWithOneAndTwoThreads) {
  const int n = 256, d = 256;  // n >= 64 and n*d >= 65536: both parallel loops engage
  const std::vector<float> x = rand_vec((size_t)n * d, 171), w = rand_vec(d, 172, 0.5f, 1.5f),
                           dy = rand_vec((size_t)n * d, 173);
  auto run = [&](int threads, std::vector<float>& y, std::vector<float>& dx, std::vector<float>& dw) {
    ThreadScope ts(threads);
    std::vector<float> rstd(n);
    y.assign((size_t)n * d, 0.f);
    dx = rand_vec((size_t)n * d, 174);
    dw = rand_vec(d, 175);
    kern::rmsnorm_forward(y.data(), rstd.data(), x.data(), w.data(), n, d, 1e-5f);
    kern::rmsnorm_backward(dx.data(), dx.data(), dw.data(), dy.data(), x.data(), w.data(), rstd.data(), n, d);
  };
  std::vector<float> y1, dx1, dw1, y2, dx2, dw2;
  run(1, y1, dx1, dw1);
  run(2, y2, dx2, dw2);
  EXPECT_TRUE(same_bits(y1, y2));
  EXPECT_TRUE(same_bits(dx1, dx2));
  EXPECT_TRUE(same_bits(dw1, dw2));
}

}  // namespace
