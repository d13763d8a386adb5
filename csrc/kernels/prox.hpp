// Per-element math of the proximal operators and projections, in place. Pure C++: raw
// pointers, noexcept, templated on the storage type T (float, double, bf16, f16); bf16/f16
// are computed in float and rounded once when stored. Every in-place kernel returns how
// many of its elements are exactly zero after the step (counted in the same pass).
//
// NaN conventions: a NaN element stays NaN; a NaN threshold or coefficient (from a tensor
// or group whose norm is NaN) makes every element it touches NaN. Nothing becomes 0 by
// accident of a comparison with NaN: every select below is written so NaN falls through.
// Chunk-level kernels are NORMREG_KERNEL (AVX2 and baseline clones, picked at load time).
#pragma once
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "core/dtype.hpp"
#include "core/simd.hpp"
#include "kernels/penalty.hpp"  // AbsSq, scaled sums, stored_zero

namespace normreg::kernels {

using core::compute_t;
using core::load;
using core::store;

// max(x, 0) that keeps NaN (NaN < 0 is false).
template <class C>
inline C pos_nan(C x) noexcept {
    return x < C(0) ? C(0) : x;
}

// sign(v) * max(|v| - t, 0), NaN in v or t gives NaN, and +0 (never -0) for zeros.
// For |v| > t the result is v - t (or v + t) rounded once, like torch's softshrink.
template <class C>
inline C soft(C v, C t) noexcept {
    return std::copysign(pos_nan(std::fabs(v) - t), v) + C(0);
}

// max(v - t, 0) (non-negative soft threshold), NaN kept.
template <class C>
inline C soft_nonneg(C v, C t) noexcept {
    return pos_nan(v - t) + C(0);
}

// The largest C value <= x (x rounded toward -inf): |v| <= down_to<C>(thr) holds for a value v
// of C exactly when |v| <= thr does in double, so a threshold decides in double precision.
template <class C>
inline C down_to(double x) noexcept {
    C c = static_cast<C>(x);
    if (static_cast<double>(c) > x) c = std::nextafter(c, -std::numeric_limits<C>::infinity());
    return c;
}

// A soft threshold t (double) in the compute type C, deciding zeros in double: t rounded to
// nearest (the subtraction, like torch's softshrink), down_to(t) (|v| <= dn iff |v| <= t),
// and fix = |v| - t for the one value v = fl(t) > t that is above t but for which |v| - fl(t)
// is 0 (0 when fl(t) <= t).
template <class C>
struct SoftT {
    C t, dn, fix;
};

template <class C>
inline SoftT<C> soft_t(double t) noexcept {
    const C ct = static_cast<C>(t);
    const bool up = static_cast<double>(ct) > t && std::isfinite(t);
    return SoftT<C>{ct, down_to<C>(t), up ? static_cast<C>(static_cast<double>(ct) - t) : C(0)};
}

// soft(v, t) with the zero decided in double: |v| <= t (double) gives 0, any larger |v| a
// nonzero result (NaN in v or t gives NaN).
template <class C>
inline C soft_d(C v, const SoftT<C>& t) noexcept {
    const C a = std::fabs(v);
    const C d = a - t.t;
    const C r = (d <= C(0) && a > t.dn) ? t.fix : d;
    return std::copysign(pos_nan(r), v) + C(0);
}

// max(v - t, 0) with the zero decided in double, as soft_d.
template <class C>
inline C soft_nonneg_d(C v, const SoftT<C>& t) noexcept {
    const C d = v - t.t;
    const C r = (d <= C(0) && v > t.dn) ? t.fix : d;
    return pos_nan(r) + C(0);
}

// x (double) stored in T rounded toward zero: |stored| <= |x| (a projection that must stay
// inside its set). NaN stays NaN.
template <class T>
inline T store_rz(double x) noexcept {
    if constexpr (std::is_same_v<T, double>) {
        return x;
    } else {
        float f = static_cast<float>(x);
        if (std::fabs(static_cast<double>(f)) > std::fabs(x)) f = std::nextafter(f, 0.0f);
        if constexpr (std::is_same_v<T, float>) {
            return f;
        } else {
            T t = store<T>(f);
            if (std::fabs(load<T>(t)) > std::fabs(f)) t = static_cast<T>(static_cast<std::uint16_t>(core::bits_of(t) - 1u));  // one step toward 0
            return t;
        }
    }
}

// Zeros are counted in 32-bit lanes over blocks of kCountBlock elements (no widening to
// 64 bits per vector in the hot loop), then added into a 64-bit total.
constexpr std::int64_t kCountBlock = std::int64_t{1} << 20;

// w[i] <- f(i, w[i]) over n elements, counting the zeros written.
template <class T, class F>
__attribute__((always_inline)) inline std::int64_t map_count(T* __restrict w, std::int64_t n, F f) noexcept {
    std::int64_t zeros = 0;
    for (std::int64_t b = 0; b < n; b += kCountBlock) {
        const std::int64_t e = n - b < kCountBlock ? n : b + kCountBlock;
        std::int32_t z = 0;
#pragma omp simd reduction(+ : z)
        for (std::int64_t i = b; i < e; ++i) {
            const T r = store<T>(f(i, load<T>(w[i])));
            w[i] = r;
            z += stored_zero<T>(r);  // the value as stored (bf16 / f16 may round to 0)
        }
        zeros += z;
    }
    return zeros;
}

template <class T, bool NonNeg, bool Weighted, bool Scaled>
__attribute__((always_inline)) inline std::int64_t shrink_loop(T* __restrict w, const T* __restrict u, std::int64_t n,
                                                                SoftT<compute_t<T>> st, compute_t<T> cc, double t,
                                                                double c) noexcept {
    using C = compute_t<T>;
    return map_count(w, n, [=](std::int64_t i, C v) __attribute__((always_inline)) {
        if constexpr (Weighted) {
            // per-element thresholds t * u_i: the threshold, the zero and the result in double
            // (c * soft(w, t u) rounded once on store, the float64 answer), as the reference
            (void)st, (void)cc;
            const double ti = t * static_cast<double>(load<T>(u[i]));
            const double vd = static_cast<double>(v);
            double r;
            if constexpr (NonNeg) r = soft_nonneg(vd, ti);
            else r = soft(vd, ti);
            if constexpr (Scaled) r = r * c;
            else (void)c;
            return static_cast<C>(r);
        } else {  // the zero decided in double (|v| <= t)
            (void)u, (void)i, (void)t, (void)c;
            C r;
            if constexpr (NonNeg) r = soft_nonneg_d(v, st);
            else r = soft_d(v, st);
            if constexpr (Scaled) r = r * cc;
            else (void)cc;
            return r;
        }
    });
}

// w <- c * w + 0 (a zero is written as +0, as soft() writes it).
template <class T>
__attribute__((always_inline)) inline std::int64_t scale_loop(T* __restrict w, std::int64_t n, compute_t<T> cc) noexcept {
    using C = compute_t<T>;
    return map_count(w, n, [=](std::int64_t, C v) __attribute__((always_inline)) { return v * cc + C(0); });
}

// w <- c * soft(w, t * u_i), u = per-element weights (Weighted) or 1. Covers the L1 prox
// (c = 1: the multiply is left out), the ridge shrink (t = 0, c = 1/(1+step*l)), the
// elastic net, and scaling by a per-tensor coefficient (t = 0). Returns the number of
// zeros written.
template <class T, bool NonNeg, bool Weighted>
NORMREG_KERNEL std::int64_t shrink(T* __restrict w, const T* __restrict u, std::int64_t n, double t, double c) noexcept {
    using C = compute_t<T>;
    const C cc = static_cast<C>(c);
    const SoftT<C> st = soft_t<C>(t);
    if constexpr (!NonNeg && !Weighted) {  // (weighted: 0 * a non-finite weight must give NaN)
        // t = 0 (the ridge shrink, a per-tensor scale): soft(v, 0) is v itself (NaN kept, -0
        // made +0), so the pass is one multiply; the same values, at the cost of torch's mul_.
        if (t == 0.0) return scale_loop<T>(w, n, cc);
    }
    if (c == 1.0) return shrink_loop<T, NonNeg, Weighted, false>(w, u, n, st, cc, t, c);
    return shrink_loop<T, NonNeg, Weighted, true>(w, u, n, st, cc, t, c);
}

// The shrink of the L2-norm and group prox, w <- c * soft(w, t), computed in double from the
// double t and c (the zero, the soft threshold and the scale in the accumulation precision)
// and rounded once on store: the float64 prox rounded to T. For T = double the same values as
// shrink<double, false, false>.
template <class T>
NORMREG_KERNEL std::int64_t shrink_d(T* __restrict w, std::int64_t n, double t, double c) noexcept {
    using C = compute_t<T>;
    if (t == 0.0)  // no soft part (L2Norm / GroupLasso alone): soft(v, 0) is v
        return map_count(w, n, [=](std::int64_t, C v) __attribute__((always_inline)) {
            return static_cast<C>(static_cast<double>(v) * c) + C(0);
        });
    return map_count(w, n, [=](std::int64_t, C v) __attribute__((always_inline)) {
        return static_cast<C>(soft(static_cast<double>(v), t) * c + 0.0);
    });
}

// Exact L0 prox: w <- 0 where |w| <= thr, else w (NaN kept). thr = sqrt(2 * step * l), in
// double; the comparison is exact in double (the threshold is rounded down to C, not to nearest).
template <class T>
NORMREG_KERNEL std::int64_t hard(T* __restrict w, std::int64_t n, double thr) noexcept {
    using C = compute_t<T>;
    const C ct = down_to<C>(thr);
    std::int64_t zeros = 0;
#pragma omp simd reduction(+ : zeros)
    for (std::int64_t i = 0; i < n; ++i) {
        const C v = load<T>(w[i]);
        const T r = store<T>(std::fabs(v) <= ct ? C(0) : v);
        w[i] = r;
        zeros += stored_zero<T>(r);
    }
    return zeros;
}

// Projection onto the box [lo, hi] (clamp). NaN in w stays NaN; a NaN bound (the Linf prox
// of a tensor that contains NaN) makes the result NaN.
template <class T>
NORMREG_KERNEL std::int64_t clamp(T* __restrict w, std::int64_t n, double lo, double hi) noexcept {
    using C = compute_t<T>;
    const C cl = static_cast<C>(lo), ch = static_cast<C>(hi);
    const bool nan_bound = (lo != lo) || (hi != hi);
    const C nan = static_cast<C>(lo != lo ? lo : hi);
    std::int64_t zeros = 0;
    if (nan_bound) {
        for (std::int64_t i = 0; i < n; ++i) w[i] = store<T>(nan);
        return 0;
    }
#pragma omp simd reduction(+ : zeros)
    for (std::int64_t i = 0; i < n; ++i) {
        const C v = load<T>(w[i]);
        C r = v < cl ? cl : v;
        r = r > ch ? ch : r;
        r = r + C(0);
        const T st = store<T>(r);
        w[i] = st;
        zeros += stored_zero<T>(st);
    }
    return zeros;
}

// Sum over n elements of soft(w, t)^2 in double (t = 0: the plain sum of squares), as
// sq * 2^(2 exp) (float64 chunks out of the plain range summed again scaled), and of |w|
// (for the L1-ball projection). NaN propagates into the sums.
using SoftSums = AbsSq;

// soft(w, t) is taken in double (the values shrink_d writes, before rounding).
template <class T>
NORMREG_KERNEL SoftSums soft_sums(const T* __restrict w, std::int64_t n, double t) noexcept {
    const double ct = t;
    double sa = 0.0, ss = 0.0;
    if (t == 0.0) {  // soft(v, 0) is v
#pragma omp simd reduction(+ : sa, ss)
        for (std::int64_t i = 0; i < n; ++i) {
            const double v = static_cast<double>(load<T>(w[i]));
            sa += std::fabs(v);
            ss += v * v;
        }
    } else {
#pragma omp simd reduction(+ : sa, ss)
        for (std::int64_t i = 0; i < n; ++i) {
            const double v = static_cast<double>(load<T>(w[i]));
            const double s = soft(v, ct);
            sa += std::fabs(v);
            ss += s * s;
        }
    }
    SoftSums r{sa, ss, 0};
    if constexpr (std::is_same_v<T, double>) {
        if (!sq_in_range(ss) && ss == ss) {
            const SqScaled q = scaled_sq_sum([&](auto&& fn) {
                for (std::int64_t i = 0; i < n; ++i) fn(soft(w[i], ct));
            });
            r.sq = q.sq;
            r.exp = q.exp;
        }
    }
    return r;
}

// Scaled redo of group_soft_sq for float64 groups out of the plain range: acc * 2^(2 exps).
template <class T>
inline void group_soft_fix(const T* __restrict x, std::int64_t outer, std::int64_t groups, std::int64_t inner, std::int64_t g0,
                           std::int64_t g1, double t, double* __restrict acc, int* __restrict exps) noexcept {
    for (std::int64_t g = g0; g < g1; ++g) {
        double& q = acc[g - g0];
        exps[g - g0] = 0;
        if constexpr (std::is_same_v<T, double>) {
            if (sq_in_range(q) || q != q) continue;
            const SqScaled r = scaled_sq_sum([&](auto&& fn) {
                for (std::int64_t o = 0; o < outer; ++o) {
                    const T* p = x + (o * groups + g) * inner;
                    for (std::int64_t i = 0; i < inner; ++i) fn(soft(p[i], t));
                }
            });
            q = r.sq;
            exps[g - g0] = r.exp;
        } else {
            (void)x, (void)outer, (void)groups, (void)inner, (void)t;
        }
    }
}

// Sum of soft(w, t)^2 per group for groups [g0, g1) of a (outer, groups, inner) tensor, the
// soft threshold taken in double (the values group_shrink writes, before rounding).
template <class T>
NORMREG_KERNEL void group_soft_sq(const T* __restrict x, std::int64_t outer, std::int64_t groups, std::int64_t inner, std::int64_t g0,
                          std::int64_t g1, double t, double* __restrict acc) noexcept {
    const double ct = t;
    for (std::int64_t g = g0; g < g1; ++g) acc[g - g0] = 0.0;
    auto pass = [&](auto soft_part) __attribute__((always_inline)) {
        constexpr bool Soft = decltype(soft_part)::value;
        for (std::int64_t o = 0; o < outer; ++o)
            for (std::int64_t g = g0; g < g1; ++g) {
                const T* p = x + (o * groups + g) * inner;
                double s = 0.0;
#pragma omp simd reduction(+ : s)
                for (std::int64_t i = 0; i < inner; ++i) {
                    const double v0 = static_cast<double>(load<T>(p[i]));
                    const double v = Soft ? soft(v0, ct) : v0;
                    s += v * v;
                }
                acc[g - g0] += s;
            }
    };
    if (t == 0.0) pass(std::false_type{});  // soft(v, 0) is v
    else pass(std::true_type{});
}

// w <- coef[g] * soft(w, t) over groups [g0, g1); coef indexed from g0. Computed in double
// (the zero, the soft threshold and the scale) and rounded once on store. Returns zeros.
template <class T>
NORMREG_KERNEL std::int64_t group_shrink(T* __restrict x, std::int64_t outer, std::int64_t groups, std::int64_t inner, std::int64_t g0,
                                 std::int64_t g1, double t, const double* __restrict coef) noexcept {
    using C = compute_t<T>;
    const double ct = t;
    std::int64_t zeros = 0;
    auto pass = [&](auto soft_part) __attribute__((always_inline)) {
        constexpr bool Soft = decltype(soft_part)::value;
        for (std::int64_t o = 0; o < outer; ++o)
            for (std::int64_t g = g0; g < g1; ++g) {
                T* p = x + (o * groups + g) * inner;
                const double c = coef[g - g0];
                std::int64_t z = 0;
#pragma omp simd reduction(+ : z)
                for (std::int64_t i = 0; i < inner; ++i) {
                    const double v = static_cast<double>(load<T>(p[i]));
                    const T r = store<T>(Soft ? static_cast<C>(soft(v, ct) * c) : static_cast<C>(v * c) + C(0));
                    p[i] = r;
                    z += stored_zero<T>(r);
                }
                zeros += z;
            }
    };
    if (t == 0.0) pass(std::false_type{});  // soft(v, 0) is v
    else pass(std::true_type{});
    return zeros;
}

// The L1-ball projection's shrink, w <- sign(w) max(|w| - theta, 0), computed in double from
// the double theta and stored rounded toward zero, so the result is inside the ball and
// within 1 ulp of the float64 projection rounded to T.
template <class T>
NORMREG_KERNEL std::int64_t shrink_rz(T* __restrict w, std::int64_t n, double theta) noexcept {
    const double inf = std::numeric_limits<double>::infinity();
    std::int64_t zeros = 0;
    for (std::int64_t i = 0; i < n; ++i) {
        const double v = static_cast<double>(load<T>(w[i]));
        const T r = store_rz<T>(theta == inf ? (v != v ? v : 0.0) : soft(v, theta));  // radius 0: {0}
        w[i] = r;
        zeros += stored_zero<T>(r);
    }
    return zeros;
}

// The L1-ball projection of a point with infinite elements (the limit of the projection as
// they grow): the whole radius shared by them, w <- isinf(w) ? copysign(c, w) : 0, c = r / k
// rounded toward zero (inside the ball).
template <class T>
inline std::int64_t inf_share(T* __restrict w, std::int64_t n, double c) noexcept {
    std::int64_t zeros = 0;
    for (std::int64_t i = 0; i < n; ++i) {
        const double v = static_cast<double>(load<T>(w[i]));
        const T r = store_rz<T>(std::isinf(v) ? std::copysign(c, v) : 0.0);
        w[i] = r;
        zeros += stored_zero<T>(r);
    }
    return zeros;
}

// w <- ldexp(w, -e) * c (a scaling whose single coefficient c 2^-e would leave the normal
// range of the compute type), computed in double, rounded once.
template <class T>
inline std::int64_t scale_exp(T* __restrict w, std::int64_t n, int e, double c) noexcept {
    std::int64_t zeros = 0;
    for (std::int64_t i = 0; i < n; ++i) {
        const T r = store<T>(static_cast<compute_t<T>>(std::ldexp(static_cast<double>(load<T>(w[i])), -e) * c + 0.0));
        w[i] = r;
        zeros += stored_zero<T>(r);
    }
    return zeros;
}

// Number of elements with |w| > lo (candidates of the L1-ball threshold).
template <class T>
NORMREG_KERNEL std::int64_t count_above(const T* __restrict w, std::int64_t n, double lo) noexcept {
    const double l = lo;
    std::int64_t c = 0;
#pragma omp simd reduction(+ : c)
    for (std::int64_t i = 0; i < n; ++i) c += (static_cast<double>(std::fabs(load<T>(w[i]))) > l);
    return c;
}

// Writes |w_i| for every |w_i| > lo into out, in index order.
template <class T>
inline void gather_above(const T* __restrict w, std::int64_t n, double lo, double* __restrict out) noexcept {
    std::int64_t k = 0;
    for (std::int64_t i = 0; i < n; ++i) {
        const double a = std::fabs(static_cast<double>(load<T>(w[i])));
        if (a > lo) out[k++] = a;
    }
}

// Condat's exact projection threshold ("Fast projection onto the simplex and the l1 ball",
// Math. Program. 2016): for y > 0 (n >= 1) and radius a > 0 with sum(y) > a, returns the
// tau with sum(max(y - tau, 0)) = a. Expected O(n); `v` and `vt` are scratch of size n.
// The input order is fixed by the caller, so the result is deterministic.
inline double condat_threshold(const double* y, std::int64_t n, double a, double* v, double* vt) noexcept {
    std::int64_t nv = 0, nvt = 0;
    v[nv++] = y[0];
    double rho = y[0] - a;
    for (std::int64_t k = 1; k < n; ++k) {
        const double yk = y[k];
        if (yk > rho) {
            rho += (yk - rho) / static_cast<double>(nv + 1);
            if (rho > yk - a) {
                v[nv++] = yk;
            } else {
                for (std::int64_t j = 0; j < nv; ++j) vt[nvt++] = v[j];
                nv = 0;
                v[nv++] = yk;
                rho = yk - a;
            }
        }
    }
    for (std::int64_t j = 0; j < nvt; ++j) {
        const double yk = vt[j];
        if (yk > rho) {
            v[nv++] = yk;
            rho += (yk - rho) / static_cast<double>(nv);
        }
    }
    bool changed = true;
    while (changed) {
        changed = false;
        std::int64_t j = 0;
        while (j < nv) {
            const double yk = v[j];
            if (yk <= rho) {
                v[j] = v[--nv];  // swap-remove: the order is still fixed by the input
                if (nv > 0) rho += (rho - yk) / static_cast<double>(nv);
                changed = true;
            } else {
                ++j;
            }
        }
    }
    return rho;
}

}  // namespace normreg::kernels
