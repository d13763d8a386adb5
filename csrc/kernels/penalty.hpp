// Per-element math of the penalties: values, gradients. Pure C++: raw pointers, noexcept,
// templated on the storage type T (float, double, bf16, f16); bf16/f16 are computed in
// float and rounded once when stored. Reductions accumulate in double.
#pragma once
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "core/dtype.hpp"
#include "core/simd.hpp"

namespace normreg::kernels {

using core::compute_t;
using core::load;
using core::store;

// sign(w) with sign(0) = 0 and sign(NaN) = NaN (NaN is never turned into 0).
// Each comparison is converted on its own (no int subtraction), which keeps loops that
// use it vectorizable.
template <class C>
inline C sign_nan(C w) noexcept {
    const C s = static_cast<C>(w > C(0)) - static_cast<C>(w < C(0));
    return w != w ? w : s;
}

// g-term of the affine penalties, a * sign(w) + b * w, with b * w left out when b == 0
// (HasB false: a * sign(w) + 0): 0 * inf would make the L1 gradient of an infinite weight
// NaN (its limit is a * 1). HasB is chosen once per call, outside the loops (a select on
// b == 0 inside a loop made GCC unswitch it and leave one copy scalar). The one definition
// of this rounding: add_grad_ (affine_grad) and the optimizers' fused gradient use it alike.
template <bool HasB, class C>
__attribute__((always_inline)) inline C affine_term(C w, C a, C b) noexcept {
    if constexpr (HasB) return a * sign_nan(w) + b * w;
    else return (void)b, a * sign_nan(w) + C(0);
}

// Whether a value as stored in T is zero: +-0 for float / double; for bf16 and f16 the
// bits after rounding (a float that rounds to 0 on store counts as a zero).
template <class T>
inline int stored_zero(T s) noexcept {
    if constexpr (std::is_same_v<T, core::bf16> || std::is_same_v<T, core::f16>) return (core::bits_of(s) & 0x7fffu) == 0u;
    else return s == T(0);
}

// Sums of |w| and of w^2. The sum of squares is sq * 2^(2 * exp): exp = 0 is a plain sum;
// a float64 chunk whose plain sum of squares overflowed or lost precision to underflow is
// summed again scaled by 2^-e, e the binary exponent of its max |w| (exact scaling, as in
// LAPACK's dnrm2), so norms are right over the whole float64 range. Partials with different
// exponents are combined at the larger one, in chunk order (deterministic).
struct AbsSq {
    double abs = 0.0;
    double sq = 0.0;
    int exp = 0;
};

inline AbsSq operator+(AbsSq a, AbsSq b) noexcept {
    if (a.exp == b.exp) return AbsSq{a.abs + b.abs, a.sq + b.sq, a.exp};
    if (a.sq == 0.0) return AbsSq{a.abs + b.abs, b.sq, b.exp};  // a zero sum (the initial value) has no scale
    if (b.sq == 0.0) return AbsSq{a.abs + b.abs, a.sq, a.exp};
    const int e = a.exp > b.exp ? a.exp : b.exp;
    return AbsSq{a.abs + b.abs, std::ldexp(a.sq, 2 * (a.exp - e)) + std::ldexp(b.sq, 2 * (b.exp - e)), e};
}

// The L2 norm sqrt(sum w^2) and the plain sum of squares (which may overflow: it is then
// larger than any double) of a scaled sum.
inline double sq_norm(double sq, int exp) noexcept { return std::ldexp(std::sqrt(sq), exp); }
inline double sq_plain(double sq, int exp) noexcept { return std::ldexp(sq, 2 * exp); }

// A plain float64 sum of squares in [kSqLo, kSqHi] is exact to rounding: no term overflowed,
// and terms that underflowed (< 2^-1022, absolute error <= 2^-1075 each, <= 2^16 per chunk)
// are below 2^-100 of the sum. Outside, the chunk is summed again with scaling.
constexpr double kSqLo = 0x1p-950;
constexpr double kSqHi = 0x1p950;
// The same bound for float32 partial sums of squares (terms below 2^-126 lose precision).
constexpr double kSqLoFloat = 0x1p-100;

inline bool sq_in_range(double s) noexcept { return s >= kSqLo && s <= kSqHi; }

struct SqScaled {
    double sq = 0.0;
    int exp = 0;
};

// Scaled sum of squares of the values visit() produces (visit(fn) calls fn(double) on every
// value, in a fixed order, and is called twice): sq * 2^(2 exp). NaN anywhere gives NaN, an
// infinite value gives inf (exp 0).
template <class Visit>
inline SqScaled scaled_sq_sum(Visit&& visit) noexcept {
    double m = 0.0;
    bool nan = false;
    visit([&](double v) {
        const double a = std::fabs(v);
        if (a != a) nan = true;
        else if (a > m) m = a;
    });
    if (nan) return SqScaled{std::numeric_limits<double>::quiet_NaN(), 0};
    if (m == 0.0) return SqScaled{0.0, 0};
    if (m == std::numeric_limits<double>::infinity()) return SqScaled{m, 0};
    int e = 0;
    (void)std::frexp(m, &e);  // m in [2^(e-1), 2^e)
    double s = 0.0;
    visit([&](double v) {
        const double x = std::ldexp(v, -e);
        s += x * x;
    });
    return SqScaled{s, e};
}

template <class T>
inline SqScaled scaled_sq_of(const T* __restrict x, std::int64_t n) noexcept {
    return scaled_sq_sum([&](auto&& fn) {
        for (std::int64_t i = 0; i < n; ++i) fn(static_cast<double>(load<T>(x[i])));
    });
}

// Number of infinite elements.
template <class T>
inline std::int64_t count_inf(const T* __restrict x, std::int64_t n) noexcept {
    std::int64_t c = 0;
    for (std::int64_t i = 0; i < n; ++i) c += std::isinf(load<T>(x[i])) ? 1 : 0;
    return c;
}

// A float64 chunk's plain sum of squares, redone with scaling when out of range.
template <class T>
inline void fix_sq(AbsSq& r, const T* __restrict x, std::int64_t n) noexcept {
    if constexpr (std::is_same_v<T, double>) {
        if (!sq_in_range(r.sq) && r.sq == r.sq) {
            const SqScaled s = scaled_sq_of<T>(x, n);
            r.sq = s.sq;
            r.exp = s.exp;
        }
    } else {
        (void)r, (void)x, (void)n;
    }
}

// Sum of |w| and of w^2 over n elements, in double. kLanes independent accumulators: one
// double add chain per vector register would be bound by the add's latency (about one
// element per cycle), not by memory. Accumulator j sums elements j, j + kLanes, ... in
// order and the lanes are combined in a fixed order, so the result is the same for any
// thread count and any instruction set the kernel is dispatched to.
constexpr std::int64_t kLanes = 16;
// The software prefetch runs NORMREG_PREFETCH_ELEMS ahead with locality 3 (prefetcht0). A
// non-temporal hint (prefetchnta, locality 0) was 4x slower than torch.sum on an Intel Xeon
// whose 480 MiB L3 holds the tensor (5 vs 50 GB/s over 25M floats on 2 threads): NTA lines
// skip the cache levels the hardware prefetcher feeds, so every line was a demand miss.
#ifndef NORMREG_PREFETCH_ELEMS
#define NORMREG_PREFETCH_ELEMS 1024
#endif

// Float inputs (float32, and bf16 / f16 loaded as float) add kDepth rows of kLanes elements
// in float before each double accumulation: every term is >= 0, so a float partial of kDepth
// terms is within (kDepth - 1 + 1) * 2^-24 ~ 2.4e-7 of its exact value (the +1: the square's
// own rounding), and so is the total, well inside the 1e-6 promised against float64; the
// float -> double conversions, most of the work of a pass that is in cache, fall by kDepth.
constexpr std::int64_t kDepth = 4;

template <class T, bool WantAbs, bool WantSq>
NORMREG_KERNEL AbsSq abs_sq_sum(const T* __restrict x, std::int64_t n) noexcept {
    double sa[kLanes] = {}, ss[kLanes] = {};
    std::int64_t i = 0;
    if constexpr (std::is_same_v<compute_t<T>, float>) {
        for (; i + kLanes * kDepth <= n; i += kLanes * kDepth) {
            float fa[kLanes] = {}, fs[kLanes] = {};
            for (std::int64_t k = 0; k < kDepth; ++k) {
                __builtin_prefetch(x + i + k * kLanes + NORMREG_PREFETCH_ELEMS, 0, 3);  // one per row, as below
#pragma omp simd
                for (std::int64_t j = 0; j < kLanes; ++j) {
                    const float v = load<T>(x[i + k * kLanes + j]);
                    if constexpr (WantAbs) fa[j] += std::fabs(v);
                    if constexpr (WantSq) fs[j] += v * v;
                }
            }
#pragma omp simd
            for (std::int64_t j = 0; j < kLanes; ++j) {
                if constexpr (WantAbs) sa[j] += static_cast<double>(fa[j]);
                if constexpr (WantSq) ss[j] += static_cast<double>(fs[j]);
            }
        }
    }
    for (; i + kLanes <= n; i += kLanes) {
        __builtin_prefetch(x + i + NORMREG_PREFETCH_ELEMS, 0, 3);
#pragma omp simd
        for (std::int64_t j = 0; j < kLanes; ++j) {
            const double v = static_cast<double>(load<T>(x[i + j]));
            if constexpr (WantAbs) sa[j] += std::fabs(v);
            if constexpr (WantSq) ss[j] += v * v;
        }
    }
    for (std::int64_t j = 0; i + j < n; ++j) {
        const double v = static_cast<double>(load<T>(x[i + j]));
        if constexpr (WantAbs) sa[j] += std::fabs(v);
        if constexpr (WantSq) ss[j] += v * v;
    }
    double ta = 0.0, ts = 0.0;
    for (std::int64_t j = 0; j < kLanes; ++j) {
        ta += sa[j];
        ts += ss[j];
    }
    if constexpr (std::is_same_v<compute_t<T>, float>) {
        // The float partials overflow past 2^128 and lose precision below 2^-126: out of
        // range, the chunk is summed again with every term in double (float values squared
        // in double neither overflow nor underflow).
        const bool bad_abs = WantAbs && !(ta <= std::numeric_limits<double>::max());
        const bool bad_sq = WantSq && !(ts >= kSqLoFloat && ts <= std::numeric_limits<double>::max());
        if ((bad_abs || bad_sq) && ta == ta && ts == ts) {
            ta = 0.0, ts = 0.0;
            for (std::int64_t k = 0; k < n; ++k) {
                const double v = static_cast<double>(load<T>(x[k]));
                if constexpr (WantAbs) ta += std::fabs(v);
                if constexpr (WantSq) ts += v * v;
            }
        }
        return AbsSq{ta, ts, 0};
    } else {
        AbsSq r{ta, ts, 0};
        if constexpr (WantSq) fix_sq<T>(r, x, n);
        return r;
    }
}

// g = (Accumulate ? g : 0) + a * sign(w) + b * w, in the compute type of T; also returns
// sum |w| and sum w^2 of the same elements (one pass over memory). As in abs_sq_sum, float
// inputs add kDepth rows in float before each double accumulation (a chunk whose float
// partials leave their range is summed again in double, reading only), with the same
// prefetch; b != 0 is decided once, outside the loop (see affine_term).
// (The loop is abs_sq_sum's, written out again: as one helper taking the element access as
// a lambda, GCC left the ElasticNet instance (b != 0, both sums) unvectorized, 2.5x slower.)
template <class T, bool Accumulate, bool WantAbs, bool WantSq>
NORMREG_KERNEL AbsSq affine_grad(const T* __restrict w, T* __restrict g, std::int64_t n, double a, double b) noexcept {
    using C = compute_t<T>;
    const C ca = static_cast<C>(a), cb = static_cast<C>(b);
    auto run = [&](auto has_b) __attribute__((always_inline)) {
        constexpr bool HasB = decltype(has_b)::value;
        // writes g[i], returns w[i] in C
        auto one = [&](std::int64_t i) __attribute__((always_inline)) {
            const C v = load<T>(w[i]);
            C d = affine_term<HasB>(v, ca, cb);
            if constexpr (Accumulate) d = load<T>(g[i]) + d;
            g[i] = store<T>(d);
            return v;
        };
        double sa[kLanes] = {}, ss[kLanes] = {};  // independent accumulators, as in abs_sq_sum
        std::int64_t i = 0;
        if constexpr (std::is_same_v<C, float>) {
            for (; i + kLanes * kDepth <= n; i += kLanes * kDepth) {
                float fa[kLanes] = {}, fs[kLanes] = {};
                for (std::int64_t k = 0; k < kDepth; ++k) {
                    __builtin_prefetch(w + i + k * kLanes + NORMREG_PREFETCH_ELEMS, 0, 3);
                    if constexpr (Accumulate) __builtin_prefetch(g + i + k * kLanes + NORMREG_PREFETCH_ELEMS, 1, 3);
#pragma omp simd
                    for (std::int64_t j = 0; j < kLanes; ++j) {
                        const float v = one(i + k * kLanes + j);
                        if constexpr (WantAbs) fa[j] += std::fabs(v);
                        if constexpr (WantSq) fs[j] += v * v;
                    }
                }
#pragma omp simd
                for (std::int64_t j = 0; j < kLanes; ++j) {
                    if constexpr (WantAbs) sa[j] += static_cast<double>(fa[j]);
                    if constexpr (WantSq) ss[j] += static_cast<double>(fs[j]);
                }
            }
        }
        for (; i + kLanes <= n; i += kLanes) {
#pragma omp simd
            for (std::int64_t j = 0; j < kLanes; ++j) {
                const double v = static_cast<double>(one(i + j));
                if constexpr (WantAbs) sa[j] += std::fabs(v);
                if constexpr (WantSq) ss[j] += v * v;
            }
        }
        for (std::int64_t j = 0; i + j < n; ++j) {
            const double v = static_cast<double>(one(i + j));
            if constexpr (WantAbs) sa[j] += std::fabs(v);
            if constexpr (WantSq) ss[j] += v * v;
        }
        double ta = 0.0, ts = 0.0;
        for (std::int64_t j = 0; j < kLanes; ++j) {
            ta += sa[j];
            ts += ss[j];
        }
        return AbsSq{ta, ts, 0};
    };
    AbsSq r = cb != C(0) ? run(std::true_type{}) : run(std::false_type{});
    if constexpr (std::is_same_v<C, float>) {
        // out of the float partials' range (see abs_sq_sum): the sums again, in double
        const bool bad_abs = WantAbs && !(r.abs <= std::numeric_limits<double>::max());
        const bool bad_sq = WantSq && !(r.sq >= kSqLoFloat && r.sq <= std::numeric_limits<double>::max());
        if ((bad_abs || bad_sq) && r.abs == r.abs && r.sq == r.sq) {
            double ta = 0.0, ts = 0.0;
            for (std::int64_t k = 0; k < n; ++k) {
                const double v = static_cast<double>(load<T>(w[k]));
                if constexpr (WantAbs) ta += std::fabs(v);
                if constexpr (WantSq) ts += v * v;
            }
            r = AbsSq{ta, ts, 0};
        }
    } else if constexpr (WantSq) {
        fix_sq<T>(r, w, n);
    }
    return r;
}

// Special gradient terms of the L2 norm, added to g (rounded once): where w / ||w|| cannot
// be formed with one coefficient (a norm so small that s / ||w|| overflows the compute type,
// or so large that it underflows) g += ldexp(w, -e) * c, with c = s / (||w|| 2^-e); and where
// w has infinite elements (the limit of w / ||w||) g += copysign(c, w) on each of them,
// c = s / sqrt(number of infinities).
template <class T>
inline void l2_grad_scaled(const T* __restrict w, T* __restrict g, std::int64_t n, int e, double c) noexcept {
    using C = compute_t<T>;
    for (std::int64_t i = 0; i < n; ++i) {
        const double d = std::ldexp(static_cast<double>(load<T>(w[i])), -e) * c;
        g[i] = store<T>(load<T>(g[i]) + static_cast<C>(d));
    }
}

template <class T>
inline void l2_grad_inf(const T* __restrict w, T* __restrict g, std::int64_t n, double c) noexcept {
    using C = compute_t<T>;
    const C cc = static_cast<C>(c);
    for (std::int64_t i = 0; i < n; ++i) {
        const C v = load<T>(w[i]);
        if (std::isinf(v)) g[i] = store<T>(load<T>(g[i]) + std::copysign(cc, v));
    }
}

struct MaxAbs {
    double max = -1.0;     // -1: no element seen
    std::int64_t arg = -1;  // first index of the max (global index in the tensor)
    bool nan = false;
};

// Later chunks only win with a strictly larger value, so the first arg max is kept.
inline MaxAbs combine(MaxAbs a, MaxAbs b) noexcept {
    MaxAbs r = b.max > a.max ? b : a;
    r.nan = a.nan || b.nan;
    return r;
}

template <class T>
NORMREG_KERNEL MaxAbs max_abs(const T* __restrict x, std::int64_t n, std::int64_t offset) noexcept {
    using C = compute_t<T>;
    C m = C(-1);
    int nan = 0;
#pragma omp simd reduction(max : m) reduction(| : nan)
    for (std::int64_t i = 0; i < n; ++i) {
        const C v = load<T>(x[i]);
        const C a = v < C(0) ? -v : v;
        nan |= (v != v);
        m = a > m ? a : m;
    }
    MaxAbs r;
    r.nan = nan != 0;
    if (n == 0) return r;
    r.max = static_cast<double>(m);
    for (std::int64_t i = 0; i < n; ++i) {
        const C v = load<T>(x[i]);
        if ((v < C(0) ? -v : v) == m) { r.arg = offset + i; break; }
    }
    return r;
}

struct NonZero {
    std::int64_t count = 0;
    bool nan = false;
};

inline NonZero operator+(NonZero a, NonZero b) noexcept { return NonZero{a.count + b.count, a.nan || b.nan}; }

template <class T>
NORMREG_KERNEL NonZero count_nonzero(const T* __restrict x, std::int64_t n) noexcept {
    using C = compute_t<T>;
    std::int64_t c = 0;
    int nan = 0;
#pragma omp simd reduction(+ : c) reduction(| : nan)
    for (std::int64_t i = 0; i < n; ++i) {
        const C v = load<T>(x[i]);
        c += (v != C(0));
        nan |= (v != v);
    }
    return NonZero{c, nan != 0};
}

// Sum of squares per group for groups [g0, g1) of a (outer, groups, inner) tensor, into
// acc[g - g0] * 2^(2 exps[g - g0]) (float64 groups out of range are summed again scaled).
template <class T>
inline void group_sq_fix(const T* __restrict x, std::int64_t outer, std::int64_t groups, std::int64_t inner, std::int64_t g0,
                         std::int64_t g1, double* __restrict acc, int* __restrict exps) noexcept {
    for (std::int64_t g = g0; g < g1; ++g) {
        double& q = acc[g - g0];
        exps[g - g0] = 0;
        if constexpr (std::is_same_v<T, double>) {
            if (sq_in_range(q) || q != q) continue;
            const SqScaled r = scaled_sq_sum([&](auto&& fn) {
                for (std::int64_t o = 0; o < outer; ++o) {
                    const T* p = x + (o * groups + g) * inner;
                    for (std::int64_t i = 0; i < inner; ++i) fn(p[i]);
                }
            });
            q = r.sq;
            exps[g - g0] = r.exp;
        }
    }
}

template <class T>
NORMREG_KERNEL void group_sq_sums(const T* __restrict x, std::int64_t outer, std::int64_t groups, std::int64_t inner,
                          std::int64_t g0, std::int64_t g1, double* __restrict acc) noexcept {
    for (std::int64_t g = g0; g < g1; ++g) acc[g - g0] = 0.0;
    for (std::int64_t o = 0; o < outer; ++o)
        for (std::int64_t g = g0; g < g1; ++g) {
            const T* p = x + (o * groups + g) * inner;
            double s = 0.0;
#pragma omp simd reduction(+ : s)
            for (std::int64_t i = 0; i < inner; ++i) {
                const double v = static_cast<double>(load<T>(p[i]));
                s += v * v;
            }
            acc[g - g0] += s;
        }
}

// y = (Accumulate ? y : 0) + coef[g] * x over groups [g0, g1); coef indexed from g0.
template <class T, bool Accumulate>
NORMREG_KERNEL void group_scale(const T* __restrict x, T* __restrict y, std::int64_t outer, std::int64_t groups, std::int64_t inner,
                        std::int64_t g0, std::int64_t g1, const double* __restrict coef) noexcept {
    using C = compute_t<T>;
    for (std::int64_t o = 0; o < outer; ++o)
        for (std::int64_t g = g0; g < g1; ++g) {
            const std::int64_t base = (o * groups + g) * inner;
            const C c = static_cast<C>(coef[g - g0]);
            if (coef[g - g0] == 0.0) {  // a zero coefficient adds nothing (0 * inf would be NaN)
                if constexpr (!Accumulate) {
                    for (std::int64_t i = 0; i < inner; ++i) y[base + i] = store<T>(C(0));
                }
                continue;
            }
#pragma omp simd
            for (std::int64_t i = 0; i < inner; ++i) {
                C d = c * load<T>(x[base + i]);
                if constexpr (Accumulate) d = load<T>(y[base + i]) + d;
                y[base + i] = store<T>(d);
            }
        }
}

// y += copysign(c, x) on the infinite elements of group g (the limit of c sqrt(k) x / ||x||
// for a group with k infinite elements, c = s / sqrt(k)); other elements unchanged.
template <class T>
inline void group_grad_inf(const T* __restrict x, T* __restrict y, std::int64_t outer, std::int64_t groups, std::int64_t inner,
                           std::int64_t g, double c) noexcept {
    using C = compute_t<T>;
    const C cc = static_cast<C>(c);
    for (std::int64_t o = 0; o < outer; ++o) {
        const std::int64_t base = (o * groups + g) * inner;
        for (std::int64_t i = 0; i < inner; ++i) {
            const C v = load<T>(x[base + i]);
            if (std::isinf(v)) y[base + i] = store<T>(load<T>(y[base + i]) + std::copysign(cc, v));
        }
    }
}

// Number of infinite elements of group g.
template <class T>
inline std::int64_t group_count_inf(const T* __restrict x, std::int64_t outer, std::int64_t groups, std::int64_t inner,
                                    std::int64_t g) noexcept {
    std::int64_t n = 0;
    for (std::int64_t o = 0; o < outer; ++o) n += count_inf<T>(x + (o * groups + g) * inner, inner);
    return n;
}

}  // namespace normreg::kernels
