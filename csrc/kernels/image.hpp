// Per-element math of the image-space losses: pointwise reconstruction losses (L1, squared
// L2) with optional mask and weights, and the total variation of image planes. Pure C++:
// raw pointers, noexcept, templated on the storage type T; bf16/f16 are computed in float
// and rounded once when stored. Values accumulate in double (the pointwise losses' float
// inputs first in float partials of kDepth rows, as abs_sq_sum); the simd reduction order
// is fixed at compile time, so results do not depend on the thread count.
#pragma once
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "core/dtype.hpp"
#include "core/simd.hpp"
#include "kernels/penalty.hpp"  // sign_nan

namespace normreg::kernels {

using core::compute_t;
using core::load;
using core::store;

enum class PointLoss : int { L1 = 0, MSE = 1 };

struct LossSums {
    double value = 0.0;  // sum of mask * weight * loss
    double mask = 0.0;   // sum of mask (the "mean" denominator when a mask is given)
};

inline LossSums operator+(LossSums a, LossSums b) noexcept { return LossSums{a.value + b.value, a.mask + b.mask}; }

// The factor of a gradient: scale (L1) or 2 * scale (MSE, d(d^2) = 2d), in C.
template <class C, PointLoss K>
inline C grad_factor(double scale) noexcept {
    return static_cast<C>(K == PointLoss::L1 ? scale : 2.0 * scale);
}

// One element's terms, in the compute type C of T, without materializing p - t:
// e = [m] [w] loss(p - t), loss = |d| or d^2, and g = (dloss(d) * [m]) * [w], dloss =
// sign(d) (L1; 0 at 0, NaN stays NaN) or d (MSE); mv is m (left as it is without a mask).
// The one definition of the pointwise losses' arithmetic: pointwise_value and pointwise_none
// both call it, so values, elementwise losses and gradients agree bitwise however reached.
template <class T, PointLoss K, bool Mask, bool Weight>
NORMREG_INLINE void point_terms(const T* __restrict p, const T* __restrict t, const T* __restrict m, const T* __restrict w,
                                std::int64_t i, compute_t<T>& e, compute_t<T>& g, compute_t<T>& mv) noexcept {
    using C = compute_t<T>;
    const C d = load<T>(p[i]) - load<T>(t[i]);
    if constexpr (K == PointLoss::L1) {
        e = std::fabs(d);  // branch-free; NaN stays NaN
        g = sign_nan(d);
    } else {
        e = d * d;
        g = d;
    }
    if constexpr (Mask) {
        mv = load<T>(m[i]);
        e = mv * e;
        g = g * mv;
    }
    if constexpr (Weight) {
        const C wv = load<T>(w[i]);
        e = wv * e;
        g = g * wv;
    }
}

// Sum e_i and sum m_i (double) of those terms: the "mean" and "sum" reductions. When Dir, the
// same pass also writes the gradient for an incoming gradient of 1, in C:
//   u_i = c1 * g_i,  c1 = grad_factor(dir_scale) (dir_scale: 1/numel for an unmasked mean, else 1),
// so a backward with incoming gradient k needs at most one scaling pass (pointwise_grad_scale).
template <class T, PointLoss K, bool Mask, bool Weight, bool Dir>
NORMREG_KERNEL LossSums pointwise_value(const T* __restrict p, const T* __restrict t, const T* __restrict m, const T* __restrict w,
                                compute_t<T>* __restrict u, std::int64_t n, double dir_scale) noexcept {
    using C = compute_t<T>;
    const C c1 = grad_factor<C, K>(dir_scale);
    // element i: writes u, returns e_i; mv is m_i (1 without a mask)
    auto one = [&](std::int64_t i, C& mv) __attribute__((always_inline)) {
        C e, g;
        point_terms<T, K, Mask, Weight>(p, t, m, w, i, e, g, mv);
        if constexpr (Dir) u[i] = c1 * g;
        return e;
    };
    auto prefetch = [&](std::int64_t i) __attribute__((always_inline)) {
        __builtin_prefetch(p + i + NORMREG_PREFETCH_ELEMS, 0, 3);
        __builtin_prefetch(t + i + NORMREG_PREFETCH_ELEMS, 0, 3);
        if constexpr (Mask) __builtin_prefetch(m + i + NORMREG_PREFETCH_ELEMS, 0, 3);
        if constexpr (Weight) __builtin_prefetch(w + i + NORMREG_PREFETCH_ELEMS, 0, 3);
    };
    // Every e_i and m_i is >= 0 (masks and weights are checked finite and >= 0), so float
    // partials of kDepth rows are within ~2.4e-7 of their exact sums, as in abs_sq_sum.
    double s[kLanes] = {}, sm[kLanes] = {};
    std::int64_t i = 0;
    if constexpr (std::is_same_v<C, float>) {
        for (; i + kLanes * kDepth <= n; i += kLanes * kDepth) {
            float fs[kLanes] = {}, fm[kLanes] = {};
            for (std::int64_t k = 0; k < kDepth; ++k) {
                prefetch(i + k * kLanes);
#pragma omp simd
                for (std::int64_t j = 0; j < kLanes; ++j) {
                    C mv = 1;
                    fs[j] += one(i + k * kLanes + j, mv);
                    if constexpr (Mask) fm[j] += mv;
                }
            }
#pragma omp simd
            for (std::int64_t j = 0; j < kLanes; ++j) {
                s[j] += static_cast<double>(fs[j]);
                if constexpr (Mask) sm[j] += static_cast<double>(fm[j]);
            }
        }
    }
    for (; i + kLanes <= n; i += kLanes) {
        prefetch(i);
#pragma omp simd
        for (std::int64_t j = 0; j < kLanes; ++j) {
            C mv = 1;
            s[j] += static_cast<double>(one(i + j, mv));
            if constexpr (Mask) sm[j] += static_cast<double>(mv);
        }
    }
    for (std::int64_t j = 0; i + j < n; ++j) {
        C mv = 1;
        s[j] += static_cast<double>(one(i + j, mv));
        if constexpr (Mask) sm[j] += static_cast<double>(mv);
    }
    double ts = 0.0, tm = 0.0;
    for (std::int64_t j = 0; j < kLanes; ++j) {
        ts += s[j];
        tm += sm[j];
    }
    if constexpr (std::is_same_v<C, float>) {
        // A float partial overflows past 2^128 where the terms in double do not: then the
        // sums are taken again term by term in double (reading only; u is written).
        if (!(ts <= std::numeric_limits<double>::max() && tm <= std::numeric_limits<double>::max()) && ts == ts) {
            ts = 0.0, tm = 0.0;
            for (std::int64_t k = 0; k < n; ++k) {
                C e, g, mv = 1;
                point_terms<T, K, Mask, Weight>(p, t, m, w, k, e, g, mv);
                ts += static_cast<double>(e);
                tm += static_cast<double>(mv);
            }
            if constexpr (!Mask) tm = 0.0;
        }
    }
    return LossSums{ts, tm};
}

// The elementwise loss (reduction "none"): out_i = e_i stored in T, and u_i = c1 * g_i when
// Dir (the terms of point_terms). Returns sum m_i (double; 0 without a mask), the denominator
// a masked mean would use. One plain loop: "none" sums no losses, so it needs none of
// pointwise_value's partials (and half its instantiations).
template <class T, PointLoss K, bool Mask, bool Weight, bool Dir>
NORMREG_KERNEL double pointwise_none(const T* __restrict p, const T* __restrict t, const T* __restrict m, const T* __restrict w,
                             T* __restrict out, compute_t<T>* __restrict u, std::int64_t n, double dir_scale) noexcept {
    using C = compute_t<T>;
    const C c1 = grad_factor<C, K>(dir_scale);
    double sm = 0.0;
#pragma omp simd reduction(+ : sm)
    for (std::int64_t i = 0; i < n; ++i) {
        C e, g, mv = 1;
        point_terms<T, K, Mask, Weight>(p, t, m, w, i, e, g, mv);
        out[i] = store<T>(e);
        if constexpr (Dir) u[i] = c1 * g;
        if constexpr (Mask) sm += static_cast<double>(mv);
    }
    return sm;
}

// The backward from the forward's gradient u (compute type): gp_i = (u_i * k) * [go_i] when
// GPred, gt_i = minus that when GTarget; k = (C) scale. gp may be u itself (T == C, in place:
// each element is read before it is written, so u and gp are not restrict).
template <class T, bool GOut, bool GPred, bool GTarget>
NORMREG_KERNEL void pointwise_grad_scale(const compute_t<T>* u, const T* __restrict go, T* gp, T* __restrict gt, std::int64_t n,
                                 double scale) noexcept {
    using C = compute_t<T>;
    const C k = static_cast<C>(scale);
#pragma omp simd
    for (std::int64_t i = 0; i < n; ++i) {
        C g = u[i] * k;
        if constexpr (GOut) g = g * load<T>(go[i]);
        if constexpr (GPred) gp[i] = store<T>(g);
        if constexpr (GTarget) gt[i] = store<T>(-g);
    }
}

// ---- total variation of one H x W plane --------------------------------------------------
// Forward differences with a zero difference past the last row / column (Neumann boundary):
//   dx(i,j) = x(i,j+1) - x(i,j) for j < W-1, else 0;   dy(i,j) = x(i+1,j) - x(i,j) for i < H-1, else 0.
// anisotropic: sum_{i,j} |dx(i,j)| + |dy(i,j)|
// isotropic:   sum_{i,j} sqrt(dx(i,j)^2 + dy(i,j)^2 + eps)       (H * W terms)

enum class TVKind : int { Anisotropic = 0, Isotropic = 1 };

// Value of the terms of row i (pointer r) of a plane of width W; rn is row i+1 or null.
template <class T, TVKind K>
inline double tv_row_value(const T* __restrict r, const T* __restrict rn, std::int64_t W, compute_t<T> eps) noexcept {
    using C = compute_t<T>;
    double s = 0.0;
    if constexpr (K == TVKind::Anisotropic) {
#pragma omp simd reduction(+ : s)
        for (std::int64_t j = 0; j < W - 1; ++j) {
            const C dx = load<T>(r[j + 1]) - load<T>(r[j]);
            s += static_cast<double>(std::fabs(dx));
        }
        if (rn) {
#pragma omp simd reduction(+ : s)
            for (std::int64_t j = 0; j < W; ++j) {
                const C dy = load<T>(rn[j]) - load<T>(r[j]);
                s += static_cast<double>(std::fabs(dy));
            }
        }
    } else {
        if (rn) {
#pragma omp simd reduction(+ : s)
            for (std::int64_t j = 0; j < W - 1; ++j) {
                const C v = load<T>(r[j]);
                const C dx = load<T>(r[j + 1]) - v, dy = load<T>(rn[j]) - v;
                s += static_cast<double>(std::sqrt(dx * dx + dy * dy + eps));
            }
            const C dy = load<T>(rn[W - 1]) - load<T>(r[W - 1]);
            s += static_cast<double>(std::sqrt(dy * dy + eps));
        } else {
#pragma omp simd reduction(+ : s)
            for (std::int64_t j = 0; j < W - 1; ++j) {
                const C dx = load<T>(r[j + 1]) - load<T>(r[j]);
                s += static_cast<double>(std::sqrt(dx * dx + eps));
            }
            s += static_cast<double>(std::sqrt(eps));
        }
    }
    return s;
}

// 1/t with the subgradient convention 0 at t = 0 (only reachable with eps = 0); NaN stays NaN.
// Branch-free (no division by zero either), so the loops that call it vectorize.
template <class C>
inline C inv_or_zero(C t) noexcept {
    const C nz = static_cast<C>(t != C(0));
    return nz / (t + (C(1) - nz));
}

// Directions of row i, the derivative of each term w.r.t. its differences:
//   anisotropic: ax(j) = sign(dx(i,j)), by(j) = sign(dy(i,j))   (0 at 0, NaN stays NaN);
//   isotropic:   ax(j) = dx(i,j) / T(i,j), by(j) = dy(i,j) / T(i,j), T = sqrt(dx^2 + dy^2 + eps)
//                (0 where T = 0, which only eps = 0 reaches).
// rn is row i+1 or null (last row: dy = 0); ax(W-1) = 0 (dx = 0 past the last column).
template <class T, TVKind K>
inline void tv_dirs(const T* __restrict r, const T* __restrict rn, std::int64_t W, compute_t<T> eps,
                    compute_t<T>* __restrict ax, compute_t<T>* __restrict by) noexcept {
    using C = compute_t<T>;
    if (rn) {
#pragma omp simd
        for (std::int64_t j = 0; j < W - 1; ++j) {
            const C v = load<T>(r[j]);
            const C dx = load<T>(r[j + 1]) - v, dy = load<T>(rn[j]) - v;
            if constexpr (K == TVKind::Anisotropic) {
                ax[j] = sign_nan(dx);
                by[j] = sign_nan(dy);
            } else {
                const C inv = inv_or_zero(std::sqrt(dx * dx + dy * dy + eps));
                ax[j] = dx * inv;
                by[j] = dy * inv;
            }
        }
        const C dy = load<T>(rn[W - 1]) - load<T>(r[W - 1]);
        ax[W - 1] = C(0);
        if constexpr (K == TVKind::Anisotropic) by[W - 1] = sign_nan(dy);
        else by[W - 1] = dy * inv_or_zero(std::sqrt(dy * dy + eps));
    } else {
#pragma omp simd
        for (std::int64_t j = 0; j < W - 1; ++j) {
            const C dx = load<T>(r[j + 1]) - load<T>(r[j]);
            if constexpr (K == TVKind::Anisotropic) ax[j] = sign_nan(dx);
            else ax[j] = dx * inv_or_zero(std::sqrt(dx * dx + eps));
            by[j] = C(0);
        }
        ax[W - 1] = C(0);
        by[W - 1] = C(0);
    }
}

// Gradient of row i from its directions and the by of row i-1 (byp), either kind:
//   g(i,j) = scale * ( ax(j-1) - ax(j) + byp(j) - by(j) ),  ax(-1) = 0.
template <class T>
inline void tv_grad_row(const compute_t<T>* __restrict ax, const compute_t<T>* __restrict by,
                        const compute_t<T>* __restrict byp, T* __restrict g, std::int64_t W, compute_t<T> scale) noexcept {
    g[0] = store<T>(scale * (byp[0] - ax[0] - by[0]));
#pragma omp simd
    for (std::int64_t j = 1; j < W; ++j) g[j] = store<T>(scale * (ax[j - 1] - ax[j] + byp[j] - by[j]));
}

// ---- a block of rows [r0, r1) of one H x W plane: the unit the engine runs in parallel ----
// (The row helpers above are inlined here, so each block makes one dispatched call.)

// ---- float32 value of rows that have a next row, in explicit 8-wide vectors -------------
// The generic row loop above pays, per row, two double reductions with their horizontal sums
// and a scalar remainder (W - 1 terms): images of 64 pixels a row spent most of their time
// there. Here a row is read in blocks of 8 that take both terms of each pixel, |dx| and |dy|
// (or the isotropic sqrt(dx^2 + dy^2 + eps)); kTVDepth blocks are added in float before each
// double accumulation, into lanes kept for the whole block of rows. Every term is >= 0, so a
// float partial of 2 * kTVDepth terms is within 2 * kTVDepth * 2^-24 ~ 2.4e-7 of its exact
// value, inside the 1e-6 promised against float64. The last block of a row reads one element
// past the row, x(i+1, 0), which exists because row i+1 does; its dx(W-1) (not a term) is
// masked to +0 bit by bit, so nothing there (NaN, Inf) reaches the sum. GCC's vector
// extensions compile to AVX2 in the avx2 clone and to SSE2 pairs in the default one.
// (GCC's -Wpsabi note about these 32-byte vectors is off in CMakeLists.txt: they only live
// inside the always-inlined helpers.)
namespace tv8 {
typedef float f8 __attribute__((vector_size(32)));
typedef std::int32_t i8 __attribute__((vector_size(32)));
typedef double d4 __attribute__((vector_size(32)));
typedef float f4 __attribute__((vector_size(16)));
constexpr int kTVDepth = 2;

__attribute__((always_inline)) inline f8 load8(const float* p) noexcept {
    f8 v;
    __builtin_memcpy(&v, p, sizeof v);
    return v;
}
__attribute__((always_inline)) inline f8 abs8(f8 x) noexcept { return reinterpret_cast<f8>(reinterpret_cast<i8>(x) & 0x7fffffff); }

template <TVKind K>
__attribute__((always_inline)) inline f8 terms8(f8 v, f8 right, f8 below, i8 keep_dx, f8 eps) noexcept {
    const f8 dx = reinterpret_cast<f8>(reinterpret_cast<i8>(right - v) & keep_dx);
    const f8 dy = below - v;
    if constexpr (K == TVKind::Anisotropic) {
        return abs8(dx) + abs8(dy);
    } else {
        const f8 q = dx * dx + dy * dy + eps;
        f8 out;
        for (int l = 0; l < 8; ++l) out[l] = std::sqrt(q[l]);  // vectorized: vsqrtps / 2 x sqrtps
        return out;
    }
}

// Sum of the terms of rows [r0, r1) of a float plane, each row with a next row (r1 <= H - 1).
template <TVKind K>
__attribute__((always_inline)) inline double rows_with_next(const float* __restrict plane, std::int64_t W, std::int64_t r0,
                                                            std::int64_t r1, float eps) noexcept {
    d4 lo = {0.0, 0.0, 0.0, 0.0}, hi = {0.0, 0.0, 0.0, 0.0};
    double tail = 0.0;
    const f8 veps = {eps, eps, eps, eps, eps, eps, eps, eps};
    const i8 all = {-1, -1, -1, -1, -1, -1, -1, -1};
    const i8 lane = {0, 1, 2, 3, 4, 5, 6, 7};
    const i8 last_keep = lane < 7;  // the last block of a row whose width is a multiple of 8
    auto flush = [&](f8 f) __attribute__((always_inline)) {
        const f4 a = {f[0], f[1], f[2], f[3]}, b = {f[4], f[5], f[6], f[7]};
        lo += __builtin_convertvector(a, d4);
        hi += __builtin_convertvector(b, d4);
    };
    for (std::int64_t i = r0; i < r1; ++i) {
        const float* __restrict r = plane + i * W;
        const float* __restrict rn = r + W;
        f8 f = {};
        int depth = 0;
        std::int64_t j = 0;
        for (; j + 8 < W; j += 8) {  // every pixel j..j+7 < W - 1 has its dx
            const f8 v = load8(r + j);
            f += terms8<K>(v, load8(r + j + 1), load8(rn + j), all, veps);
            if (++depth == kTVDepth) {
                flush(f);
                f = f8{};
                depth = 0;
            }
        }
        if (j + 8 == W) {  // last 8 pixels; r[W] is rn[0]
            const f8 v = load8(r + j);
            f += terms8<K>(v, load8(r + j + 1), load8(rn + j), last_keep, veps);
            j = W;
        }
        flush(f);
        for (; j < W; ++j) {  // a width that is not a multiple of 8: the rest one by one
            const float v = r[j];
            const float dy = rn[j] - v;
            const float dx = j + 1 < W ? r[j + 1] - v : 0.0f;
            if constexpr (K == TVKind::Anisotropic) tail += static_cast<double>(std::fabs(dx) + std::fabs(dy));
            else tail += static_cast<double>(std::sqrt(dx * dx + dy * dy + eps));
        }
    }
    double s = tail;
    for (int l = 0; l < 4; ++l) s += lo[l] + hi[l];
    return s;
}

// sign(d) with sign(0) = 0 and NaN kept (kernels::sign_nan), 8 lanes.
__attribute__((always_inline)) inline f8 sign8(f8 d) noexcept {
    const f8 one = {1, 1, 1, 1, 1, 1, 1, 1};
    const f8 s = reinterpret_cast<f8>(reinterpret_cast<i8>(one) & (d > 0)) - reinterpret_cast<f8>(reinterpret_cast<i8>(one) & (d < 0));
    const i8 nan = d != d;
    return reinterpret_cast<f8>((reinterpret_cast<i8>(d) & nan) | (reinterpret_cast<i8>(s) & ~nan));
}
__attribute__((always_inline)) inline f8 mask8(f8 x, i8 keep) noexcept { return reinterpret_cast<f8>(reinterpret_cast<i8>(x) & keep); }

// Directions of pixels from their differences, 8 at a time (the generic path's tv_dirs):
//   anisotropic: ax = sign(dx), by = sign(dy);
//   isotropic:   ax = dx / T, by = dy / T, T = sqrt(dx^2 + dy^2 + eps) (0 where T = 0).
// dx is +0 where keep_dx is clear (past the last column: T then has no dx term, bit for bit
// as tv_dirs computes it) and ax is 0 there; without a row below, dy = 0 and by = 0.
template <TVKind K, bool HasDown>
__attribute__((always_inline)) inline void dirs8(f8 dx, f8 dy, i8 keep_dx, f8 eps, f8& ax, f8& by) noexcept {
    dx = mask8(dx, keep_dx);
    if constexpr (!HasDown) dy = f8{};
    if constexpr (K == TVKind::Anisotropic) {
        ax = sign8(dx);
        by = HasDown ? sign8(dy) : f8{};
    } else {
        const f8 q = dx * dx + dy * dy + eps;
        f8 t;
        for (int l = 0; l < 8; ++l) t[l] = std::sqrt(q[l]);
        const f8 one = {1, 1, 1, 1, 1, 1, 1, 1};
        const f8 nz = reinterpret_cast<f8>(reinterpret_cast<i8>(one) & (t != 0));
        const f8 inv = nz / (t + (one - nz));  // inv_or_zero
        ax = mask8(dx * inv, keep_dx);
        by = HasDown ? dy * inv : f8{};
    }
}

// The same for one pixel (row ends, and the row above a block of rows).
template <TVKind K, bool HasDown>
__attribute__((always_inline)) inline void dirs1(const float* __restrict r, std::int64_t j, std::int64_t W, float eps, float& ax,
                                                 float& by) noexcept {
    const float v = r[j];
    const bool right = j + 1 < W;
    const float dx = right ? r[j + 1] - v : 0.0f;
    const float dy = HasDown ? r[W + j] - v : 0.0f;
    if constexpr (K == TVKind::Anisotropic) {
        ax = right ? sign_nan(dx) : 0.0f;
        by = HasDown ? sign_nan(dy) : 0.0f;
    } else {
        const float inv = inv_or_zero(std::sqrt(dx * dx + dy * dy + eps));
        ax = right ? dx * inv : 0.0f;
        by = HasDown ? dy * inv : 0.0f;
    }
}

// Gradient rows [r0, r1) of a float plane of width W >= 16, either kind:
//   g(i,j) = scale * (ax(j-1) - ax(j) + by(i-1,j) - by(i,j)),
// with the directions of dirs8 / dirs1 (dx = 0 past the last column, dy = 0 past the last
// row). Each pixel's directions are computed once, with the same operations on the same
// floats as the generic path (tv_dirs): ax(j-1) is the previous block's ax shifted by one
// lane, by(i-1,.) is kept from the row above in `byrow` (W floats). Nothing is read outside
// the plane's rows: the last pixel's missing right neighbour is masked, not loaded.
template <TVKind K, bool HasDown>
__attribute__((always_inline)) inline void grad_row(const float* __restrict r, float* __restrict gr, float* __restrict byrow,
                                                    std::int64_t W, f8 sc, f8 eps) noexcept {
    const i8 all = {-1, -1, -1, -1, -1, -1, -1, -1};
    const i8 lane = {0, 1, 2, 3, 4, 5, 6, 7};
    const i8 not_last = lane < 7;
    const std::int64_t full = W / 8 * 8;               // blocks [0, full); pixels [full, W) one by one
    const std::int64_t stop = full == W ? W - 8 : full;  // a last full block ends the row: done apart
    f8 ax_prev = {};
    auto block = [&](std::int64_t j, f8 v, f8 right, i8 keep_dx) __attribute__((always_inline)) {
        f8 down = {};
        if constexpr (HasDown) down = load8(r + W + j);
        f8 ax, by;
        dirs8<K, HasDown>(right - v, down - v, keep_dx, eps, ax, by);
        const f8 axl = __builtin_shufflevector(ax_prev, ax, 7, 8, 9, 10, 11, 12, 13, 14);
        const f8 byp = load8(byrow + j);
        __builtin_memcpy(byrow + j, &by, sizeof by);
        const f8 out = sc * (((axl - ax) + byp) - by);
        __builtin_memcpy(gr + j, &out, sizeof out);
        ax_prev = ax;
    };
    std::int64_t j = 0;
    for (; j < stop; j += 8) block(j, load8(r + j), load8(r + j + 1), all);
    if (full == W) {  // the last 8: pixel W-1 has no right neighbour
        const f8 v = load8(r + j);
        block(j, v, __builtin_shufflevector(v, v, 1, 2, 3, 4, 5, 6, 7, 7), not_last);
        j = W;
    }
    float axp = ax_prev[7];  // ax of pixel full - 1
    for (; j < W; ++j) {     // the rest one by one, same formulas
        float ax, by;
        dirs1<K, HasDown>(r, j, W, eps[0], ax, by);
        const float byp = byrow[j];
        byrow[j] = by;
        gr[j] = sc[0] * (((axp - ax) + byp) - by);
        axp = ax;
    }
}

template <TVKind K>
__attribute__((always_inline)) inline void grad_rows(const float* __restrict plane, float* __restrict g, std::int64_t H,
                                                     std::int64_t W, std::int64_t r0, std::int64_t r1, float scale, float eps,
                                                     float* __restrict byrow) noexcept {
    const f8 sc = {scale, scale, scale, scale, scale, scale, scale, scale};
    const f8 ve = {eps, eps, eps, eps, eps, eps, eps, eps};
    for (std::int64_t j = 0; j < W; ++j) {  // by of the row above the block (0 above the first row)
        float ax = 0.0f, by = 0.0f;
        if (r0 > 0) dirs1<K, true>(plane + (r0 - 1) * W, j, W, eps, ax, by);
        byrow[j] = by;
    }
    for (std::int64_t i = r0; i < r1; ++i) {
        if (i + 1 < H) grad_row<K, true>(plane + i * W, g + i * W, byrow, W, sc, ve);
        else grad_row<K, false>(plane + i * W, g + i * W, byrow, W, sc, ve);
    }
}
}  // namespace tv8

// Sum of the terms of rows [r0, r1).
template <class T, TVKind K>
NORMREG_KERNEL double tv_block_value(const T* __restrict plane, std::int64_t H, std::int64_t W, std::int64_t r0, std::int64_t r1,
                                     compute_t<T> eps) noexcept {
    double acc = 0.0;
    if constexpr (std::is_same_v<T, float>) {
        const std::int64_t r_end = r1 < H ? r1 : H - 1;  // rows with a next row
        if (r0 < r_end) {
            acc += tv8::rows_with_next<K>(plane, W, r0, r_end, eps);
            r0 = r_end;
        }
    }
    for (std::int64_t i = r0; i < r1; ++i) acc += tv_row_value<T, K>(plane + i * W, i + 1 < H ? plane + (i + 1) * W : nullptr, W, eps);
    return acc;
}

// Gradient rows [r0, r1) of g = scale * dTV/dx; buf holds 3 * W compute-type scratch values.
template <class T, TVKind K>
NORMREG_KERNEL void tv_block_grad(const T* __restrict plane, T* __restrict g, std::int64_t H, std::int64_t W, std::int64_t r0,
                                  std::int64_t r1, compute_t<T> eps, compute_t<T> scale, compute_t<T>* __restrict buf) noexcept {
    using C = compute_t<T>;
    if constexpr (std::is_same_v<T, float>) {
        if (W >= 16) {
            tv8::grad_rows<K>(plane, g, H, W, r0, r1, scale, eps, buf);
            return;
        }
    }
    C* ax = buf;
    C* by = buf + W;
    C* byp = buf + 2 * W;
    if (r0 > 0) tv_dirs<T, K>(plane + (r0 - 1) * W, plane + r0 * W, W, eps, ax, byp);
    else
        for (std::int64_t j = 0; j < W; ++j) byp[j] = C(0);
    for (std::int64_t i = r0; i < r1; ++i) {
        tv_dirs<T, K>(plane + i * W, i + 1 < H ? plane + (i + 1) * W : nullptr, W, eps, ax, by);
        tv_grad_row<T>(ax, by, byp, g + i * W, W, scale);
        C* tmp = by;
        by = byp;
        byp = tmp;
    }
}

}  // namespace normreg::kernels
