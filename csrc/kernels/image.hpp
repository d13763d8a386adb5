// Per-element math of the image-space losses: pointwise reconstruction losses (L1, squared
// L2) with optional mask and weights, and the total variation of image planes. Pure C++:
// raw pointers, noexcept, templated on the storage type T; bf16/f16 are computed in float
// and rounded once when stored. Values accumulate in double; the simd reduction order is
// fixed at compile time, so results do not depend on the thread count.
#pragma once
#include <cmath>
#include <cstdint>

#include "engine/dtype.hpp"
#include "kernels/penalty.hpp"  // sign_nan

namespace normreg::kernels {

enum class PointLoss : int { L1 = 0, MSE = 1 };

struct LossSums {
    double value = 0.0;  // sum of mask * weight * loss
    double mask = 0.0;   // sum of mask (the "mean" denominator when a mask is given)
};

inline LossSums operator+(LossSums a, LossSums b) noexcept { return LossSums{a.value + b.value, a.mask + b.mask}; }

// e_i = [m_i] [w_i] loss(p_i - t_i), loss = |d| or d^2, computed in the compute type of T
// without materializing p - t. Returns sum e_i and sum m_i (double); writes e_i to out when Out.
template <class T, PointLoss K, bool Mask, bool Weight, bool Out>
NORMREG_KERNEL LossSums pointwise_value(const T* __restrict p, const T* __restrict t, const T* __restrict m, const T* __restrict w,
                                T* __restrict out, std::int64_t n) noexcept {
    using C = compute_t<T>;
    double s = 0.0, sm = 0.0;
#pragma omp simd reduction(+ : s, sm)
    for (std::int64_t i = 0; i < n; ++i) {
        const C d = load<T>(p[i]) - load<T>(t[i]);
        C e;
        if constexpr (K == PointLoss::L1) e = d < C(0) ? -d : d;  // |d|, NaN stays NaN
        else e = d * d;
        if constexpr (Mask) {
            const C mv = load<T>(m[i]);
            e = mv * e;
            sm += static_cast<double>(mv);
        }
        if constexpr (Weight) e = load<T>(w[i]) * e;
        if constexpr (Out) out[i] = store<T>(e);
        s += static_cast<double>(e);
    }
    return LossSums{s, sm};
}

// Gradient w.r.t. p of scale * sum_i [go_i] [m_i] [w_i] loss(p_i - t_i):
//   gp_i = c * dloss_i * [m_i] * [w_i] * [go_i],  c = scale (L1, dloss = sign(d), 0 at 0)
//                                                 or 2 * scale (MSE, dloss = d);
// gt_i = -gp_i when GTarget (the gradient w.r.t. t). One pass, nothing else is written.
template <class T, PointLoss K, bool Mask, bool Weight, bool GOut, bool GTarget>
NORMREG_KERNEL void pointwise_grad(const T* __restrict p, const T* __restrict t, const T* __restrict m, const T* __restrict w,
                           const T* __restrict go, T* __restrict gp, T* __restrict gt, std::int64_t n, double scale) noexcept {
    using C = compute_t<T>;
    const C c = static_cast<C>(K == PointLoss::L1 ? scale : 2.0 * scale);
#pragma omp simd
    for (std::int64_t i = 0; i < n; ++i) {
        const C d = load<T>(p[i]) - load<T>(t[i]);
        C g;
        if constexpr (K == PointLoss::L1) g = c * sign_nan(d);
        else g = c * d;
        if constexpr (Mask) g = g * load<T>(m[i]);
        if constexpr (Weight) g = g * load<T>(w[i]);
        if constexpr (GOut) g = g * load<T>(go[i]);
        gp[i] = store<T>(g);
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
NORMREG_KERNEL double tv_row_value(const T* __restrict r, const T* __restrict rn, std::int64_t W, compute_t<T> eps) noexcept {
    using C = compute_t<T>;
    double s = 0.0;
    if constexpr (K == TVKind::Anisotropic) {
#pragma omp simd reduction(+ : s)
        for (std::int64_t j = 0; j < W - 1; ++j) {
            const C dx = load<T>(r[j + 1]) - load<T>(r[j]);
            s += static_cast<double>(dx < C(0) ? -dx : dx);
        }
        if (rn) {
#pragma omp simd reduction(+ : s)
            for (std::int64_t j = 0; j < W; ++j) {
                const C dy = load<T>(rn[j]) - load<T>(r[j]);
                s += static_cast<double>(dy < C(0) ? -dy : dy);
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

// Anisotropic gradient of row i, one stencil pass:
//   g(i,j) = scale * ( sign(dx(i,j-1)) - sign(dx(i,j)) + sign(dy(i-1,j)) - sign(dy(i,j)) ),
// terms that fall off the plane omitted. rp / rn are rows i-1 / i+1 (used when Up / Down).
template <class T, bool Up, bool Down>
NORMREG_KERNEL void tv_aniso_grad_row(const T* __restrict rp, const T* __restrict r, const T* __restrict rn, T* __restrict g,
                              std::int64_t W, compute_t<T> scale) noexcept {
    using C = compute_t<T>;
    auto edge = [&](std::int64_t j) noexcept {
        const C v = load<T>(r[j]);
        C s = C(0);
        if (j + 1 < W) s -= sign_nan(load<T>(r[j + 1]) - v);
        if (j > 0) s += sign_nan(v - load<T>(r[j - 1]));
        if constexpr (Down) s -= sign_nan(load<T>(rn[j]) - v);
        if constexpr (Up) s += sign_nan(v - load<T>(rp[j]));
        g[j] = store<T>(scale * s);
    };
    if (W <= 2) {
        for (std::int64_t j = 0; j < W; ++j) edge(j);
        return;
    }
    edge(0);
#pragma omp simd
    for (std::int64_t j = 1; j < W - 1; ++j) {
        const C v = load<T>(r[j]);
        C s = sign_nan(v - load<T>(r[j - 1])) - sign_nan(load<T>(r[j + 1]) - v);
        if constexpr (Down) s -= sign_nan(load<T>(rn[j]) - v);
        if constexpr (Up) s += sign_nan(v - load<T>(rp[j]));
        g[j] = store<T>(scale * s);
    }
    edge(W - 1);
}

// 1/t with the subgradient convention 0 at t = 0 (only reachable with eps = 0); NaN stays NaN.
template <class C>
inline C inv_or_zero(C t) noexcept {
    return t == C(0) ? C(0) : C(1) / t;
}

// Isotropic directions of row i: ax(j) = dx(i,j) / T(i,j), by(j) = dy(i,j) / T(i,j) with
// T = sqrt(dx^2 + dy^2 + eps); rn is row i+1 or null (then dy = 0).
template <class T>
NORMREG_KERNEL void tv_iso_dirs(const T* __restrict r, const T* __restrict rn, std::int64_t W, compute_t<T> eps,
                        compute_t<T>* __restrict ax, compute_t<T>* __restrict by) noexcept {
    using C = compute_t<T>;
    if (rn) {
#pragma omp simd
        for (std::int64_t j = 0; j < W - 1; ++j) {
            const C v = load<T>(r[j]);
            const C dx = load<T>(r[j + 1]) - v, dy = load<T>(rn[j]) - v;
            const C inv = inv_or_zero(std::sqrt(dx * dx + dy * dy + eps));
            ax[j] = dx * inv;
            by[j] = dy * inv;
        }
        const C dy = load<T>(rn[W - 1]) - load<T>(r[W - 1]);
        ax[W - 1] = C(0);
        by[W - 1] = dy * inv_or_zero(std::sqrt(dy * dy + eps));
    } else {
#pragma omp simd
        for (std::int64_t j = 0; j < W - 1; ++j) {
            const C dx = load<T>(r[j + 1]) - load<T>(r[j]);
            ax[j] = dx * inv_or_zero(std::sqrt(dx * dx + eps));
            by[j] = C(0);
        }
        ax[W - 1] = C(0);
        by[W - 1] = C(0);
    }
}

// Isotropic gradient of row i from its directions and the by of row i-1 (byp):
//   g(i,j) = scale * ( ax(j-1) - ax(j) + byp(j) - by(j) ),  ax(-1) = 0.
template <class T>
NORMREG_KERNEL void tv_iso_grad_row(const compute_t<T>* __restrict ax, const compute_t<T>* __restrict by,
                            const compute_t<T>* __restrict byp, T* __restrict g, std::int64_t W, compute_t<T> scale) noexcept {
    g[0] = store<T>(scale * (byp[0] - ax[0] - by[0]));
#pragma omp simd
    for (std::int64_t j = 1; j < W; ++j) g[j] = store<T>(scale * (ax[j - 1] - ax[j] + byp[j] - by[j]));
}

}  // namespace normreg::kernels
