// Backend conformance: every operation of kern::Backend (kernels/backend.h), called through the
// interface on the backend's own buffers, against a double-precision reference written here from
// the operation's definition. The suite is parameterised by backend: a new backend (CUDA) adds
// its factory to backends() and must pass the same tests.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include "kernels/backend.h"
#include "kernels/cpu/cpu_backend.h"
#ifdef MOR_TEST_CUDA
#include <cstdlib>

#include "kernels/cuda/cuda_backend.h"
#endif

namespace {

using mor::kern::AdamWParams;
using mor::kern::AttnShape;
using mor::kern::Backend;
using mor::kern::Buffer;
using mor::kern::RopeTable;
using V = std::vector<float>;
using D = std::vector<double>;

struct Factory {
  std::string name;
  std::function<std::unique_ptr<Backend>()> make;
};
void PrintTo(const Factory& f, std::ostream* os) { *os << f.name; }
#ifdef MOR_TEST_CUDA
// The same suite on the CUDA backend (test_backend_conformance_cuda, ctest label gpu): device 0, or
// MOR_CUDA_DEVICE. Tolerances are the fp32 ones below for every fp32 operation; the bf16 GEMMs
// use expect_bf16_gemm's bound and the casts are exact (docs/TESTING.md lists them per op).
std::vector<Factory> backends() {
  return {{"cuda", [] {
             const char* d = std::getenv("MOR_CUDA_DEVICE");
             return mor::kern::make_cuda_backend(d ? std::atoi(d) : 0);
           }}};
}
// The attention tests run on each CUDA attention kernel: the simple one (backends()) and the
// fused one (CudaOptions::Attention::Flash: tiles for head_dim 64 and 128, the simple kernel for
// the other head dims).
std::vector<Factory> attention_backends() {
  std::vector<Factory> v = backends();
  v.push_back({"cuda_flash", [] {
                 const char* d = std::getenv("MOR_CUDA_DEVICE");
                 mor::kern::CudaOptions o;
                 o.attention = mor::kern::CudaOptions::Attention::Flash;
                 return mor::kern::make_cuda_backend(d ? std::atoi(d) : 0, o);
               }});
  return v;
}
#else
std::vector<Factory> backends() { return {{"cpu", mor::kern::make_cpu_backend}}; }
std::vector<Factory> attention_backends() { return backends(); }
#endif

V rand_vec(size_t n, unsigned seed, float scale = 1.f) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(0.f, scale);
  V v(n);
  for (auto& x : v) x = d(g);
  return v;
}

class Conformance : public ::testing::TestWithParam<Factory> {
 protected:
  void SetUp() override { be_ = GetParam().make(); }
  Backend& be() { return *be_; }
  template <class T>
  Buffer<T> up(const std::vector<T>& v) {
    Buffer<T> b(be());
    b.from_host(v);
    return b;
  }
  template <class T>
  std::vector<T> down(const Buffer<T>& b) {
    be().synchronize();
    return b.to_host_vector();
  }
  // |got - want| <= atol + rtol * |want| everywhere, with the first offender named.
  static void expect_close(const D& want, const V& got, double rtol, double atol, const std::string& what) {
    ASSERT_EQ(want.size(), got.size()) << what;
    for (size_t i = 0; i < want.size(); ++i)
      if (!(std::fabs(got[i] - want[i]) <= atol + rtol * std::fabs(want[i]))) {
        ADD_FAILURE() << what << "[" << i << "] = " << got[i] << ", want " << want[i];
        return;
      }
  }
  std::unique_ptr<Backend> be_;
};

D to_d(const V& v) { return D(v.begin(), v.end()); }

// ---- memory ---------------------------------------------------------------------------
TEST_P(Conformance, BuffersRoundTripCopyZeroAndResize) {
  const V x = rand_vec(1000, 1);
  Buffer<float> a = up(x), b(be(), 1000);
  b.copy_from(a.data(), a.size());
  EXPECT_EQ(down(b), x);
  be().copy(b.data() + 10, a.data(), 5 * sizeof(float));  // a copy at an offset
  V want = x;
  std::copy(x.begin(), x.begin() + 5, want.begin() + 10);
  EXPECT_EQ(down(b), want);
  b.zero();
  EXPECT_EQ(down(b), V(1000, 0.f));
  b.resize(10);  // shrinking keeps the allocation
  EXPECT_EQ(b.size(), 10);
  b.resize(5000);
  b.assign_zero(5000);
  EXPECT_EQ(down(b), V(5000, 0.f));
  Buffer<int32_t> ids = up(std::vector<int32_t>{3, -1, 7});
  EXPECT_EQ(down(ids), (std::vector<int32_t>{3, -1, 7}));
  Buffer<float> moved = std::move(a);
  EXPECT_EQ(down(moved), x);
  EXPECT_EQ(a.size(), 0);
  // discard: the contents may go, the buffer stays usable.
  be().discard(moved.data(), moved.size() * sizeof(float));
  moved.from_host(x);
  EXPECT_EQ(down(moved), x);
}

// ---- GEMM and linear layers -------------------------------------------------------------
D gemm_ref(bool ta, bool tb, int M, int N, int K, double alpha, const V& A, const V& B, double beta, const V& C) {
  D c(C.begin(), C.end());
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < N; ++j) {
      double s = 0;
      for (int k = 0; k < K; ++k) s += (double)(ta ? A[k * M + i] : A[i * K + k]) * (tb ? B[j * K + k] : B[k * N + j]);
      c[i * N + j] = alpha * s + beta * C[i * N + j];
    }
  return c;
}

TEST_P(Conformance, GemmAllTransposes) {
  const int M = 37, N = 29, K = 53;
  for (int t = 0; t < 4; ++t) {
    const bool ta = t & 1, tb = t & 2;
    const V A = rand_vec(M * K, 10 + t), B = rand_vec(K * N, 20 + t), C = rand_vec(M * N, 30 + t);
    Buffer<float> a = up(A), b = up(B), c = up(C);
    be().gemm(ta, tb, M, N, K, 0.5f, a.data(), ta ? M : K, b.data(), tb ? K : N, 2.f, c.data(), N);
    expect_close(gemm_ref(ta, tb, M, N, K, 0.5, A, B, 2.0, C), down(c), 1e-5, 1e-5,
                 "gemm ta=" + std::to_string(ta) + " tb=" + std::to_string(tb));
  }
}

TEST_P(Conformance, LinearForwardPairAndBackward) {
  const int n = 19, in = 24, out = 13, out2 = 7;
  const V X = rand_vec(n * in, 40), W = rand_vec(out * in, 41), W2 = rand_vec(out2 * in, 42);
  Buffer<float> x = up(X), w = up(W), w2 = up(W2), y(be(), n * out), y2(be(), n * out2);
  be().linear_forward(y.data(), x.data(), w.data(), n, in, out);
  const D yref = gemm_ref(false, true, n, out, in, 1, X, W, 0, V(n * out, 0.f));
  expect_close(yref, down(y), 1e-5, 1e-5, "linear_forward");
  be().linear_forward_pair(y.data(), w.data(), out, y2.data(), w2.data(), out2, x.data(), n, in);
  expect_close(yref, down(y), 1e-5, 1e-5, "linear_forward_pair y1");
  expect_close(gemm_ref(false, true, n, out2, in, 1, X, W2, 0, V(n * out2, 0.f)), down(y2), 1e-5, 1e-5,
               "linear_forward_pair y2");
  // dx = dy W (written, then accumulated), dW += dy^T x.
  const V DY = rand_vec(n * out, 43), DX0 = rand_vec(n * in, 44), DW0 = rand_vec(out * in, 45);
  for (bool acc : {false, true}) {
    Buffer<float> dy = up(DY), dx = up(DX0), dw = up(DW0);
    be().linear_backward(dx.data(), dw.data(), dy.data(), x.data(), w.data(), n, in, out, acc);
    expect_close(gemm_ref(false, false, n, in, out, 1, DY, W, acc ? 1 : 0, DX0), down(dx), 1e-5, 1e-5,
                 acc ? "linear_backward dx (accumulate)" : "linear_backward dx");
    expect_close(gemm_ref(true, false, out, in, n, 1, DY, X, 1, DW0), down(dw), 1e-5, 1e-5, "linear_backward dW");
  }
}

// ---- bf16 -------------------------------------------------------------------------------------
using mor::kern::bf16;

// The bf16 nearest to x, ties to the even mantissa, from the definition: of the two bf16 values
// around x (truncation and the next one away from zero) the closer one, compared in double.
uint16_t nearest_bf16(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  if (std::isnan(x)) return 0;  // not used: NaN is checked separately
  const uint16_t lo = (uint16_t)(u >> 16), hi = (uint16_t)(lo + 1);
  auto val = [](uint16_t b) {  // inf as 2^128: IEEE rounds as if the exponent were unbounded, then overflows
    if ((b & 0x7fff) == 0x7f80) return (b & 0x8000) ? -0x1p128 : 0x1p128;
    const uint32_t w = (uint32_t)b << 16;
    float f;
    std::memcpy(&f, &w, 4);
    return (double)f;
  };
  if ((lo & 0x7f80) == 0x7f80) return lo;  // inf stays inf
  const double dl = std::fabs((double)x - val(lo)), dh = std::fabs((double)x - val(hi));
  if (dl != dh) return dl < dh ? lo : hi;
  return (lo & 1) ? hi : lo;
}

V bf16_rounded(const V& v) {  // each value rounded to bf16 and back (exact in fp32)
  V r(v.size());
  for (size_t i = 0; i < v.size(); ++i) r[i] = mor::kern::bf16_to_float(mor::kern::float_to_bf16(v[i]));
  return r;
}
V widen(const std::vector<bf16>& v) {  // bf16 values as fp32 (exact)
  V r(v.size());
  for (size_t i = 0; i < v.size(); ++i) r[i] = mor::kern::bf16_to_float(v[i]);
  return r;
}
std::vector<bf16> to_bf16(const V& v) {
  std::vector<bf16> r(v.size());
  for (size_t i = 0; i < v.size(); ++i) r[i] = mor::kern::float_to_bf16(v[i]);
  return r;
}

TEST_P(Conformance, CastsToBf16RoundToNearestEvenAndBackExactly) {
  const float inf = std::numeric_limits<float>::infinity(), big = std::numeric_limits<float>::max();
  V x = {0.f,
         -0.f,
         1.f,
         1.f + 0x1p-8f,
         1.f + 0x3p-8f,
         1.f + 0x1p-8f + 0x1p-20f,
         -(1.f + 0x3p-8f),
         3.1415927f,
         1e-40f /* subnormal */,
         0x1.fep127f,
         big,
         -big,
         inf,
         -inf,
         65504.f,
         1e-30f};
  for (float v : rand_vec(5000, 70, 3.f)) x.push_back(v);
  Buffer<float> src = up(x), back(be(), (int64_t)x.size());
  Buffer<bf16> h(be(), (int64_t)x.size());
  be().cast_to_bf16(h.data(), src.data(), (int64_t)x.size());
  be().cast_to_f32(back.data(), h.data(), (int64_t)x.size());
  const std::vector<bf16> got = down(h);
  const V got32 = down(back);
  for (size_t i = 0; i < x.size(); ++i) {
    ASSERT_EQ(got[i].bits, nearest_bf16(x[i])) << "cast_to_bf16(" << x[i] << ")";
    const uint32_t w = (uint32_t)got[i].bits << 16;
    float f;
    std::memcpy(&f, &w, 4);
    ASSERT_EQ(std::memcmp(&f, &got32[i], 4), 0) << "cast_to_f32 of bf16 " << got[i].bits;
  }
  // NaN stays NaN (quiet), whatever its payload.
  const float nan = std::numeric_limits<float>::quiet_NaN();
  uint32_t snan_bits = 0x7f800001u;
  float snan;
  std::memcpy(&snan, &snan_bits, 4);
  Buffer<float> n = up(V{nan, -nan, snan});
  Buffer<bf16> nh(be(), 3);
  be().cast_to_bf16(nh.data(), n.data(), 3);
  Buffer<float> nb(be(), 3);
  be().cast_to_f32(nb.data(), nh.data(), 3);
  for (float v : down(nb)) EXPECT_TRUE(std::isnan(v));
}

// bf16 operands, fp32 accumulation: against fp64 on the rounded operands the only error is fp32
// accumulation (rtol 1e-5); against fp64 on the unrounded fp32 operands each product is off by up
// to 2 * 2^-8 relative, so |error| <= 2^-7 * sum_k |a_k b_k| (+ accumulation).
void expect_bf16_gemm(const D& exact_rounded, const D& exact_fp32, const D& abs_products, const V& got,
                      const std::string& what) {
  ASSERT_EQ(got.size(), exact_rounded.size());
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_LE(std::fabs(got[i] - exact_rounded[i]), 1e-5 * abs_products[i] + 1e-6) << what << " [" << i << "]";
    ASSERT_LE(std::fabs(got[i] - exact_fp32[i]), 0x1p-7 * abs_products[i] + 1e-5 * abs_products[i] + 1e-6)
        << what << " vs fp32 [" << i << "]";
  }
}
V absv(const V& v) {
  V r(v);
  for (auto& x : r) x = std::fabs(x);
  return r;
}

TEST_P(Conformance, Bf16LinearForwardPairAndBackward) {
  // Small shapes (one GEMM call) and large ones (cut into per-thread blocks of rows or columns).
  for (auto [n, in, out] : {std::tuple{19, 24, 13}, std::tuple{300, 256, 272}, std::tuple{64, 96, 5000}}) {
    const std::string sh = " n=" + std::to_string(n) + " in=" + std::to_string(in) + " out=" + std::to_string(out);
    const V X = rand_vec((size_t)n * in, 80), W = rand_vec((size_t)out * in, 81), W2 = rand_vec((size_t)out * in, 82);
    const V Xr = bf16_rounded(X), Wr = bf16_rounded(W), W2r = bf16_rounded(W2);
    const V zero((size_t)n * out, 0.f);
    Buffer<bf16> x = up(to_bf16(X)), w = up(to_bf16(W)), w2 = up(to_bf16(W2));
    Buffer<float> y(be(), (int64_t)n * out), y2(be(), (int64_t)n * out);
    be().linear_forward_bf16(y.data(), x.data(), w.data(), n, in, out);
    const D yr = gemm_ref(false, true, n, out, in, 1, Xr, Wr, 0, zero);
    const D yabs = gemm_ref(false, true, n, out, in, 1, absv(X), absv(W), 0, zero);
    expect_bf16_gemm(yr, gemm_ref(false, true, n, out, in, 1, X, W, 0, zero), yabs, down(y),
                     "linear_forward_bf16" + sh);
    be().linear_forward_pair_bf16(y.data(), w.data(), out, y2.data(), w2.data(), out, x.data(), n, in);
    expect_bf16_gemm(yr, gemm_ref(false, true, n, out, in, 1, X, W, 0, zero), yabs, down(y), "pair y1" + sh);
    expect_bf16_gemm(gemm_ref(false, true, n, out, in, 1, Xr, W2r, 0, zero),
                     gemm_ref(false, true, n, out, in, 1, X, W2, 0, zero),
                     gemm_ref(false, true, n, out, in, 1, absv(X), absv(W2), 0, zero), down(y2), "pair y2" + sh);
    // dx (=|+=) dy W, dW += dy^T x; dx0 and dW0 are fp32 (the outputs are fp32).
    const V DY = rand_vec((size_t)n * out, 83), DYr = bf16_rounded(DY);
    const V DX0 = rand_vec((size_t)n * in, 84), DW0 = rand_vec((size_t)out * in, 85);
    for (bool acc : {false, true}) {
      Buffer<bf16> dy = up(to_bf16(DY));
      Buffer<float> dx = up(DX0), dw = up(DW0);
      be().linear_backward_bf16(dx.data(), dw.data(), dy.data(), x.data(), w.data(), n, in, out, acc);
      const V zx((size_t)n * in, 0.f), zw((size_t)out * in, 0.f);
      D dxr = gemm_ref(false, false, n, in, out, 1, DYr, Wr, acc ? 1 : 0, DX0);
      D dx32 = gemm_ref(false, false, n, in, out, 1, DY, W, acc ? 1 : 0, DX0);
      D dxabs = gemm_ref(false, false, n, in, out, 1, absv(DY), absv(W), 0, zx);
      if (acc)
        for (size_t i = 0; i < dxabs.size(); ++i) dxabs[i] += std::fabs(DX0[i]);
      expect_bf16_gemm(dxr, dx32, dxabs, down(dx), std::string("linear_backward_bf16 dx") + (acc ? " acc" : "") + sh);
      D dwabs = gemm_ref(true, false, out, in, n, 1, absv(DY), absv(X), 0, zw);
      for (size_t i = 0; i < dwabs.size(); ++i) dwabs[i] += std::fabs(DW0[i]);
      expect_bf16_gemm(gemm_ref(true, false, out, in, n, 1, DYr, Xr, 1, DW0),
                       gemm_ref(true, false, out, in, n, 1, DY, X, 1, DW0), dwabs, down(dw),
                       "linear_backward_bf16 dW" + sh);
    }
  }
}

// ---- RMSNorm ------------------------------------------------------------------------------
TEST_P(Conformance, RmsNormForwardAndBackward) {
  const int n = 70, d = 48;  // n >= 64: the threaded path on the CPU
  const float eps = 1e-5f;
  const V X = rand_vec(n * d, 50), W = rand_vec(d, 51), DY = rand_vec(n * d, 52), RES = rand_vec(n * d, 53),
          DW0 = rand_vec(d, 54);
  D y(n * d), rstd(n), dx(n * d), dw(DW0.begin(), DW0.end());
  for (int i = 0; i < n; ++i) {
    double ss = 0, c = 0;
    for (int j = 0; j < d; ++j) ss += (double)X[i * d + j] * X[i * d + j];
    rstd[i] = 1 / std::sqrt(ss / d + eps);
    for (int j = 0; j < d; ++j) c += (double)W[j] * DY[i * d + j] * X[i * d + j];
    for (int j = 0; j < d; ++j) {
      y[i * d + j] = X[i * d + j] * rstd[i] * W[j];
      dx[i * d + j] = rstd[i] * W[j] * DY[i * d + j] - std::pow(rstd[i], 3) * c / d * X[i * d + j];
      dw[j] += DY[i * d + j] * X[i * d + j] * rstd[i];
    }
  }
  Buffer<float> x = up(X), w = up(W), yb(be(), n * d), rb(be(), n);
  be().rmsnorm_forward(yb.data(), rb.data(), x.data(), w.data(), n, d, eps);
  expect_close(y, down(yb), 1e-5, 1e-6, "rmsnorm y");
  expect_close(rstd, down(rb), 1e-5, 0, "rmsnorm rstd");
  {  // the bf16-output form: y within one bf16 rounding, the same rstd
    Buffer<bf16> y16(be(), n * d);
    be().rmsnorm_forward_bf16(y16.data(), rb.data(), x.data(), w.data(), n, d, eps);
    expect_close(y, widen(down(y16)), 1.0 / 256, 1e-6, "rmsnorm_forward_bf16 y");
    expect_close(rstd, down(rb), 1e-5, 0, "rmsnorm_forward_bf16 rstd");
  }
  // dres null (written), separate, and dx itself (accumulate).
  for (int mode = 0; mode < 3; ++mode) {
    Buffer<float> dy = up(DY), dxb = up(mode == 2 ? RES : V(n * d, 7.f)), res = up(RES), dwb = up(DW0);
    const float* dres = mode == 0 ? nullptr : mode == 1 ? res.data() : dxb.data();
    be().rmsnorm_backward(dxb.data(), dres, dwb.data(), dy.data(), x.data(), w.data(), rb.data(), n, d);
    D want = dx;
    if (mode > 0)
      for (int i = 0; i < n * d; ++i) want[i] += RES[i];
    expect_close(want, down(dxb), 1e-4, 1e-5, "rmsnorm dx, mode " + std::to_string(mode));
    expect_close(dw, down(dwb), 1e-4, 1e-5, "rmsnorm dw");
  }
}

// ---- RoPE ----------------------------------------------------------------------------------
TEST_P(Conformance, RopeForwardMatchesFormulaAndBackwardInverts) {
  const int H = 3, hd = 8, max_pos = 40;
  const double theta = 10000;
  const std::vector<int32_t> P = {0, 1, 5, 2, 39, 17};
  const int n = (int)P.size(), half = hd / 2;
  RopeTable t(be(), hd, max_pos, theta);
  const V X = rand_vec(n * H * hd, 60);
  D want(X.begin(), X.end());
  for (int i = 0; i < n; ++i)
    for (int h = 0; h < H; ++h)
      for (int j = 0; j < half; ++j) {
        const double a = P[i] * std::pow(theta, -2.0 * j / hd), c = std::cos(a), s = std::sin(a);
        const size_t o = ((size_t)i * H + h) * hd;
        want[o + j] = X[o + j] * c - X[o + j + half] * s;
        want[o + j + half] = X[o + j + half] * c + X[o + j] * s;
      }
  Buffer<float> x = up(X);
  Buffer<int32_t> pos = up(P);
  be().rope_forward(x.data(), pos.data(), n, H, t);
  expect_close(want, down(x), 1e-5, 1e-6, "rope_forward");
  be().rope_backward(x.data(), pos.data(), n, H, t);  // the inverse rotation
  expect_close(to_d(X), down(x), 1e-5, 1e-6, "rope_backward(rope_forward(x))");
}

// ---- SwiGLU ---------------------------------------------------------------------------------
TEST_P(Conformance, SwigluForwardAndBackward) {
  const int n = 1000;
  const V G = rand_vec(n, 70, 3.f), U = rand_vec(n, 71), DH = rand_vec(n, 72);
  D h(n), dg(n), du(n);
  for (int i = 0; i < n; ++i) {
    const double s = 1 / (1 + std::exp(-(double)G[i])), silu = G[i] * s;
    h[i] = silu * U[i];
    du[i] = DH[i] * silu;
    dg[i] = DH[i] * U[i] * s * (1 + G[i] * (1 - s));
  }
  Buffer<float> g = up(G), u = up(U), dh = up(DH), hb(be(), n), dgb(be(), n), dub(be(), n);
  be().swiglu_forward(hb.data(), g.data(), u.data(), n);
  expect_close(h, down(hb), 1e-5, 1e-6, "swiglu h");
  Buffer<bf16> h16(be(), n);
  be().swiglu_forward_bf16(h16.data(), g.data(), u.data(), n);
  expect_close(h, widen(down(h16)), 1.0 / 256, 1e-6, "swiglu_forward_bf16 h");
  be().swiglu_backward(dgb.data(), dub.data(), dh.data(), g.data(), u.data(), n);
  expect_close(dg, down(dgb), 1e-5, 1e-6, "swiglu dg");
  expect_close(du, down(dub), 1e-5, 1e-6, "swiglu du");
  Buffer<bf16> dg16(be(), n), du16(be(), n);
  be().swiglu_backward_bf16(dg16.data(), du16.data(), dgb.data(), dub.data(), dh.data(), g.data(), u.data(), n);
  expect_close(dg, widen(down(dg16)), 1.0 / 256, 1e-6, "swiglu_backward_bf16 dg");
  expect_close(du, widen(down(du16)), 1.0 / 256, 1e-6, "swiglu_backward_bf16 du");
}

// ---- attention ------------------------------------------------------------------------------
// The attention tests: the Conformance fixture over attention_backends() (on the CUDA build, both
// attention kernels).
class AttentionConformance : public Conformance {};

// Reference in double: causal by position, GQA, with the analytic backward.
struct AttnRef {
  D o, lse, dq, dk, dv;
};
AttnRef attention_ref(const V& q, const V& k, const V& v, const V& dout, const std::vector<int32_t>& qp,
                      const std::vector<int32_t>& kp, const AttnShape& s) {
  const int hd = s.head_dim, grp = s.n_heads / s.n_kv_heads;
  const double scale = 1 / std::sqrt((double)hd);
  AttnRef r{D((size_t)s.nq * s.n_heads * hd), D((size_t)s.n_heads * s.nq), D((size_t)s.nq * s.n_heads * hd),
            D((size_t)s.nk * s.n_kv_heads * hd), D((size_t)s.nk * s.n_kv_heads * hd)};
  auto Q = [&](int i, int h) { return &q[((size_t)i * s.n_heads + h) * hd]; };
  auto KV = [&](const V& x, int j, int h) { return &x[((size_t)j * s.n_kv_heads + h / grp) * hd]; };
  for (int h = 0; h < s.n_heads; ++h)
    for (int i = 0; i < s.nq; ++i) {
      D p(s.nk, 0);
      double mx = -1e300;
      for (int j = 0; j < s.nk; ++j)
        if (kp[j] <= qp[i]) {
          double d = 0;
          for (int e = 0; e < hd; ++e) d += (double)Q(i, h)[e] * KV(k, j, h)[e];
          p[j] = d * scale;
          mx = std::max(mx, p[j]);
        }
      double sum = 0;
      for (int j = 0; j < s.nk; ++j) sum += kp[j] <= qp[i] ? std::exp(p[j] - mx) : 0;
      r.lse[(size_t)h * s.nq + i] = mx + std::log(sum);
      for (int j = 0; j < s.nk; ++j) p[j] = kp[j] <= qp[i] ? std::exp(p[j] - mx) / sum : 0;
      const float* g = &dout[((size_t)i * s.n_heads + h) * hd];
      D dp(s.nk, 0);
      double pdp = 0;
      for (int j = 0; j < s.nk; ++j) {
        for (int e = 0; e < hd; ++e) {
          r.o[((size_t)i * s.n_heads + h) * hd + e] += p[j] * KV(v, j, h)[e];
          dp[j] += (double)g[e] * KV(v, j, h)[e];
        }
        pdp += p[j] * dp[j];
      }
      for (int j = 0; j < s.nk; ++j) {
        const double ds = p[j] * (dp[j] - pdp) * scale;
        const size_t kvo = ((size_t)j * s.n_kv_heads + h / grp) * hd;
        for (int e = 0; e < hd; ++e) {
          r.dq[((size_t)i * s.n_heads + h) * hd + e] += ds * KV(k, j, h)[e];
          r.dk[kvo + e] += ds * Q(i, h)[e];
          r.dv[kvo + e] += p[j] * g[e];
        }
      }
    }
  return r;
}

TEST_P(AttentionConformance, AttentionCompactedGqaForwardAndBackward) {
  // Queries: a compacted subset of positions; keys: every position (a kv-share source) or the
  // same subset. Head dims 16 (tiled on AVX-512 CPUs) and 12 (the general path).
  for (int hd : {16, 12})
    for (bool share : {false, true}) {
      const std::vector<int32_t> qp = {0, 2, 3, 7, 8, 11};
      std::vector<int32_t> kp = qp;
      if (share) {
        kp.resize(12);
        for (int j = 0; j < 12; ++j) kp[j] = j;
      }
      const AttnShape s{(int)qp.size(), (int)kp.size(), 4, 2, hd};
      const V Q = rand_vec((size_t)s.nq * 4 * hd, 80), K = rand_vec((size_t)s.nk * 2 * hd, 81),
              Vv = rand_vec((size_t)s.nk * 2 * hd, 82), G = rand_vec((size_t)s.nq * 4 * hd, 83);
      const AttnRef ref = attention_ref(Q, K, Vv, G, qp, kp, s);
      Buffer<float> q = up(Q), k = up(K), v = up(Vv), g = up(G), o(be(), (int64_t)s.nq * 4 * hd),
                    lse(be(), (int64_t)4 * s.nq), dq(be(), (int64_t)s.nq * 4 * hd);
      Buffer<int32_t> qpos = up(qp), kpos = up(kp);
      const V DK0 = rand_vec(K.size(), 84), DV0 = rand_vec(K.size(), 85);  // dk, dv accumulate
      Buffer<float> dk = up(DK0), dv = up(DV0);
      const std::string what = "attention hd=" + std::to_string(hd) + (share ? " kv-share" : "");
      be().attention_forward(o.data(), lse.data(), q.data(), k.data(), v.data(), qpos.data(), kpos.data(), s);
      expect_close(ref.o, down(o), 1e-4, 1e-5, what + " o");
      expect_close(ref.lse, down(lse), 1e-5, 1e-5, what + " lse");
      be().attention_backward(dq.data(), dk.data(), dv.data(), g.data(), o.data(), lse.data(), q.data(), k.data(),
                              v.data(), qpos.data(), kpos.data(), s);
      D dkw = ref.dk, dvw = ref.dv;
      for (size_t i = 0; i < dkw.size(); ++i) dkw[i] += DK0[i], dvw[i] += DV0[i];
      expect_close(ref.dq, down(dq), 1e-4, 1e-5, what + " dq");
      expect_close(dkw, down(dk), 1e-4, 1e-5, what + " dk");
      expect_close(dvw, down(dv), 1e-4, 1e-5, what + " dv");
    }
}

// With AttnShape::bf16 the products may run on bf16-rounded operands (fp32 sums; the CPU does on
// AVX512-BF16): each output within 1 % of the exact one in relative L2 norm and 4 % of its largest
// magnitude elementwise (bf16's unit roundoff is 0.4 %; an operand packed wrongly is off by ~100 %).
// Odd query/key counts (a pair with a zero partner) and several 64-query blocks.
TEST_P(AttentionConformance, AttentionBf16ProductsWithinBf16Tolerance) {
  for (int hd : {16, 64})
    for (bool share : {false, true}) {
      std::vector<int32_t> qp;
      for (int t = 0; t < 301; ++t)
        if (t % 3 != 1) qp.push_back(t);  // 201 queries: 4 blocks, the last of 9
      std::vector<int32_t> kp = qp;
      if (share) {
        kp.resize(301);
        for (int j = 0; j < 301; ++j) kp[j] = j;
      }
      AttnShape s{(int)qp.size(), (int)kp.size(), 4, 2, hd};
      s.bf16 = true;
      const V Q = rand_vec((size_t)s.nq * 4 * hd, 86), K = rand_vec((size_t)s.nk * 2 * hd, 87),
              Vv = rand_vec((size_t)s.nk * 2 * hd, 88), G = rand_vec((size_t)s.nq * 4 * hd, 89);
      const AttnRef ref = attention_ref(Q, K, Vv, G, qp, kp, s);
      Buffer<float> q = up(Q), k = up(K), v = up(Vv), g = up(G), o(be(), (int64_t)s.nq * 4 * hd),
                    lse(be(), (int64_t)4 * s.nq), dq(be(), (int64_t)s.nq * 4 * hd);
      Buffer<int32_t> qpos = up(qp), kpos = up(kp);
      Buffer<float> dk(be(), (int64_t)K.size()), dv(be(), (int64_t)K.size());
      dk.zero();
      dv.zero();
      be().attention_forward(o.data(), lse.data(), q.data(), k.data(), v.data(), qpos.data(), kpos.data(), s);
      be().attention_backward(dq.data(), dk.data(), dv.data(), g.data(), o.data(), lse.data(), q.data(), k.data(),
                              v.data(), qpos.data(), kpos.data(), s);
      const std::string what = "bf16 attention hd=" + std::to_string(hd) + (share ? " kv-share" : "");
      const std::pair<const D*, V> outs[] = {
          {&ref.o, down(o)}, {&ref.lse, down(lse)}, {&ref.dq, down(dq)}, {&ref.dk, down(dk)}, {&ref.dv, down(dv)}};
      const char* names[] = {"o", "lse", "dq", "dk", "dv"};
      for (int t = 0; t < 5; ++t) {
        const D& want = *outs[t].first;
        const V& got = outs[t].second;
        double err = 0, norm = 0, mx = 0;
        for (size_t i = 0; i < want.size(); ++i) {
          err += (got[i] - want[i]) * (got[i] - want[i]);
          norm += want[i] * want[i];
          mx = std::max(mx, std::fabs(want[i]));
        }
        EXPECT_LE(std::sqrt(err / norm), 1e-2) << what << " " << names[t] << " (relative L2 error)";
        expect_close(want, got, 0, 0.04 * mx, what + " " + names[t]);
      }
    }
}

// The shapes the fused CUDA kernel takes (head_dim 64 and 128), several query and key tiles (64)
// with partial last tiles, GQA 4:1 and 3:1, and MoR's position sets: queries a gapped subset of
// the keys (kv-share: keys at every position), both the same gapped subset (recursion-wise
// caches), and keys that start after the first queries (those see no key: zero output, zero dq,
// lse -inf). Tolerance, against the double reference and (on a GPU) against the CPU backend:
// |got - want| <= 1e-4 |want| + 1e-5 max|want| per output (fp32 sums over up to 400 keys and
// 128 dims; the CPU backend's largest error is 5 % of it). lse exactly -inf where it must be.
// Two backward runs give the same bits (no atomics).
struct AttnCase {
  std::string name;
  std::vector<int32_t> qp, kp;
  int H, Hkv;
};
std::vector<AttnCase> attention_cases() {
  std::mt19937 g(7);
  auto subset = [&](int from, int to, double keep) {
    std::bernoulli_distribution b(keep);
    std::vector<int32_t> v;
    for (int p = from; p < to; ++p)
      if (b(g)) v.push_back(p);
    return v;
  };
  std::vector<int32_t> all(400);
  for (int p = 0; p < 400; ++p) all[p] = p;
  std::vector<AttnCase> cases;
  cases.push_back({"kv-share gqa4", subset(0, 400, 0.5), all, 4, 1});
  const std::vector<int32_t> sel = subset(0, 400, 0.35);
  cases.push_back({"recursion gqa3", sel, sel, 6, 2});
  cases.push_back({"late keys", subset(0, 300, 0.6), subset(37, 300, 0.5), 2, 2});
  cases.push_back({"one query", {5}, std::vector<int32_t>(all.begin(), all.begin() + 90), 2, 1});
  return cases;
}

void expect_attention_close(const D& want, const V& got, const std::string& what) {
  ASSERT_EQ(want.size(), got.size()) << what;
  double mx = 0;
  for (double w : want)
    if (std::isfinite(w)) mx = std::max(mx, std::fabs(w));
  for (size_t i = 0; i < want.size(); ++i) {
    if (std::isinf(want[i])) {
      ASSERT_EQ(got[i], want[i]) << what << "[" << i << "]";
      continue;
    }
    ASSERT_LE(std::fabs(got[i] - want[i]), 1e-4 * std::fabs(want[i]) + 1e-5 * mx)
        << what << "[" << i << "] = " << got[i] << ", want " << want[i];
  }
}

TEST_P(AttentionConformance, FlashShapesHeadDims64And128GqaGappedPositions) {
  const bool vs_cpu = !be().host_addressable();  // a device backend: also against the CPU backend
  std::unique_ptr<Backend> cpu = vs_cpu ? mor::kern::make_cpu_backend() : nullptr;
  for (int hd : {64, 128})
    for (const AttnCase& c : attention_cases()) {
      const AttnShape s{(int)c.qp.size(), (int)c.kp.size(), c.H, c.Hkv, hd};
      const size_t nqe = (size_t)s.nq * c.H * hd, nke = (size_t)s.nk * c.Hkv * hd;
      const V Q = rand_vec(nqe, 90 + hd), K = rand_vec(nke, 91 + hd), Vv = rand_vec(nke, 92 + hd),
              G = rand_vec(nqe, 93 + hd), DK0 = rand_vec(nke, 94), DV0 = rand_vec(nke, 95);
      const AttnRef ref = attention_ref(Q, K, Vv, G, c.qp, c.kp, s);
      D dkw = ref.dk, dvw = ref.dv;
      for (size_t i = 0; i < dkw.size(); ++i) dkw[i] += DK0[i], dvw[i] += DV0[i];
      // Forward and backward on `b`; outputs o, lse, dq, dk, dv (dk, dv accumulated onto DK0, DV0).
      auto run = [&](Backend& b) {
        auto put = [&](const auto& v) {
          Buffer<typename std::decay_t<decltype(v)>::value_type> x(b);
          x.from_host(v);
          return x;
        };
        Buffer<float> q = put(Q), k = put(K), v = put(Vv), g = put(G), dk = put(DK0), dv = put(DV0);
        Buffer<float> o(b, (int64_t)nqe), lse(b, (int64_t)c.H * s.nq), dq(b, (int64_t)nqe);
        Buffer<int32_t> qpos = put(c.qp), kpos = put(c.kp);
        b.attention_forward(o.data(), lse.data(), q.data(), k.data(), v.data(), qpos.data(), kpos.data(), s);
        b.attention_backward(dq.data(), dk.data(), dv.data(), g.data(), o.data(), lse.data(), q.data(), k.data(),
                             v.data(), qpos.data(), kpos.data(), s);
        b.synchronize();
        return std::vector<V>{o.to_host_vector(), lse.to_host_vector(), dq.to_host_vector(), dk.to_host_vector(),
                              dv.to_host_vector()};
      };
      const std::vector<V> got = run(be());
      const std::string what = "attention hd=" + std::to_string(hd) + " " + c.name + " (nq " + std::to_string(s.nq) +
                               ", nk " + std::to_string(s.nk) + ")";
      const D* want[] = {&ref.o, &ref.lse, &ref.dq, &dkw, &dvw};
      const char* names[] = {" o", " lse", " dq", " dk", " dv"};
      for (int t = 0; t < 5; ++t) expect_attention_close(*want[t], got[t], what + names[t]);
      if (c.name == "late keys") {  // the first queries see nothing: exactly zero and -inf
        ASSERT_LT(c.qp[0], c.kp[0]);
        for (int h = 0; h < c.H; ++h) EXPECT_EQ(got[1][(size_t)h * s.nq], -std::numeric_limits<float>::infinity());
        for (int e = 0; e < c.H * hd; ++e) EXPECT_EQ(got[0][e], 0.f) << what << " o of query 0";
        for (int e = 0; e < c.H * hd; ++e) EXPECT_EQ(got[2][e], 0.f) << what << " dq of query 0";
      }
      const std::vector<V> again = run(be());
      for (int t = 0; t < 5; ++t)
        EXPECT_EQ(std::memcmp(got[t].data(), again[t].data(), got[t].size() * 4), 0)
            << what << names[t] << ": not deterministic";
      if (vs_cpu) {
        const std::vector<V> c_out = run(*cpu);
        for (int t = 0; t < 5; ++t) expect_attention_close(to_d(c_out[t]), got[t], what + names[t] + " vs the CPU");
      }
    }
}

// ---- selection ------------------------------------------------------------------------------
// topk_indices against an independent reference: a full sort by (score descending, index
// ascending), the first k, ascending. Random scores and heavily tied ones (with -0 and +0, which
// compare equal), k from 0 to n.
std::vector<int32_t> topk_ref(const V& s, int k) {
  std::vector<int32_t> idx(s.size());
  for (size_t i = 0; i < s.size(); ++i) idx[i] = (int32_t)i;
  std::sort(idx.begin(), idx.end(), [&](int32_t a, int32_t b) { return s[a] != s[b] ? s[a] > s[b] : a < b; });
  idx.resize(k);
  std::sort(idx.begin(), idx.end());
  return idx;
}

TEST_P(Conformance, TopkIndicesHighestScoresTiesToTheLowerIndex) {
  std::mt19937 g(150);
  std::uniform_int_distribution<int> level(0, 4);
  const float levels[] = {-1.f, -0.f, 0.f, 0.5f, 1.f};
  for (int n : {1, 7, 300, 2048}) {
    V random = rand_vec(n, 151 + n), tied(n);
    for (auto& x : tied) x = levels[level(g)];
    for (const V* sc : {&random, &tied})
      for (int k : {0, 1, n / 3, n / 2, n - 1, n}) {
        Buffer<float> sb = up(*sc);
        Buffer<int32_t> out(be(), std::max(k, 1));
        be().topk_indices(out.data(), sb.data(), n, k);
        std::vector<int32_t> got = down(out);
        got.resize(k);
        EXPECT_EQ(got, topk_ref(*sc, k)) << (sc == &tied ? "tied" : "random") << " n=" << n << " k=" << k;
      }
  }
  Buffer<float> sb = up(V{1.f, 2.f});
  Buffer<int32_t> out(be(), 3);
  EXPECT_THROW(be().topk_indices(out.data(), sb.data(), 2, 3), std::invalid_argument);
  EXPECT_THROW(be().topk_indices(out.data(), sb.data(), 2, -1), std::invalid_argument);
  be().topk_indices(out.data(), sb.data(), 0, 0);  // nothing to do
}

// ---- cross-entropy --------------------------------------------------------------------------
TEST_P(Conformance, SoftmaxCrossEntropyLossAndGradient) {
  const int n = 9, Vn = 301;
  const float scale = 0.25f;
  const V L = rand_vec(n * Vn, 90, 4.f);
  const std::vector<int32_t> T = {0, 300, 5, 5, 17, 299, 1, 150, 42};
  double loss = 0;
  D grad(n * Vn);
  for (int i = 0; i < n; ++i) {
    double mx = -1e300, sum = 0;
    for (int j = 0; j < Vn; ++j) mx = std::max(mx, (double)L[i * Vn + j]);
    for (int j = 0; j < Vn; ++j) sum += std::exp(L[i * Vn + j] - mx);
    loss += std::log(sum) + mx - L[i * Vn + T[i]];
    for (int j = 0; j < Vn; ++j) grad[i * Vn + j] = scale * (std::exp(L[i * Vn + j] - mx) / sum - (j == T[i]));
  }
  Buffer<float> l = up(L);
  Buffer<int32_t> t = up(T);
  const double got = be().softmax_xent(l.data(), t.data(), n, Vn, scale);
  EXPECT_NEAR(got, loss, 1e-5 * loss);
  expect_close(grad, down(l), 1e-4, 1e-7, "softmax_xent gradient");
  // The bf16-gradient form: the same loss, and the gradient within one bf16 rounding (2^-8
  // relative) of the exact one.
  Buffer<float> l2 = up(L);
  Buffer<bf16> g16(be(), (int64_t)n * Vn);
  EXPECT_NEAR(be().softmax_xent_bf16(l2.data(), g16.data(), t.data(), n, Vn, scale), loss, 1e-5 * loss);
  expect_close(grad, widen(down(g16)), 1.0 / 256, 1e-7, "softmax_xent_bf16 gradient");
}

// ---- rows -----------------------------------------------------------------------------------
TEST_P(Conformance, EmbeddingForwardAndBackwardWithRepeatedIds) {
  const int Vn = 11, Dm = 20;
  const std::vector<int32_t> ids = {3, 0, 3, 10, 7, 3};
  const int n = (int)ids.size();
  const V E = rand_vec(Vn * Dm, 100), G = rand_vec(n * Dm, 101), DE0 = rand_vec(Vn * Dm, 102);
  D out(n * Dm), de(DE0.begin(), DE0.end());
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < Dm; ++j) {
      out[i * Dm + j] = E[ids[i] * Dm + j];
      de[ids[i] * Dm + j] += G[i * Dm + j];
    }
  Buffer<float> e = up(E), g = up(G), o(be(), n * Dm), dtab = up(DE0);
  Buffer<int32_t> id = up(ids);
  be().embedding_forward(o.data(), e.data(), id.data(), n, Dm);
  expect_close(out, down(o), 0, 0, "embedding_forward");
  be().embedding_backward(dtab.data(), g.data(), id.data(), n, Dm);
  expect_close(de, down(dtab), 1e-6, 1e-6, "embedding_backward");
}

TEST_P(Conformance, CopyRowsEveryForm) {
  const int Dm = 13, rows = 10;
  const V S = rand_vec(rows * Dm, 110), D0 = rand_vec(rows * Dm, 111), SC = rand_vec(4, 112);
  const std::vector<int32_t> dr = {9, 2, 5, 0}, sr = {1, 1, 8, 3};  // dst rows distinct, src rows may repeat
  for (int form = 0; form < 16; ++form) {
    const bool use_dr = form & 1, use_sr = form & 2, use_scale = form & 4, acc = form & 8;
    D want(D0.begin(), D0.end());
    for (int i = 0; i < 4; ++i)
      for (int j = 0; j < Dm; ++j) {
        const double v = (use_scale ? SC[i] : 1.0) * S[(use_sr ? sr[i] : i) * Dm + j];
        double& d = want[(use_dr ? dr[i] : i) * Dm + j];
        d = acc ? d + v : v;
      }
    Buffer<float> dst = up(D0), src = up(S), sc = up(SC);
    Buffer<int32_t> dbuf = up(dr), sbuf = up(sr);
    be().copy_rows(dst.data(), use_dr ? dbuf.data() : nullptr, src.data(), use_sr ? sbuf.data() : nullptr,
                   use_scale ? sc.data() : nullptr, 4, Dm, acc);
    expect_close(want, down(dst), 1e-6, 1e-6, "copy_rows form " + std::to_string(form));
  }
}

TEST_P(Conformance, RowDots) {
  const int Dm = 33;
  const V A = rand_vec(6 * Dm, 120), B = rand_vec(5 * Dm, 121);
  const std::vector<int32_t> ar = {5, 0, 2}, br = {4, 4, 1};
  for (bool rows : {false, true}) {
    D want(3);
    for (int i = 0; i < 3; ++i)
      for (int j = 0; j < Dm; ++j) want[i] += (double)A[(rows ? ar[i] : i) * Dm + j] * B[(rows ? br[i] : i) * Dm + j];
    Buffer<float> a = up(A), b = up(B), out(be(), 3);
    Buffer<int32_t> ab = up(ar), bb = up(br);
    be().row_dots(out.data(), a.data(), rows ? ab.data() : nullptr, b.data(), rows ? bb.data() : nullptr, 3, Dm);
    expect_close(want, down(out), 1e-5, 1e-5, rows ? "row_dots with row lists" : "row_dots");
  }
}

// ---- optimizer and vector helpers -------------------------------------------------------------
TEST_P(Conformance, AdamWMatchesTorchFormula) {
  const int n = 100000;  // past the CPU's threading threshold
  const V P = rand_vec(n, 130), G = rand_vec(n, 131), M0 = rand_vec(n, 132, 0.1f);
  V V0 = rand_vec(n, 133, 0.1f);
  for (auto& x : V0) x = x * x;
  const AdamWParams p{1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f, 3, 0.5f};
  D pw(n), mw(n), vw(n);
  for (int i = 0; i < n; ++i) {
    const double g = (double)G[i] * p.grad_scale;
    mw[i] = p.beta1 * M0[i] + (1 - p.beta1) * g;
    vw[i] = p.beta2 * V0[i] + (1 - p.beta2) * g * g;
    const double bc1 = 1 - std::pow(p.beta1, p.step), bc2 = 1 - std::pow(p.beta2, p.step);
    pw[i] = P[i] * (1 - p.lr * p.weight_decay) - p.lr / bc1 * mw[i] / (std::sqrt(vw[i]) / std::sqrt(bc2) + p.eps);
  }
  Buffer<float> pb = up(P), gb = up(G), mb = up(M0), vb = up(V0);
  be().adamw_update(pb.data(), gb.data(), mb.data(), vb.data(), n, p);
  expect_close(mw, down(mb), 1e-5, 1e-7, "adamw m");
  expect_close(vw, down(vb), 1e-5, 1e-9, "adamw v");
  expect_close(pw, down(pb), 1e-5, 1e-6, "adamw param");
  // The form that also writes the bf16 copy: the same update, and the copy within bf16 rounding.
  Buffer<float> pb2 = up(P), mb2 = up(M0), vb2 = up(V0);
  Buffer<bf16> p16(be(), n);
  be().adamw_update_bf16(pb2.data(), p16.data(), gb.data(), mb2.data(), vb2.data(), n, p);
  expect_close(mw, down(mb2), 1e-5, 1e-7, "adamw_update_bf16 m");
  expect_close(vw, down(vb2), 1e-5, 1e-9, "adamw_update_bf16 v");
  expect_close(pw, down(pb2), 1e-5, 1e-6, "adamw_update_bf16 param");
  expect_close(pw, widen(down(p16)), 1.0 / 256, 1e-6, "adamw_update_bf16 bf16 copy");
}

TEST_P(Conformance, SumSquaresScaleAddAndFirstNonFinite) {
  const int n = 200003;
  const V X = rand_vec(n, 140), Y = rand_vec(n, 141);
  double ss = 0;
  for (float x : X) ss += (double)x * x;
  Buffer<float> x = up(X), y = up(Y);
  EXPECT_NEAR(be().sum_squares(x.data(), n), ss, 1e-12 * ss);
  EXPECT_EQ(be().sum_squares(x.data(), n), be().sum_squares(x.data(), n)) << "not deterministic";
  be().add_inplace(y.data(), x.data(), n);
  D sum(n), scaled(n);
  for (int i = 0; i < n; ++i) sum[i] = (double)Y[i] + X[i], scaled[i] = X[i] * 0.5;
  expect_close(sum, down(y), 1e-6, 1e-6, "add_inplace");
  be().scale_inplace(x.data(), 0.5f, n);
  expect_close(scaled, down(x), 0, 0, "scale_inplace");
  EXPECT_EQ(be().first_non_finite(x.data(), n), -1);
  for (int64_t at : {(int64_t)n - 1, (int64_t)70000, (int64_t)3}) {
    V bad = X;
    bad[at] = at % 2 ? std::numeric_limits<float>::infinity() : std::nanf("");
    if (at == 3) bad[150000] = -std::numeric_limits<float>::infinity();  // the first one counts
    Buffer<float> b = up(bad);
    EXPECT_EQ(be().first_non_finite(b.data(), n), at);
  }
}

TEST_P(Conformance, ContextAndSynchronize) {
  // Exists for every backend; the CPU's has no stream, a GPU's has one.
  if (be().host_addressable())
    EXPECT_EQ(be().context().stream, nullptr);
  else
    EXPECT_NE(be().context().stream, nullptr);
  Buffer<float> a = up(V{1, 2, 3});
  be().scale_inplace(a.data(), 2.f, 3);
  be().synchronize();
  EXPECT_EQ(a.to_host_vector(), (V{2, 4, 6}));
  EXPECT_STRNE(be().name(), "");
}

INSTANTIATE_TEST_SUITE_P(Backends, Conformance, ::testing::ValuesIn(backends()),
                         [](const ::testing::TestParamInfo<Factory>& i) { return i.param.name; });
INSTANTIATE_TEST_SUITE_P(Backends, AttentionConformance, ::testing::ValuesIn(attention_backends()),
                         [](const ::testing::TestParamInfo<Factory>& i) { return i.param.name; });

}  // namespace
