// Elementwise, normalisation, RoPE, loss and optimizer kernels (CPU, OpenMP).
// Reductions that feed the loss or the gradient norm run in a fixed order so
// that results do not depend on scheduling: same inputs, same bits.
#include <cpuid.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/cpu/vec_math.h"
#include "kernels/cpu/cpu_kernels.h"

namespace mor::kern::cpu {

namespace {
// Both output types: fp32, or bf16 rounded from the same fp32 value (bitwise the fp32 form + cast).
inline void store(float* y, float v) { *y = v; }
inline void store(bf16* y, float v) { y->bits = round_bf16_bits(v); }

template <class Out>
void rmsnorm_rows(Out* y, float* rstd, const float* x, const float* w, int n, int d, float eps) {
#pragma omp parallel for schedule(static) if (n >= 64)
  for (int i = 0; i < n; ++i) {
    const float* xi = x + (int64_t)i * d;
    Out* yi = y + (int64_t)i * d;
    const float r = 1.f / std::sqrt(dot_row(xi, xi, d) / d + eps);
    rstd[i] = r;
#pragma omp simd
    for (int j = 0; j < d; ++j) store(yi + j, xi[j] * r * w[j]);
  }
}

template <class Out>
void swiglu_elems(Out* h, const float* g, const float* u, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n >= 65536)
  for (int64_t i = 0; i < n; ++i) {
    float s = g[i] / (1.f + fast_exp(-g[i]));
    store(h + i, s * u[i]);
  }
}
}  // namespace

void rmsnorm_forward(float* y, float* rstd, const float* x, const float* w, int n, int d, float eps) {
  rmsnorm_rows(y, rstd, x, w, n, d, eps);
}
void rmsnorm_forward_bf16(bf16* y, float* rstd, const float* x, const float* w, int n, int d, float eps) {
  rmsnorm_rows(y, rstd, x, w, n, d, eps);
}

void rmsnorm_backward(float* dx, const float* dres, float* dw, const float* dy, const float* x, const float* w,
                      const float* rstd, int n, int d) {
  // dx = dres + r*(w*dy) - r^3/d * x * sum(w*dy*x);  dw += dy * x * r (rows summed in order).
#pragma omp parallel if (n >= 64)
  {
#pragma omp for schedule(static)
    for (int i = 0; i < n; ++i) {
      const float* xi = x + (int64_t)i * d;
      const float* gi = dy + (int64_t)i * d;
      const float* ri = dres ? dres + (int64_t)i * d : nullptr;
      float* dxi = dx + (int64_t)i * d;
      const float r = rstd[i];
      const float c = r * r * r * dot_row(w, gi, xi, d) / d;
      if (ri) {
#pragma omp simd
        for (int j = 0; j < d; ++j) dxi[j] = ri[j] + (r * w[j] * gi[j] - c * xi[j]);
      } else {
#pragma omp simd
        for (int j = 0; j < d; ++j) dxi[j] = r * w[j] * gi[j] - c * xi[j];
      }
    }
    // dw: blocks of 16 columns per thread, every column summed over the rows in order: the same
    // bits for any thread count, and each row's 16 columns are one vector (a column at a time
    // strode through the rows unvectorized).
    const int nblk = (d + 15) / 16;
#pragma omp for schedule(static)
    for (int jb = 0; jb < nblk; ++jb) {
      const int j0 = jb * 16, m = std::min(16, d - j0);
      float acc[16] = {};
      for (int i = 0; i < n; ++i) {
        const float* gi = dy + (int64_t)i * d + j0;
        const float* xi = x + (int64_t)i * d + j0;
        const float r = rstd[i];
#pragma omp simd
        for (int t = 0; t < m; ++t) acc[t] += gi[t] * xi[t] * r;
      }
      for (int t = 0; t < m; ++t) dw[j0 + t] += acc[t];
    }
  }
}

static void rope_apply(float* x, const int* pos, int n, int n_heads, const RopeTable& t, float sign) {
  const int hd = t.head_dim, half = hd / 2;
#pragma omp parallel for schedule(static) if (n >= 64)
  for (int i = 0; i < n; ++i) {
    const float* c = t.cos.data() + (size_t)pos[i] * half;
    const float* s = t.sin.data() + (size_t)pos[i] * half;
    for (int h = 0; h < n_heads; ++h) {
      float* v = x + ((int64_t)i * n_heads + h) * hd;
      for (int j = 0; j < half; ++j) {
        float a = v[j], b = v[j + half], sj = sign * s[j];
        v[j] = a * c[j] - b * sj;
        v[j + half] = b * c[j] + a * sj;
      }
    }
  }
}

void rope_forward(float* x, const int* pos, int n, int n_heads, const RopeTable& t) {
  rope_apply(x, pos, n, n_heads, t, 1.f);
}
// The rotation is orthogonal: its transpose (rotation by -angle) maps the gradient back.
void rope_backward(float* dx, const int* pos, int n, int n_heads, const RopeTable& t) {
  rope_apply(dx, pos, n, n_heads, t, -1.f);
}

void swiglu_forward(float* h, const float* g, const float* u, int64_t n) { swiglu_elems(h, g, u, n); }
void swiglu_forward_bf16(bf16* h, const float* g, const float* u, int64_t n) { swiglu_elems(h, g, u, n); }

namespace {
template <class Out>
void swiglu_backward_elems(Out* dg, Out* du, const float* dh, const float* g, const float* u, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n >= 65536)
  for (int64_t i = 0; i < n; ++i) {
    float sig = 1.f / (1.f + fast_exp(-g[i]));
    float silu = g[i] * sig;
    store(du + i, dh[i] * silu);
    store(dg + i, dh[i] * u[i] * sig * (1.f + g[i] * (1.f - sig)));
  }
}
}  // namespace

void swiglu_backward(float* dg, float* du, const float* dh, const float* g, const float* u, int64_t n) {
  swiglu_backward_elems(dg, du, dh, g, u, n);
}
void swiglu_backward_bf16(bf16* dg, bf16* du, const float* dh, const float* g, const float* u, int64_t n) {
  swiglu_backward_elems(dg, du, dh, g, u, n);
}

// Both forms: the loss per row, and the gradient scale * (softmax - onehot) into logits (fp32) or
// dlogits16 (rounded once from the same fp32 value, so bitwise softmax_xent + cast_to_bf16).
namespace {
double softmax_xent_rows(float* logits, bf16* dlogits16, const int32_t* targets, int n, int V, float scale) {
  std::vector<double> row_loss(n);
#pragma omp parallel for schedule(static)
  for (int i = 0; i < n; ++i) {
    float* l = logits + (int64_t)i * V;
    const float mx = max_row(l, V);
    const int tgt = targets[i];
    const float target_logit = l[tgt];
#pragma omp simd
    for (int j = 0; j < V; ++j) l[j] = fast_exp(l[j] - mx);
    const float sum = sum_row(l, V);
    row_loss[i] = std::log((double)sum) + mx - target_logit;
    const float inv = scale / sum;
    if (dlogits16) {
      uint16_t* d = reinterpret_cast<uint16_t*>(dlogits16) + (int64_t)i * V;
      const float gt = l[tgt] * inv - scale;
#pragma omp simd
      for (int j = 0; j < V; ++j) d[j] = round_bf16_bits(l[j] * inv);
      d[tgt] = round_bf16_bits(gt);
    } else {
#pragma omp simd
      for (int j = 0; j < V; ++j) l[j] *= inv;
      l[tgt] -= scale;
    }
  }
  double total = 0;
  for (int i = 0; i < n; ++i) total += row_loss[i];
  return total;
}
}  // namespace

double softmax_xent(float* logits, const int32_t* targets, int n, int V, float scale) {
  return softmax_xent_rows(logits, nullptr, targets, n, V, scale);
}
double softmax_xent_bf16(float* logits, bf16* dlogits16, const int32_t* targets, int n, int V, float scale) {
  return softmax_xent_rows(logits, dlogits16, targets, n, V, scale);
}

namespace {
// kCopy: the updated parameter is also rounded to bf16 into p16 (the same bits as cast_to_bf16
// afterwards, without a second pass over the parameters). A template, not a lambda or a branch in
// the loop: the loop must stay one plain simd loop (a lambda body there ran scalar, 5x slower).
template <bool kCopy>
void adamw_elems(float* param, uint16_t* p16, const float* grad, float* m, float* v, int64_t n, const AdamWParams& p) {
  const float bc1 = 1.f - (float)std::pow((double)p.beta1, (double)p.step);
  const float bc2 = 1.f - (float)std::pow((double)p.beta2, (double)p.step);
  const float decay = 1.f - p.lr * p.weight_decay;
  const float step_size = p.lr / bc1;
  const float inv_sqrt_bc2 = 1.f / std::sqrt(bc2);
#pragma omp parallel for simd schedule(static) if (n >= 65536)
  for (int64_t i = 0; i < n; ++i) {
    float g = grad[i] * p.grad_scale;
    m[i] = p.beta1 * m[i] + (1.f - p.beta1) * g;
    v[i] = p.beta2 * v[i] + (1.f - p.beta2) * g * g;
    float denom = std::sqrt(v[i]) * inv_sqrt_bc2 + p.eps;  // PyTorch's AdamW formula
    param[i] = param[i] * decay - step_size * m[i] / denom;
    if constexpr (kCopy) p16[i] = round_bf16_bits(param[i]);
  }
}
}  // namespace

void adamw_update(float* param, const float* grad, float* m, float* v, int64_t n, const AdamWParams& p) {
  adamw_elems<false>(param, nullptr, grad, m, v, n, p);
}
void adamw_update_bf16(float* param, bf16* param16, const float* grad, float* m, float* v, int64_t n,
                       const AdamWParams& p) {
  adamw_elems<true>(param, reinterpret_cast<uint16_t*>(param16), grad, m, v, n, p);
}

double sum_squares(const float* x, int64_t n) {
  // Fixed blocks summed in order: the result does not depend on the thread count.
  const int64_t blk = 4096;
  int64_t nb = (n + blk - 1) / blk;
  std::vector<double> part(nb);
#pragma omp parallel for schedule(static) if (n >= 65536)
  for (int64_t b = 0; b < nb; ++b) {
    // 32 interleaved partial sums in a fixed order: vectorizes into 4 independent add chains (one
    // chain of 8 was bound by the add latency: 12 ms for 135 M gradients, now ~10, at DRAM speed),
    // same bits for any thread count.
    double acc[32] = {};
    const int64_t e = std::min(n, (b + 1) * blk);
    int64_t i = b * blk;
    for (; i + 32 <= e; i += 32)
      for (int t = 0; t < 32; ++t) acc[t] += (double)x[i + t] * x[i + t];
    double sum = 0;
    for (int t = 0; t < 32; ++t) sum += acc[t];
    for (; i < e; ++i) sum += (double)x[i] * x[i];
    part[b] = sum;
  }
  double s = 0;
  for (double p : part) s += p;
  return s;
}

void scale_inplace(float* x, float s, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n >= 65536)
  for (int64_t i = 0; i < n; ++i) x[i] *= s;
}

void add_inplace(float* y, const float* x, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n >= 65536)
  for (int64_t i = 0; i < n; ++i) y[i] += x[i];
}

int64_t first_non_finite(const float* x, int64_t n) {
  // Blocks in parallel, the first bad block wins: a scan of a whole arena at memory speed.
  const int64_t blk = 1 << 16, nb = (n + blk - 1) / blk;
  int64_t first_blk = nb;
#pragma omp parallel for schedule(static) reduction(min : first_blk) if (n >= 65536)
  for (int64_t b = 0; b < nb; ++b) {
    bool bad = false;
    for (int64_t i = b * blk, e = std::min(n, (b + 1) * blk); i < e; ++i) bad |= !std::isfinite(x[i]);
    if (bad) first_blk = std::min(first_blk, b);
  }
  if (first_blk == nb) return -1;
  for (int64_t i = first_blk * blk;; ++i)
    if (!std::isfinite(x[i])) return i;
}

// ---- bf16 ----------------------------------------------------------------------------
// float_to_bf16 (kernels/dtype.h) written so that it vectorises: the same bits.
void cast_to_bf16(bf16* dst, const float* src, int64_t n) {
  uint16_t* d = reinterpret_cast<uint16_t*>(dst);
#pragma omp parallel for simd schedule(static) if (n >= 65536)
  for (int64_t i = 0; i < n; ++i) d[i] = round_bf16_bits(src[i]);
}

void cast_to_f32(float* dst, const bf16* src, int64_t n) {
  const uint16_t* s = reinterpret_cast<const uint16_t*>(src);
#pragma omp parallel for simd schedule(static) if (n >= 65536)
  for (int64_t i = 0; i < n; ++i) dst[i] = std::bit_cast<float>((uint32_t)s[i] << 16);
}

bool fast_bf16() {
  // CPUID leaf 7: sub-leaf 1 EAX bit 5 = AVX512_BF16; sub-leaf 0 EDX bit 22 = AMX-BF16.
  unsigned a, b, c, d;
  if (__get_cpuid_count(7, 1, &a, &b, &c, &d) && (a & (1u << 5))) return true;
  return __get_cpuid_count(7, 0, &a, &b, &c, &d) && (d & (1u << 22));
}

// ---- rows ----------------------------------------------------------------------------
void embedding_forward(float* out, const float* table, const int32_t* ids, int n, int D) {
  for (int i = 0; i < n; ++i) std::memcpy(out + (int64_t)i * D, table + (int64_t)ids[i] * D, D * sizeof(float));
}

void embedding_backward(float* dtable, const float* dout, const int32_t* ids, int n, int D) {
  for (int i = 0; i < n; ++i) {  // serial: rows may share a token id, and the sum stays in order of i
    float* d = dtable + (int64_t)ids[i] * D;
    const float* g = dout + (int64_t)i * D;
#pragma omp simd
    for (int j = 0; j < D; ++j) d[j] += g[j];
  }
}

void copy_rows(float* dst, const int32_t* dst_rows, const float* src, const int32_t* src_rows, const float* scale,
               int n, int D, bool accumulate) {
  for (int i = 0; i < n; ++i) {
    float* d = dst + (int64_t)(dst_rows ? dst_rows[i] : i) * D;
    const float* s = src + (int64_t)(src_rows ? src_rows[i] : i) * D;
    if (!scale && !accumulate) {
      std::memcpy(d, s, D * sizeof(float));
      continue;
    }
    const float g = scale ? scale[i] : 1.f;
    if (accumulate && scale) {
#pragma omp simd
      for (int j = 0; j < D; ++j) d[j] += g * s[j];
    } else if (accumulate) {
#pragma omp simd
      for (int j = 0; j < D; ++j) d[j] += s[j];
    } else {
#pragma omp simd
      for (int j = 0; j < D; ++j) d[j] = g * s[j];
    }
  }
}

void row_dots(float* out, const float* a, const int32_t* a_rows, const float* b, const int32_t* b_rows, int n, int D) {
  for (int i = 0; i < n; ++i) {
    const float* x = a + (int64_t)(a_rows ? a_rows[i] : i) * D;
    const float* y = b + (int64_t)(b_rows ? b_rows[i] : i) * D;
    float s = 0.f;
    for (int j = 0; j < D; ++j) s += x[j] * y[j];  // in order of j: the same bits on every run
    out[i] = s;
  }
}

}  // namespace mor::kern::cpu
