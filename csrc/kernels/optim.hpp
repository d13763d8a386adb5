// Per-element math of the proximal optimizers: moment updates, the parameter update and
// the prox of an elementwise penalty, fused in one pass over memory. Pure C++: raw
// pointers, noexcept, templated on the storage type T; scalars (bias corrections, step
// sizes) are precomputed by the caller, as in apex's multi_tensor_adam.
//
// The update formulas follow torch.optim's single-tensor SGD and Adam operation by
// operation (same order, same rounding points in the compute type), so with no penalty the
// results agree with torch.optim to a few ulps per step.
#pragma once
#include <cmath>
#include <cstdint>

#include "engine/dtype.hpp"
#include "kernels/prox.hpp"

namespace normreg::kernels {

// Elementwise prox fused into an optimizer step.
//   None:   no prox
//   Shrink: elastic net  w <- soft(w, a) / (1 + b)           (a = lr*l1, b = lr*l2)
//   Hard:   exact L0     w <- |w| <= sqrt(2a) ? 0 : w        (a = lr*l0)
// Preconditioned (Adam): the metric is diag(den)/lr, so a and b are divided by the
// element's denominator den = sqrt(v_hat) + eps.
enum class ProxKind : int { None = 0, Shrink = 1, Hard = 2 };

template <class C>
struct ProxConst {
    C a;     // threshold (Shrink), a (Hard, preconditioned)
    C b;     // ridge strength (preconditioned Shrink)
    C inv;   // 1 / (1 + b) (plain Shrink)
    C thr;   // sqrt(2a) (plain Hard)
    C two_a; // 2a (preconditioned Hard)
};

template <class C>
inline ProxConst<C> prox_const(double a, double b) noexcept {
    return ProxConst<C>{static_cast<C>(a), static_cast<C>(b), static_cast<C>(1.0 / (1.0 + b)), static_cast<C>(std::sqrt(2.0 * a)),
                        static_cast<C>(2.0 * a)};
}

template <int Kind, bool Pre, class C>
inline C fused_prox(C v, const ProxConst<C>& p, C den) noexcept {
    if constexpr (Kind == static_cast<int>(ProxKind::Shrink)) {
        if constexpr (Pre) return soft(v, p.a / den) * (den / (den + p.b));
        else return soft(v, p.a) * p.inv;
    } else if constexpr (Kind == static_cast<int>(ProxKind::Hard)) {
        if constexpr (Pre) return v * v * den <= p.two_a ? C(0) : v;  // |v| <= sqrt(2a/den), NaN kept
        else return std::fabs(v) <= p.thr ? C(0) : v;
    } else {
        (void)p;
        (void)den;
        return v;
    }
}

struct SgdHyper {
    double lr, momentum, dampening, weight_decay;
    bool maximize;
};

// One SGD step over n elements (torch.optim.SGD's formulas), then the prox. `init`: the
// momentum buffer is new and takes the gradient as is (torch clones it on the first step).
template <class T, bool Momentum, bool Nesterov, int Kind>
inline std::int64_t sgd_step(T* __restrict w, const T* __restrict g, T* __restrict buf, std::int64_t n, const SgdHyper& h,
                             bool init, const ProxConst<compute_t<T>>& p) noexcept {
    using C = compute_t<T>;
    const C neg_lr = static_cast<C>(-h.lr), mom = static_cast<C>(h.momentum), damp1 = static_cast<C>(1.0 - h.dampening),
            wd = static_cast<C>(h.weight_decay);
    const bool has_wd = h.weight_decay != 0.0, maximize = h.maximize;
    std::int64_t zeros = 0;
#pragma omp simd reduction(+ : zeros)
    for (std::int64_t i = 0; i < n; ++i) {
        const C wi = load<T>(w[i]);
        C d = load<T>(g[i]);
        if (maximize) d = -d;
        if (has_wd) d = d + wd * wi;
        if constexpr (Momentum) {
            const C bm = init ? d : load<T>(buf[i]) * mom + damp1 * d;
            buf[i] = store<T>(bm);
            if constexpr (Nesterov) d = d + mom * bm;
            else d = bm;
        }
        const C r = fused_prox<Kind, false>(wi + neg_lr * d, p, C(1));
        w[i] = store<T>(r);
        zeros += (r == C(0));
    }
    return zeros;
}

struct AdamHyper {
    double lr, beta1, beta2, eps, weight_decay;
    bool decoupled, maximize;
};

// One Adam / AdamW step over n elements (torch.optim.Adam's single-tensor formulas), then
// the prox. step_size = lr / (1 - beta1^t), bc2_sqrt = sqrt(1 - beta2^t) for this tensor.
template <class T, bool Amsgrad, int Kind, bool Pre>
inline std::int64_t adam_step(T* __restrict w, const T* __restrict g, T* __restrict m, T* __restrict v, T* __restrict vmax,
                              std::int64_t n, const AdamHyper& h, double step_size, double bc2_sqrt,
                              const ProxConst<compute_t<T>>& p) noexcept {
    using C = compute_t<T>;
    const double wgt_d = 1.0 - h.beta1;
    const C wgt = static_cast<C>(wgt_d), wgt_c = C(1) - wgt, b2 = static_cast<C>(h.beta2), one_b2 = static_cast<C>(1.0 - h.beta2),
            eps = static_cast<C>(h.eps), bc2s = static_cast<C>(bc2_sqrt), neg_step = static_cast<C>(-step_size),
            wd = static_cast<C>(h.weight_decay), decay = static_cast<C>(1.0 - h.lr * h.weight_decay);
    const bool small_w = std::fabs(static_cast<float>(wgt)) < 0.5f;
    const bool has_wd = h.weight_decay != 0.0, decoupled = h.decoupled, maximize = h.maximize;
    std::int64_t zeros = 0;
#pragma omp simd reduction(+ : zeros)
    for (std::int64_t i = 0; i < n; ++i) {
        C wi = load<T>(w[i]);
        C gi = load<T>(g[i]);
        if (maximize) gi = -gi;
        if (has_wd) {
            if (decoupled) wi = wi * decay;
            else gi = gi + wd * wi;
        }
        C mi = load<T>(m[i]);
        mi = small_w ? mi + wgt * (gi - mi) : gi - (gi - mi) * wgt_c;  // torch's lerp
        const C vi = load<T>(v[i]) * b2 + one_b2 * gi * gi;
        m[i] = store<T>(mi);
        v[i] = store<T>(vi);
        C vd = vi;
        if constexpr (Amsgrad) {
            const C old = load<T>(vmax[i]);
            vd = vi != vi ? vi : (old < vi ? vi : old);  // torch.maximum keeps NaN
            vmax[i] = store<T>(vd);
        }
        const C den = std::sqrt(vd) / bc2s + eps;
        const C r = fused_prox<Kind, Pre>(wi + neg_step * mi / den, p, den);
        w[i] = store<T>(r);
        zeros += (r == C(0));
    }
    return zeros;
}

}  // namespace normreg::kernels
