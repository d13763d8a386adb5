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
#include <type_traits>

#include "engine/dtype.hpp"
#include "kernels/penalty.hpp"  // sign_nan
#include "kernels/prox.hpp"

namespace normreg::kernels {

// Elementwise penalty fused into an optimizer step.
//   None:   no penalty
//   Shrink: elastic net prox  w <- soft(w, a) / (1 + b)      (a = lr*l1, b = lr*l2)
//   Hard:   exact L0 prox     w <- |w| <= sqrt(2a) ? 0 : w   (a = lr*l0)
//   Grad:   no prox; the penalty's gradient enters the update instead:
//           g <- g + (a*sign(w) + b*w) before anything else  (a = l1, b = l2), rounded to
//           T as penalty.add_grad_ stores it, so the step equals add_grad_ then the step.
// Preconditioned (Adam, Shrink and Hard only): the metric is diag(den)/lr, so a and b are
// divided by the element's denominator den = sqrt(v_hat) + eps.
enum class ProxKind : int { None = 0, Shrink = 1, Hard = 2, Grad = 3 };

// The gradient the update uses: g itself, or g plus the affine penalty's gradient (Grad),
// with the same operations and rounding as penalty.add_grad_ (kernels::affine_grad).
template <int Kind, class T, class C>
inline C penalized_grad(T g, C w, C a, C b) noexcept {
    if constexpr (Kind == static_cast<int>(ProxKind::Grad)) {
        const C d = affine_term(w, a, b);  // b * w left out for b = 0 (an infinite w: a * 1, not NaN)
        return load<T>(store<T>(load<T>(g) + d));
    } else {
        (void)w, (void)a, (void)b;
        return load<T>(g);
    }
}

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
    return ProxConst<C>{static_cast<C>(a), static_cast<C>(b), static_cast<C>(1.0 / (1.0 + b)), down_to<C>(std::sqrt(2.0 * a)),
                        static_cast<C>(2.0 * a)};
}

template <int Kind, bool Pre, class C>
inline C fused_prox(C v, C a, C b, C inv, C thr, C two_a, C den) noexcept {
    if constexpr (Kind == static_cast<int>(ProxKind::Shrink)) {
        if constexpr (Pre) return soft(v, a / den) * (den / (den + b));
        else return soft(v, a) * inv;
    } else if constexpr (Kind == static_cast<int>(ProxKind::Hard)) {
        if constexpr (Pre) return v * v * den <= two_a ? C(0) : v;  // |v| <= sqrt(2a/den), NaN kept
        else return std::fabs(v) <= thr ? C(0) : v;
    } else {
        (void)a, (void)b, (void)inv, (void)thr, (void)two_a, (void)den;
        return v;
    }
}

struct SgdHyper {
    double lr, momentum, dampening, weight_decay;
    bool maximize;
};

// One SGD step over n elements (torch.optim.SGD's formulas), then the prox. `init`: the
// momentum buffer is new (zero-filled) and takes the gradient as is (torch clones it then).
template <class T, bool Momentum, bool Nesterov, int Kind, bool WD>
NORMREG_KERNEL std::int64_t sgd_step(T* __restrict w, const T* __restrict g, T* __restrict buf, std::int64_t n, const SgdHyper& h,
                             bool init, const ProxConst<compute_t<T>>& p) noexcept {
    using C = compute_t<T>;
    const C neg_lr = static_cast<C>(-h.lr), mom = static_cast<C>(h.momentum), damp1 = static_cast<C>(1.0 - h.dampening),
            wd = static_cast<C>(h.weight_decay);
    const C gsign = h.maximize ? C(-1) : C(1);
    const C pa = p.a, pb = p.b, pinv = p.inv, pthr = p.thr, p2a = p.two_a;
    // A new buffer (zero-filled by the caller) takes the gradient as is: 0 * 0 + 1 * d = d.
    const C bmom = init ? C(0) : mom, bdamp = init ? C(1) : damp1;
    (void)wd, (void)bmom, (void)bdamp;
    std::int64_t zeros = 0;
#pragma omp simd reduction(+ : zeros)
    for (std::int64_t i = 0; i < n; ++i) {
        const C wi = load<T>(w[i]);
        C d = penalized_grad<Kind, T>(g[i], wi, pa, pb) * gsign;
        if constexpr (WD) d = d + wd * wi;
        if constexpr (Momentum) {
            const C bm = load<T>(buf[i]) * bmom + bdamp * d;
            buf[i] = store<T>(bm);
            if constexpr (Nesterov) d = d + mom * bm;
            else d = bm;
        }
        const C r = fused_prox<Kind, false>(wi + neg_lr * d, pa, pb, pinv, pthr, p2a, C(1));
        const T st = store<T>(r);
        w[i] = st;
        zeros += stored_zero<T>(st);
    }
    return zeros;
}

struct AdamHyper {
    double lr, beta1, beta2, eps, weight_decay;
    bool decoupled, maximize;
};

// One Adam / AdamW step over n elements (torch.optim.Adam's single-tensor formulas), then
// the prox. step_size = lr / (1 - beta1^t), bc2_sqrt = sqrt(1 - beta2^t) for this tensor.
// WD: 0 none, 1 coupled (g += wd*w, Adam), 2 decoupled (w *= 1 - lr*wd, AdamW).
template <class T, bool Amsgrad, int Kind, bool Pre, int WD>
NORMREG_KERNEL std::int64_t adam_step(T* __restrict w, const T* __restrict g, T* __restrict m, T* __restrict v, T* __restrict vmax,
                              std::int64_t n, const AdamHyper& h, double step_size, double bc2_sqrt,
                              const ProxConst<compute_t<T>>& p) noexcept {
    using C = compute_t<T>;
    const double wgt_d = 1.0 - h.beta1;
    const C wgt = static_cast<C>(wgt_d), wgt_c = C(1) - wgt, b2 = static_cast<C>(h.beta2), one_b2 = static_cast<C>(1.0 - h.beta2),
            eps = static_cast<C>(h.eps), bc2s = static_cast<C>(bc2_sqrt), neg_step = static_cast<C>(-step_size),
            wd = static_cast<C>(h.weight_decay), decay = static_cast<C>(1.0 - h.lr * h.weight_decay);
    // torch's lerp(m, g, w): m + w*(g - m) for |w| < 0.5, else g - (g - m)*(1 - w). The
    // choice is made once, outside the loop: with a select inside, GCC unswitches the loop
    // and leaves one of the two copies scalar (5x slower for beta1 <= 0.5, as in DCGAN).
    const bool small_w = std::fabs(static_cast<float>(wgt)) < 0.5f;
    const C gsign = h.maximize ? C(-1) : C(1);
    const C pa = p.a, pb = p.b, pinv = p.inv, pthr = p.thr, p2a = p.two_a;
    (void)wd, (void)decay;
    std::int64_t zeros = 0;
    auto pass = [&](auto small) __attribute__((always_inline)) {
        constexpr bool Small = decltype(small)::value;
#pragma omp simd reduction(+ : zeros)
        for (std::int64_t i = 0; i < n; ++i) {
            C wi = load<T>(w[i]);
            C gi = penalized_grad<Kind, T>(g[i], wi, pa, pb) * gsign;
            if constexpr (WD == 1) gi = gi + wd * wi;
            if constexpr (WD == 2) wi = wi * decay;
            C mi = load<T>(m[i]);
            const C diff = gi - mi;
            if constexpr (Small) mi = mi + wgt * diff;
            else mi = gi - diff * wgt_c;
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
            const C r = fused_prox<Kind, Pre>(wi + neg_step * mi / den, pa, pb, pinv, pthr, p2a, den);
            const T st = store<T>(r);
            w[i] = st;
            zeros += stored_zero<T>(st);
        }
    };
    if (small_w) pass(std::true_type{});
    else pass(std::false_type{});
    return zeros;
}

}  // namespace normreg::kernels
