// Per-element math of the proximal optimizers: moment updates, the parameter update and
// the prox of an elementwise penalty, fused in one pass over memory. Pure C++: raw
// pointers, noexcept, templated on the storage type T; scalars (bias corrections, step
// sizes) are precomputed by the caller, as in apex's multi_tensor_adam.
//
// The update formulas follow torch.optim's single-tensor SGD and Adam (the CPU default)
// operation by operation, with the same rounding points: in float32 and float64 a step with
// no penalty is bitwise equal to torch's. ATen's CPU kernels (AVX2 / AVX512 builds, and
// aarch64) compute `add(x, y, alpha)`, `lerp` and `addcmul` with one fused multiply-add
// (vec::fmadd, and the compiler contracts their scalar tails alike); these kernels call
// std::fma at exactly those points and nowhere else (the build has -ffp-contract=off). On a
// CPU that torch runs at its DEFAULT capability (no FMA) torch rounds the product first, and
// the match is within an ulp per operation instead. bfloat16 / float16 are computed in
// float32 and rounded once on store (torch rounds after every operation).
#pragma once
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "core/dtype.hpp"
#include "core/simd.hpp"
#include "kernels/penalty.hpp"  // sign_nan
#include "kernels/prox.hpp"

// NORMREG_FMA_KERNEL (core/simd.hpp): the x86-64 clone targets x86-64-v3 (AVX2 + FMA).

namespace normreg::kernels {

// a * b + c rounded once: ATen's `c.add(a, alpha=b)` / `vec::fmadd(a, b, c)`.
template <class C>
inline C madd(C a, C b, C c) noexcept {
    return std::fma(a, b, c);
}

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
// HasB: b != 0, decided once per call outside the loop (see affine_term: with the select
// inside, the L1 ProxAdam step in "grad" mode ran 10x slower than in "prox" mode).
template <int Kind, bool HasB, class T, class C>
__attribute__((always_inline)) inline C penalized_grad(T g, C w, C a, C b) noexcept {
    if constexpr (Kind == static_cast<int>(ProxKind::Grad)) {
        const C d = affine_term<HasB>(w, a, b);
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
    SoftT<C> soft;  // the threshold a deciding zeros in double (plain Shrink)
    double ad, bd, two_ad;  // a, b, 2a in double (preconditioned, float compute types)
};

template <class C>
inline ProxConst<C> prox_const(double a, double b) noexcept {
    return ProxConst<C>{static_cast<C>(a), static_cast<C>(b), static_cast<C>(1.0 / (1.0 + b)), down_to<C>(std::sqrt(2.0 * a)),
                        static_cast<C>(2.0 * a), soft_t<C>(a), a, b, 2.0 * a};
}

// The preconditioned thresholds (per element: a / den, sqrt(2a / den)) decided in double, for
// a float compute type. |v| den is exact in double (24-bit significands), so |v| <= a / den is
// decided exactly as |v| den - a <= 0; the L0 prox zeroes where v^2 den <= 2a with v^2 exact
// and one rounding of the double product (2^-53 relative, as the plain L0 prox's double
// sqrt(2a)). The soft threshold's result sign(v) (|v| - a/den) den/(den + b) is formed as
// sign(v) (|v| den - a) * (1 / (den + b)): the reciprocal in float (one float division for 8
// lanes), the product in double, rounded once (within 2 ulps), and max(., 0) taken after the
// rounding (the product has the sign of |v| den - a). NaN in v or den gives NaN (shrink) or
// keeps v (hard), as the compute-type formulas do.
inline float pre_soft_d(float v, float den, double a, float bf) noexcept {
    const double num = static_cast<double>(std::fabs(v)) * static_cast<double>(den) - a;
    const float inv = 1.0f / (den + bf);
    return std::copysign(pos_nan(static_cast<float>(num * static_cast<double>(inv))), v) + 0.0f;
}

inline bool pre_hard_zero_d(float v, float den, double two_a) noexcept {
    const double vd = static_cast<double>(v);
    return vd * vd * static_cast<double>(den) <= two_a;
}

template <int Kind, bool Pre, class C>
__attribute__((always_inline)) inline C fused_prox(C v, C a, C b, C inv, C thr, C two_a, C den, const SoftT<C>& st, double ad, double bd,
                    double two_ad) noexcept {
    if constexpr (Kind == static_cast<int>(ProxKind::Shrink)) {
        (void)two_ad;
        if constexpr (Pre) {
            (void)inv, (void)st, (void)a, (void)bd;
            if constexpr (std::is_same_v<C, double>) return soft(v, a / den) * (den / (den + b));  // in double already
            else return pre_soft_d(v, den, ad, b);
        } else {
            (void)a, (void)b, (void)ad, (void)bd, (void)den;
            return soft_d(v, st) * inv;
        }
    } else if constexpr (Kind == static_cast<int>(ProxKind::Hard)) {
        (void)ad, (void)bd;
        if constexpr (Pre) {
            (void)thr;
            if constexpr (std::is_same_v<C, double>) return v * v * den <= two_a ? C(0) : v;  // |v| <= sqrt(2a/den), NaN kept
            else return pre_hard_zero_d(v, den, two_ad) ? C(0) : v;
        } else {
            (void)two_a, (void)two_ad, (void)den;
            return std::fabs(v) <= thr ? C(0) : v;
        }
    } else {
        (void)a, (void)b, (void)inv, (void)thr, (void)two_a, (void)den, (void)st, (void)ad, (void)bd, (void)two_ad;
        return v;
    }
}

struct SgdHyper {
    double lr, momentum, dampening, weight_decay;
    bool maximize;
};

// One SGD step over n elements (torch.optim.SGD's single-tensor formulas), then the prox.
// `init`: the momentum buffer is new and takes the gradient as is (torch clones it then).
//   d = -g if maximize;  d = d.add(w, alpha=wd);  buf = buf.mul(mom).add(d, alpha=1-damp)
//   d = d.add(buf, alpha=mom) (nesterov) or buf;  w = w.add(d, alpha=-lr)
template <class T, bool Momentum, bool Nesterov, int Kind, bool WD>
NORMREG_FMA_KERNEL std::int64_t sgd_step(T* __restrict w, const T* __restrict g, T* __restrict buf, std::int64_t n, const SgdHyper& h,
                             bool init, const ProxConst<compute_t<T>>& p) noexcept {
    using C = compute_t<T>;
    const C neg_lr = static_cast<C>(-h.lr), mom = static_cast<C>(h.momentum), damp1 = static_cast<C>(1.0 - h.dampening),
            wd = static_cast<C>(h.weight_decay);
    const C gsign = h.maximize ? C(-1) : C(1);
    const C pa = p.a, pb = p.b, pinv = p.inv, pthr = p.thr, p2a = p.two_a;
    const SoftT<C> pst = p.soft;
    const double pad = p.ad, pbd = p.bd, p2ad = p.two_ad;
    (void)wd, (void)mom, (void)damp1;
    std::int64_t zeros = 0;
    auto pass = [&](auto fresh, auto has_b) __attribute__((always_inline)) {
        constexpr bool Fresh = decltype(fresh)::value;
        constexpr bool HasB = decltype(has_b)::value;
#pragma omp simd reduction(+ : zeros)
        for (std::int64_t i = 0; i < n; ++i) {
            const C wi = load<T>(w[i]);
            C d = penalized_grad<Kind, HasB, T>(g[i], wi, pa, pb) * gsign;
            if constexpr (WD) d = madd(wi, wd, d);
            if constexpr (Momentum) {
                C bm;
                if constexpr (Fresh) bm = d;
                else bm = madd(d, damp1, load<T>(buf[i]) * mom);
                buf[i] = store<T>(bm);
                if constexpr (Nesterov) d = madd(bm, mom, d);
                else d = bm;
            }
            const T r = store<T>(fused_prox<Kind, false>(madd(d, neg_lr, wi), pa, pb, pinv, pthr, p2a, C(1), pst, pad, pbd, p2ad));
            w[i] = r;
            zeros += stored_zero<T>(r);  // the value as stored
        }
    };
    const bool fresh = Momentum && init;
    if constexpr (Kind == static_cast<int>(ProxKind::Grad)) {
        if (pb != C(0)) {
            if (fresh) pass(std::true_type{}, std::true_type{});
            else pass(std::false_type{}, std::true_type{});
            return zeros;
        }
    }
    if (fresh) pass(std::true_type{}, std::false_type{});
    else pass(std::false_type{}, std::false_type{});
    return zeros;
}

struct AdamHyper {
    double lr, beta1, beta2, eps, weight_decay;
    bool decoupled, maximize;
};

// One Adam / AdamW step over n elements (torch.optim.Adam's single-tensor formulas), then
// the prox. step_size = lr / (1 - beta1^t), bc2_sqrt = sqrt(1 - beta2^t) for this tensor.
// Coupled: g = g.add(w, alpha=wd) (Adam with weight_decay != 0), a template flag because
// g + 0 * w is not g where w is Inf or NaN. AdamW's decoupled decay w *= 1 - lr*wd is a
// run-time factor: it is 1 otherwise, and w * 1 is w exactly (NaN, Inf and -0 included), so
// one loop serves both at the cost of a multiply in a loop bound by memory.
//   m.lerp_(g, 1-beta1);  v.mul_(beta2).addcmul_(g, g, value=1-beta2);  vmax = maximum(vmax, v)
//   den = (sqrt(v) / bc2_sqrt).add_(eps);  w.addcdiv_(m, den, value=-step_size)
template <class T, bool Amsgrad, int Kind, bool Pre, bool Coupled>
NORMREG_FMA_KERNEL std::int64_t adam_step(T* __restrict w, const T* __restrict g, T* __restrict m, T* __restrict v, T* __restrict vmax,
                              std::int64_t n, const AdamHyper& h, double step_size, double bc2_sqrt,
                              const ProxConst<compute_t<T>>& p) noexcept {
    using C = compute_t<T>;
    const double wgt_d = 1.0 - h.beta1;
    const C wgt = static_cast<C>(wgt_d), wgt_m1 = wgt - C(1), b2 = static_cast<C>(h.beta2), one_b2 = static_cast<C>(1.0 - h.beta2),
            eps = static_cast<C>(h.eps), bc2s = static_cast<C>(bc2_sqrt), neg_step = static_cast<C>(-step_size),
            wd = static_cast<C>(h.weight_decay),
            decay = static_cast<C>(h.decoupled && h.weight_decay != 0.0 ? 1.0 - h.lr * h.weight_decay : 1.0);
    // ATen's lerp(m, g, w): fma(w, g - m, m) for |w| < 0.5, else fma(w - 1, g - m, g). The
    // choice is made once, outside the loop: with a select inside, GCC unswitches the loop
    // and leaves one of the two copies scalar (5x slower for beta1 <= 0.5, as in DCGAN).
    const bool small_w = std::fabs(wgt) < C(0.5);
    const C gsign = h.maximize ? C(-1) : C(1);
    const C pa = p.a, pb = p.b, pinv = p.inv, pthr = p.thr, p2a = p.two_a;
    const SoftT<C> pst = p.soft;
    const double pad = p.ad, pbd = p.bd, p2ad = p.two_ad;
    (void)wd;
    std::int64_t zeros = 0;
    auto pass = [&](auto small, auto has_b) __attribute__((always_inline)) {
        constexpr bool Small = decltype(small)::value;
        constexpr bool HasB = decltype(has_b)::value;
#pragma omp simd reduction(+ : zeros)
        for (std::int64_t i = 0; i < n; ++i) {
            C wi = load<T>(w[i]);
            C gi = penalized_grad<Kind, HasB, T>(g[i], wi, pa, pb) * gsign;
            if constexpr (Coupled) gi = madd(wi, wd, gi);
            wi = wi * decay;  // AdamW; exactly wi where decay is 1
            C mi = load<T>(m[i]);
            const C diff = gi - mi;
            if constexpr (Small) mi = madd(wgt, diff, mi);
            else mi = madd(wgt_m1, diff, gi);
            const C vi = madd(one_b2 * gi, gi, load<T>(v[i]) * b2);
            m[i] = store<T>(mi);
            v[i] = store<T>(vi);
            C vd = vi;
            if constexpr (Amsgrad) {
                const C old = load<T>(vmax[i]);
                vd = vd != vd ? vd : (old < vd ? vd : old);  // torch.maximum keeps NaN
                vmax[i] = store<T>(vd);
            }
            const C den = std::sqrt(vd) / bc2s + eps;
            const T r = store<T>(fused_prox<Kind, Pre>(wi + neg_step * mi / den, pa, pb, pinv, pthr, p2a, den, pst, pad, pbd, p2ad));
            w[i] = r;
            zeros += stored_zero<T>(r);  // the value as stored
        }
    };
    if constexpr (Kind == static_cast<int>(ProxKind::Grad)) {
        if (pb != C(0)) {
            if (small_w) pass(std::true_type{}, std::true_type{});
            else pass(std::false_type{}, std::true_type{});
            return zeros;
        }
    }
    if (small_w) pass(std::true_type{}, std::false_type{});
    else pass(std::false_type{}, std::false_type{});
    return zeros;
}

}  // namespace normreg::kernels
