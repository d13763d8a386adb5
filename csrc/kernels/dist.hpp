// In-place scaling for the sharded proximal steps (normreg.distributed): the caller computes
// the coefficients from norms combined across ranks. Pure C++: raw pointers, noexcept,
// templated on the storage type; bf16/f16 are computed in float and rounded once.
#pragma once
#include <cstdint>

#include "core/dtype.hpp"
#include "core/simd.hpp"
#include "kernels/penalty.hpp"  // stored_zero

namespace normreg::kernels {

// w <- c * w over n elements, the product in double (as the unsharded L2-norm and group prox
// scale), rounded once on store; returns how many elements are exactly zero afterwards.
template <class T>
inline std::int64_t scale_count(T* __restrict w, std::int64_t n, double c) noexcept {
    using C = core::compute_t<T>;
    std::int64_t zeros = 0;
#pragma omp simd reduction(+ : zeros)
    for (std::int64_t i = 0; i < n; ++i) {
        const T v = core::store<T>(static_cast<C>(c * static_cast<double>(core::load<T>(w[i]))));
        w[i] = v;
        zeros += stored_zero<T>(v);  // the stored value (bf16 / f16 may round to 0)
    }
    return zeros;
}

// w[o, g, :] <- coef[g - g0] * w[o, g, :] for groups [g0, g1) of an (outer, groups, inner)
// tensor; returns the zeros written.
template <class T>
inline std::int64_t group_scale_count(T* __restrict w, std::int64_t outer, std::int64_t groups, std::int64_t inner,
                                      std::int64_t g0, std::int64_t g1, const double* __restrict coef) noexcept {
    std::int64_t zeros = 0;
    for (std::int64_t o = 0; o < outer; ++o)
        for (std::int64_t g = g0; g < g1; ++g) zeros += scale_count<T>(w + (o * groups + g) * inner, inner, coef[g - g0]);
    return zeros;
}

}  // namespace normreg::kernels
