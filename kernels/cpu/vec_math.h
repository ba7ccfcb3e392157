// Small float helpers the CPU kernels' loops vectorize.
//
// fast_exp: exp(x) in float arithmetic only, so that loops calling it vectorize (libm's expf is a scalar
// call: it was 5 % of a 135M training step, for the 25 M exponentials of the cross-entropy over a
// 49,152-word vocabulary alone). Cephes' expf: x = n ln2 + r, |r| <= ln2/2 (up to rounding), a degree-7 polynomial
// for e^r, 2^n put into the exponent bits. Relative error <= 2 ulp (tests/test_kernels.cpp).
// Every step is an explicit fma or plain op, so the vector body and a scalar remainder give the
// same bits: results never depend on how a loop was split across threads.
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>

namespace mor::kern {

// The bits of float_to_bf16(f) (kern/dtype.h: nearest, ties to even; a NaN stays a quiet NaN),
// written without branches so that loops calling it vectorize.
inline uint16_t round_bf16_bits(float f) {
  const uint32_t u = std::bit_cast<uint32_t>(f);
  const uint32_t r = (u & 0x7fffffffu) > 0x7f800000u ? (u | 0x400000u) : u + 0x7fffu + ((u >> 16) & 1u);
  return (uint16_t)(r >> 16);
}

inline float fast_exp(float x) {
  // e^-87.3 is the smallest normal float; below that the result is flushed towards 0 (returns
  // 2^-126 * e^r, far below anything a softmax or sigmoid can see). Above 88, overflow to inf.
  x = x < -87.33654f ? -87.33654f : x;
  x = x > 88.0f ? 88.0f : x;
  // n = round(x / ln2) by the 1.5 * 2^23 trick: floorf would not vectorize (trapping math).
  constexpr float kRound = 12582912.f;
  const float n = std::fma(x, 1.44269504088896341f, kRound) - kRound;
  float r = std::fma(n, -0.693359375f, x);  // ln2 split in two: the product with n is exact
  r = std::fma(n, 2.12194440e-4f, r);
  float p = 1.9875691500e-4f;
  p = std::fma(p, r, 1.3981999507e-3f);
  p = std::fma(p, r, 8.3334519073e-3f);
  p = std::fma(p, r, 4.1665795894e-2f);
  p = std::fma(p, r, 1.6666665459e-1f);
  p = std::fma(p, r, 5.0000001201e-1f);
  p = std::fma(p, r * r, r + 1.f);
  return p * std::bit_cast<float>(((int32_t)n + 127) << 23);
}

// sum over j < n of term(j) in 16 interleaved partial sums, added in a fixed order: vectorizes
// (GCC never reorders a plain float `s += ...` loop), and the bits depend only on the values (not
// on addresses or threads).
template <class Term>
inline float sum_lanes(int n, Term term) {
  float acc[16] = {};
  int j = 0;
  for (; j + 16 <= n; j += 16)
    for (int t = 0; t < 16; ++t) acc[t] += term(j + t);
  float s = 0.f;
  for (int t = 0; t < 16; ++t) s += acc[t];
  for (; j < n; ++j) s += term(j);
  return s;
}
inline float sum_row(const float* x, int n) {
  return sum_lanes(n, [x](int j) { return x[j]; });
}
inline float dot_row(const float* a, const float* b, int n) {
  return sum_lanes(n, [a, b](int j) { return a[j] * b[j]; });
}
inline float dot_row(const float* a, const float* b, const float* c, int n) {
  return sum_lanes(n, [a, b, c](int j) { return a[j] * b[j] * c[j]; });
}

// Maximum of a row (-inf when empty) in 16 interleaved lanes: `a > b ? a : b` is exactly what
// vmaxps computes, so it vectorizes; a plain running maximum stays a scalar loop.
inline float max_row(const float* x, int n) {
  float acc[16];
  for (int t = 0; t < 16; ++t) acc[t] = -INFINITY;
  int j = 0;
  for (; j + 16 <= n; j += 16)
    for (int t = 0; t < 16; ++t) acc[t] = x[j + t] > acc[t] ? x[j + t] : acc[t];
  float m = -INFINITY;
  for (int t = 0; t < 16; ++t) m = acc[t] > m ? acc[t] : m;
  for (; j < n; ++j) m = x[j] > m ? x[j] : m;
  return m;
}

}  // namespace mor::kern
