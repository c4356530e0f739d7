// The fused CPU selective scan, forward and backward, one call each (math: ops/scan_fused.py).
//
// Arrays, all contiguous, all float or all double:
//   u, delta, z, out, g_u, g_delta, g_z   (B, D, L)
//   y                                     (B, D, L) out before the gate, kept when z is given
//   A                                     (D, N)       N padded to a multiple of 16 (inert states)
//   Bx, Cx                                (Bb, G, Lt, N)  channel d reads group d / (D / G);
//                                                      Bb = 1, Lt = 1 when time-invariant
//                                                      (Layout.vary says which: at L = 1 a
//                                                      time-varying one has Lt = 1 too)
//   Dv, bias                              (D,)
//   starts                                (B, D, ceil(L / CHUNK), N)  the state before each chunk
//   last, g_last                          (B, D, N)
//   g_Bx, g_Cx                            (B, D / block, L, N) partial sums over a block of
//                                         channels, or (B, D, 1, N) when time-invariant
//   g_A (B, D, N); g_D, g_bias (B, D)     per-batch partial sums
// Work items, (b, d) forward and (b, block of channels) backward, are shared out in one OpenMP
// parallel region per call, on the pool torch has loaded (its threads, its wait policy). Loops over
// the N states carry `GCC ivdep` (no dependence between states) and compile to vector operations,
// N = 16 as one register (a build of its own); float's exp and log1p are polynomials so that they
// vectorize too, double's are libm's. Built by scan_fused.build() with its FLAGS.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <omp.h>
#include <vector>

namespace {

constexpr int64_t CHUNK = 64;  // steps whose states the backward recomputes at once

struct Layout {  // of B or C, (Bb, G, Lt, N); vary: one row per step (said, not read from Lt)
  int64_t batch, groups, time, vary;
};

struct Shape {  // mirrored by ctypes in scan_fused.py
  int64_t batch, dim, length, n;
  Layout b, c;
  int64_t block, softplus, has_z, negative, threads;  // negative: transitions 2 exp(Δ A) - 1
};

inline float exp_(float x) {  // exp(r) 2^k, x = k ln 2 + r, |r| <= ln 2 / 2 (Cephes' expf)
  x = std::min(std::max(x, -87.0f), 88.0f);
  const float k = std::floor(x * 1.44269504088896341f + 0.5f);
  const float r = x - k * 0.693359375f - k * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(k) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}
inline double exp_(double x) { return std::exp(x); }

inline float log1p_(float e) {  // 0 <= e <= 1: 2 atanh(s), s = e / (2 + e) <= 1/3, series to s^17
  const float s = e / (2.0f + e), s2 = s * s;
  float p = 1.0f / 17;
  for (float c : {1.0f / 15, 1.0f / 13, 1.0f / 11, 1.0f / 9, 1.0f / 7, 1.0f / 5, 1.0f / 3, 1.0f})
    p = p * s2 + c;
  return 2.0f * s * p;
}
inline double log1p_(double e) { return std::log1p(e); }

template <class T>
struct Args {
  const T *u, *delta, *A, *Bx, *Cx, *Dv, *z, *bias, *g_out, *g_last;
  T *out, *y, *starts, *last, *g_u, *g_delta, *g_z, *g_Bx, *g_Cx, *g_A, *g_D, *g_bias;
};

// Δ_t = softplus(δ_t + bias) (or δ_t + bias) and dΔ/dδ, for t < L; softplus(x) = x above 20.
template <class T>
void steps(const Shape& S, const T* delta, T bias, T* dt, T* d_dt) {
#pragma GCC ivdep
  for (int64_t t = 0; t < S.length; ++t) {
    const T x = delta[t] + bias, e = exp_(-std::abs(x));
    const T sig = (x >= 0 ? T(1) : e) / (T(1) + e);
    const bool soft = S.softplus && x <= T(20);
    dt[t] = soft ? std::max(x, T(0)) + log1p_(e) : x;
    d_dt[t] = soft ? sig : T(1);
  }
}

// silu(z_t) = z sigmoid(z) and its derivative sigmoid(z) (1 + z (1 - sigmoid(z))).
template <class T>
void gates(const Shape& S, const T* z, T* silu, T* d_silu) {
#pragma GCC ivdep
  for (int64_t t = 0; t < S.length; ++t) {
    const T sig = T(1) / (T(1) + exp_(-z[t]));
    silu[t] = z[t] * sig;
    d_silu[t] = sig * (T(1) + z[t] * (T(1) - sig));
  }
}

// The transition exp(Δ A), or with `negative` 2 exp(Δ A) - 1 in (-1, 1) (its derivative in Δ A
// is then 2 exp(Δ A) = transition + 1).
template <class T>
inline T transition(bool negative, T x) {
  const T e = exp_(x);
  return negative ? T(2) * e - T(1) : e;
}

// Row t of an (..., L, N) array, or its only row when time-invariant (step 0): base + t * step.
template <class T>
struct Rows {
  T* base;
  int64_t step;
  T* operator[](int64_t t) const { return base + t * step; }
};

// The rows of B or C (Bb, G, Lt, N) that batch b, channel d reads; `vary`: one row per step.
template <class T>
Rows<const T> bc_rows(const Shape& S, const T* X, const Layout& x, int64_t b, int64_t d) {
  const int64_t bb = x.batch > 1 ? b : 0, g = d / (S.dim / x.groups);
  return {X + (bb * x.groups + g) * x.time * S.n, x.vary ? S.n : 0};
}

// Runs item(i, thread) for i < items on `threads` threads of the OpenMP pool already loaded
// (torch's: the same threads, thread count and wait policy as torch's own operators).
template <class F>
void parallel(int64_t items, int64_t threads, F item) {
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t i = 0; i < items; ++i) item(i, omp_get_thread_num());
}

// out_t = (<h_t, C_t> + D u_t) silu(z_t), h_t = a_t h_{t-1} + Δ_t u_t B_t with the transition
// a_t = transition(Δ_t A), for one (b, d).
template <class T, int64_t NS>  // NS: N when known at compile time, else 0
void forward_item(const Shape& S, const Args<T>& a, int64_t b, int64_t d, T* buf) {
  const int64_t L = S.length, n = NS ? NS : S.n, bd = b * S.dim + d;
  const int64_t chunks = (L + CHUNK - 1) / CHUNK;
  T *__restrict dt = buf, *__restrict d_dt = buf + L, *__restrict silu = buf + 2 * L;
  T *__restrict d_silu = buf + 3 * L, *__restrict h = buf + 4 * L;
  steps(S, a.delta + bd * L, a.bias[d], dt, d_dt);
  if (S.has_z) gates(S, a.z + bd * L, silu, d_silu);
  const T *__restrict u = a.u + bd * L, *__restrict Ad = a.A + d * n;
  T *__restrict out = a.out + bd * L, *__restrict starts = a.starts + bd * chunks * n;
  const Rows<const T> B_rows = bc_rows(S, a.Bx, S.b, b, d);
  const Rows<const T> C_rows = bc_rows(S, a.Cx, S.c, b, d);
  const bool has_z = S.has_z, negative = S.negative;
  const T Dd = a.Dv[d];
  std::fill(h, h + n, T(0));
  for (int64_t t = 0; t < L; ++t) {
    if (t % CHUNK == 0) std::copy(h, h + n, starts + (t / CHUNK) * n);
    const T *__restrict Bt = B_rows[t], *__restrict Ct = C_rows[t];
    const T dtv = dt[t], dtu = dtv * u[t];
    T y = Dd * u[t];
#pragma GCC ivdep
    for (int64_t k = 0; k < n; ++k) {
      h[k] = transition(negative, dtv * Ad[k]) * h[k] + dtu * Bt[k];
      y += h[k] * Ct[k];
    }
    if (has_z) a.y[bd * L + t] = y;
    out[t] = has_z ? y * silu[t] : y;
  }
  std::copy(h, h + n, a.last + bd * n);
}

template <class T, int64_t NS>
void forward(const Shape& S, const Args<T>& a) {
  std::vector<std::vector<T>> bufs(S.threads, std::vector<T>(4 * S.length + S.n));
  parallel(S.batch * S.dim, S.threads, [&](int64_t i, int64_t id) {
    forward_item<T, NS>(S, a, i / S.dim, i % S.dim, bufs[id].data());
  });
}

// Decays dA[s] = exp(Δ A) and states hs[s + 1] of the steps t0 + s < t1, from hs[0] before t0.
template <class T, int64_t NS>
void recompute_chunk(const Shape& S, const Args<T>& a, int64_t b, int64_t d, int64_t t0, int64_t t1,
                     const T* dt, T* __restrict dA, T* __restrict hs) {
  const int64_t n = NS ? NS : S.n;
  const T *__restrict u = a.u + (b * S.dim + d) * S.length, *__restrict Ad = a.A + d * n;
  const Rows<const T> B_rows = bc_rows(S, a.Bx, S.b, b, d);
  const bool negative = S.negative;
  for (int64_t s = 0; s < t1 - t0; ++s) {
    const int64_t t = t0 + s;
    const T* __restrict Bt = B_rows[t];
    const T dtv = dt[t], dtu = dtv * u[t];
    T *__restrict dA_s = dA + s * n, *__restrict prev = hs + s * n, *__restrict h = prev + n;
#pragma GCC ivdep
    for (int64_t k = 0; k < n; ++k) {
      dA_s[k] = transition(negative, dtv * Ad[k]);
      h[k] = dA_s[k] * prev[k] + dtu * Bt[k];
    }
  }
}

// Per-step values of one channel in the backward, each (L,).
template <class T>
struct Steps {
  T *dt, *d_dt, *silu, *d_silu, *g_y;  // Δ, dΔ/dδ, silu(z), its derivative, dL/dy
};

// Steps t1 - 1 down to t0 of the adjoint λ_t = g_t C_t + exp(Δ_{t+1} A) λ_{t+1}; lam holds
// exp(Δ_{t1} A) λ_{t1} on entry and exp(Δ_{t0} A) λ_{t0} on exit; g_A_d gathers dL/dA_d.
template <class T, int64_t NS>
void adjoint_chunk(const Shape& S, const Args<T>& a, int64_t b, int64_t d, int64_t blk, int64_t t0,
                   int64_t t1, const Steps<T>& st, const T* __restrict dA, const T* __restrict hs,
                   T* __restrict lam, T* __restrict g_A_d) {
  const int64_t n = NS ? NS : S.n, L = S.length, bd = b * S.dim + d;
  const T *__restrict u = a.u + bd * L, *__restrict Ad = a.A + d * n, Dd = a.Dv[d];
  const Rows<const T> B_rows = bc_rows(S, a.Bx, S.b, b, d);
  const Rows<const T> C_rows = bc_rows(S, a.Cx, S.c, b, d);
  const int64_t blocks = S.dim / S.block;  // g_Bx, g_Cx: a block's partial sums, or d's own row
  const Rows<T> g_B_rows = S.b.vary ? Rows<T>{a.g_Bx + (b * blocks + blk) * L * n, n}
                                         : Rows<T>{a.g_Bx + bd * n, 0};
  const Rows<T> g_C_rows = S.c.vary ? Rows<T>{a.g_Cx + (b * blocks + blk) * L * n, n}
                                         : Rows<T>{a.g_Cx + bd * n, 0};
  const T slope = S.negative ? T(1) : T(0);  // d transition / d(Δ A) = transition + slope
  for (int64_t s = t1 - t0 - 1; s >= 0; --s) {
    const int64_t t = t0 + s;
    const T *__restrict Bt = B_rows[t], *__restrict Ct = C_rows[t];
    T *__restrict g_Bt = g_B_rows[t], *__restrict g_Ct = g_C_rows[t];
    const T *__restrict dA_s = dA + s * n, *__restrict prev = hs + s * n, *__restrict h = prev + n;
    const T g = st.g_y[t], dtv = st.dt[t], ut = u[t], dtu = dtv * ut;
    T g_dt = 0, g_dtu = 0;  // dL/dΔ_t through exp(Δ_t A), dL/d(Δ_t u_t)
#pragma GCC ivdep
    for (int64_t k = 0; k < n; ++k) {
      const T lam_k = lam[k] + g * Ct[k];  // λ_t
      const T q = lam_k * (dA_s[k] + slope) * prev[k];  // dL/d(Δ_t A_dk)
      g_dt += q * Ad[k];
      g_dtu += lam_k * Bt[k];
      g_A_d[k] += q * dtv;
      g_Ct[k] += g * h[k];
      g_Bt[k] += lam_k * dtu;
      lam[k] = lam_k * dA_s[k];
    }
    a.g_u[bd * L + t] = g_dtu * dtv + g * Dd;
    a.g_delta[bd * L + t] = (g_dt + g_dtu * ut) * st.d_dt[t];
  }
}

// The backward of one channel: per-step values, then chunks in reverse, then its sums.
template <class T, int64_t NS>
void backward_channel(const Shape& S, const Args<T>& a, int64_t b, int64_t d, int64_t blk, T* buf) {
  const int64_t L = S.length, n = NS ? NS : S.n, bd = b * S.dim + d;
  const int64_t chunks = (L + CHUNK - 1) / CHUNK;
  const Steps<T> st{buf, buf + L, buf + 2 * L, buf + 3 * L, buf + 4 * L};
  T *dA = buf + 5 * L, *hs = dA + CHUNK * n, *lam = hs + (CHUNK + 1) * n, *g_A_d = lam + n;
  steps(S, a.delta + bd * L, a.bias[d], st.dt, st.d_dt);
  if (S.has_z) gates(S, a.z + bd * L, st.silu, st.d_silu);
  for (int64_t t = 0; t < L; ++t) st.g_y[t] = a.g_out[bd * L + t] * (S.has_z ? st.silu[t] : T(1));
  std::copy(a.g_last + bd * n, a.g_last + (bd + 1) * n, lam);
  std::fill(g_A_d, g_A_d + n, T(0));
  for (int64_t c = chunks - 1; c >= 0; --c) {
    const int64_t t0 = c * CHUNK, t1 = std::min(L, t0 + CHUNK);
    std::copy(a.starts + (bd * chunks + c) * n, a.starts + (bd * chunks + c + 1) * n, hs);
    recompute_chunk<T, NS>(S, a, b, d, t0, t1, st.dt, dA, hs);
    adjoint_chunk<T, NS>(S, a, b, d, blk, t0, t1, st, dA, hs, lam, g_A_d);
  }
  if (S.has_z)
    for (int64_t t = 0; t < L; ++t)
      a.g_z[bd * L + t] = a.g_out[bd * L + t] * a.y[bd * L + t] * st.d_silu[t];
  T g_D = 0, g_bias = 0;
  for (int64_t t = 0; t < L; ++t) {
    g_D += st.g_y[t] * a.u[bd * L + t];
    g_bias += a.g_delta[bd * L + t];
  }
  std::copy(g_A_d, g_A_d + n, a.g_A + bd * n);
  a.g_D[bd] = g_D;
  a.g_bias[bd] = g_bias;
}

template <class T, int64_t NS>
void backward(const Shape& S, const Args<T>& a) {
  const int64_t blocks = S.dim / S.block, size = 5 * S.length + (2 * CHUNK + 3) * S.n;
  std::vector<std::vector<T>> bufs(S.threads, std::vector<T>(size));
  parallel(S.batch * blocks, S.threads, [&](int64_t i, int64_t id) {
    const int64_t b = i / blocks, blk = i % blocks;
    for (int64_t d = blk * S.block; d < (blk + 1) * S.block; ++d)
      backward_channel<T, NS>(S, a, b, d, blk, bufs[id].data());
  });
}

// N = 16 (Mamba's) compiled apart: the loops over the states become single vector operations.
template <class T>
void forward_any(const Shape& S, const Args<T>& a) {
  S.n == 16 ? forward<T, 16>(S, a) : forward<T, 0>(S, a);
}
template <class T>
void backward_any(const Shape& S, const Args<T>& a) {
  S.n == 16 ? backward<T, 16>(S, a) : backward<T, 0>(S, a);
}

}  // namespace

extern "C" {
void scan_forward_f32(const Shape* S, const Args<float>* a) { forward_any(*S, *a); }
void scan_forward_f64(const Shape* S, const Args<double>* a) { forward_any(*S, *a); }
void scan_backward_f32(const Shape* S, const Args<float>* a) { backward_any(*S, *a); }
void scan_backward_f64(const Shape* S, const Args<double>* a) { backward_any(*S, *a); }
}
