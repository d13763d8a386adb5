// Penalty ops over a whole TensorList: the passes each penalty needs, run by the engine.
// Strength vectors are per tensor (already expanded by the bindings) and checked there.
#pragma once
#include <cmath>
#include <limits>
#include <vector>

#include "engine/multi_tensor.hpp"
#include "kernels/penalty.hpp"

namespace normreg::engine {

enum class Penalty : int { L1 = 0, SquaredL2 = 1, ElasticNet = 2, L2Norm = 3, Linf = 4, L0 = 5 };

inline const char* penalty_name(Penalty p) noexcept {
    switch (p) {
        case Penalty::L1: return "l1";
        case Penalty::SquaredL2: return "squared_l2";
        case Penalty::ElasticNet: return "elastic_net";
        case Penalty::L2Norm: return "l2_norm";
        case Penalty::Linf: return "linf";
        default: return "l0";
    }
}

// Per-tensor sums of |w| and w^2 (deterministic).
template <bool WantAbs, bool WantSq>
inline std::vector<kernels::AbsSq> abs_sq_sums(const TensorList& w) {
    auto plan = plan_chunks(w);
    return reduce_per_tensor(
        plan, w.size(), kernels::AbsSq{},
        [&](const Chunk& c) {
            const TensorRef& t = w[static_cast<std::size_t>(c.tensor)];
            return dispatch(t.dtype, [&](auto tag) {
                using T = typename decltype(tag)::type;
                return kernels::abs_sq_sum<T, WantAbs, WantSq>(data_as<T>(t) + c.begin, c.end - c.begin);
            });
        },
        [](kernels::AbsSq a, kernels::AbsSq b) { return a + b; });
}

inline std::vector<kernels::MaxAbs> max_abs_per_tensor(const TensorList& w) {
    auto plan = plan_chunks(w);
    return reduce_per_tensor(
        plan, w.size(), kernels::MaxAbs{},
        [&](const Chunk& c) {
            const TensorRef& t = w[static_cast<std::size_t>(c.tensor)];
            return dispatch(t.dtype, [&](auto tag) {
                using T = typename decltype(tag)::type;
                return kernels::max_abs<T>(data_as<T>(t) + c.begin, c.end - c.begin, c.begin);
            });
        },
        [](kernels::MaxAbs a, kernels::MaxAbs b) { return kernels::combine(a, b); });
}

inline std::vector<kernels::NonZero> nonzero_per_tensor(const TensorList& w) {
    auto plan = plan_chunks(w);
    return reduce_per_tensor(
        plan, w.size(), kernels::NonZero{},
        [&](const Chunk& c) {
            const TensorRef& t = w[static_cast<std::size_t>(c.tensor)];
            return dispatch(t.dtype, [&](auto tag) {
                using T = typename decltype(tag)::type;
                return kernels::count_nonzero<T>(data_as<T>(t) + c.begin, c.end - c.begin);
            });
        },
        [](kernels::NonZero a, kernels::NonZero b) { return a + b; });
}

// Value of the penalty: sum over tensors, in list order, of the per-tensor value.
inline double penalty_value(Penalty kind, const TensorList& w, const std::vector<double>& s1, const std::vector<double>& s2) {
    double total = 0.0;
    switch (kind) {
        case Penalty::L1: {
            auto s = abs_sq_sums<true, false>(w);
            for (std::size_t i = 0; i < w.size(); ++i) total += s1[i] * s[i].abs;
            break;
        }
        case Penalty::SquaredL2: {
            auto s = abs_sq_sums<false, true>(w);
            for (std::size_t i = 0; i < w.size(); ++i) total += 0.5 * s2[i] * s[i].sq;
            break;
        }
        case Penalty::ElasticNet: {
            auto s = abs_sq_sums<true, true>(w);
            for (std::size_t i = 0; i < w.size(); ++i) total += s1[i] * s[i].abs + 0.5 * s2[i] * s[i].sq;
            break;
        }
        case Penalty::L2Norm: {
            auto s = abs_sq_sums<false, true>(w);
            for (std::size_t i = 0; i < w.size(); ++i) total += s1[i] * std::sqrt(s[i].sq);
            break;
        }
        case Penalty::Linf: {
            auto m = max_abs_per_tensor(w);
            for (std::size_t i = 0; i < w.size(); ++i)
                total += s1[i] * (m[i].nan ? std::numeric_limits<double>::quiet_NaN() : (m[i].max < 0 ? 0.0 : m[i].max));
            break;
        }
        case Penalty::L0: {
            auto c = nonzero_per_tensor(w);
            for (std::size_t i = 0; i < w.size(); ++i)
                total += s1[i] * (c[i].nan ? std::numeric_limits<double>::quiet_NaN() : static_cast<double>(c[i].count));
            break;
        }
    }
    return total;
}

// g = (accumulate ? g : 0) + a_t * sign(w) + b_t * w for every tensor t, in one parallel pass;
// returns per-tensor sums of |w| and w^2 when asked.
template <bool WantAbs, bool WantSq>
inline std::vector<kernels::AbsSq> affine_grad_pass(const TensorList& w, const TensorList& g, const std::vector<double>& a,
                                                    const std::vector<double>& b, bool accumulate) {
    auto plan = plan_chunks(w);
    return reduce_per_tensor(
        plan, w.size(), kernels::AbsSq{},
        [&](const Chunk& c) {
            const std::size_t ti = static_cast<std::size_t>(c.tensor);
            const TensorRef& t = w[ti];
            return dispatch(t.dtype, [&](auto tag) {
                using T = typename decltype(tag)::type;
                const T* wp = data_as<T>(t) + c.begin;
                T* gp = data_as<T>(g[ti]) + c.begin;
                const std::int64_t n = c.end - c.begin;
                return accumulate ? kernels::affine_grad<T, true, WantAbs, WantSq>(wp, gp, n, a[ti], b[ti])
                                  : kernels::affine_grad<T, false, WantAbs, WantSq>(wp, gp, n, a[ti], b[ti]);
            });
        },
        [](kernels::AbsSq x, kernels::AbsSq y) { return x + y; });
}

// Gradient of the penalty, scaled by `scale`, written into (or added to) g. Returns the value.
inline double penalty_grad(Penalty kind, const TensorList& w, const TensorList& g, const std::vector<double>& s1,
                           const std::vector<double>& s2, double scale, bool accumulate) {
    const std::size_t n = w.size();
    std::vector<double> a(n, 0.0), b(n, 0.0);
    double total = 0.0;
    switch (kind) {
        case Penalty::L1: {
            for (std::size_t i = 0; i < n; ++i) a[i] = scale * s1[i];
            auto s = affine_grad_pass<true, false>(w, g, a, b, accumulate);
            for (std::size_t i = 0; i < n; ++i) total += s1[i] * s[i].abs;
            break;
        }
        case Penalty::SquaredL2: {
            for (std::size_t i = 0; i < n; ++i) b[i] = scale * s2[i];
            auto s = affine_grad_pass<false, true>(w, g, a, b, accumulate);
            for (std::size_t i = 0; i < n; ++i) total += 0.5 * s2[i] * s[i].sq;
            break;
        }
        case Penalty::ElasticNet: {
            for (std::size_t i = 0; i < n; ++i) { a[i] = scale * s1[i]; b[i] = scale * s2[i]; }
            auto s = affine_grad_pass<true, true>(w, g, a, b, accumulate);
            for (std::size_t i = 0; i < n; ++i) total += s1[i] * s[i].abs + 0.5 * s2[i] * s[i].sq;
            break;
        }
        case Penalty::L2Norm: {
            auto s = abs_sq_sums<false, true>(w);
            for (std::size_t i = 0; i < n; ++i) {
                const double norm = std::sqrt(s[i].sq);
                total += s1[i] * norm;
                b[i] = norm > 0.0 ? scale * s1[i] / norm : (norm == 0.0 ? 0.0 : norm);  // NaN norm stays NaN
            }
            affine_grad_pass<false, false>(w, g, a, b, accumulate);
            break;
        }
        case Penalty::Linf: {
            auto m = max_abs_per_tensor(w);
            const double nan = std::numeric_limits<double>::quiet_NaN();
            // NaN anywhere in a tensor makes its whole gradient NaN; otherwise zero (or g) ...
            for (std::size_t i = 0; i < n; ++i) a[i] = m[i].nan ? nan : 0.0;
            affine_grad_pass<false, false>(w, g, a, b, accumulate);
            // ... plus s * sign(w) at the first arg max, one element per tensor.
            for (std::size_t i = 0; i < n; ++i) {
                total += s1[i] * (m[i].nan ? nan : (m[i].max < 0 ? 0.0 : m[i].max));
                if (m[i].nan || m[i].arg < 0) continue;
                dispatch(w[i].dtype, [&](auto tag) {
                    using T = typename decltype(tag)::type;
                    using C = compute_t<T>;
                    const std::int64_t k = m[i].arg;
                    const C v = load<T>(data_as<T>(w[i])[k]);
                    T* gp = data_as<T>(g[i]);
                    gp[k] = store<T>(load<T>(gp[k]) + static_cast<C>(scale * s1[i]) * kernels::sign_nan(v));
                });
            }
            break;
        }
        case Penalty::L0:
            break;  // no gradient; the bindings refuse it
    }
    return total;
}

// ---- group lasso: groups are slices along one dim, i.e. [o, g, :] of (outer, G, inner) ----

inline std::vector<std::vector<double>> group_sq_norms(const TensorList& w, const std::vector<GroupShape>& shapes) {
    std::vector<std::vector<double>> sums(w.size());
    for (std::size_t i = 0; i < w.size(); ++i) sums[i].assign(static_cast<std::size_t>(shapes[i].groups), 0.0);
    auto plan = plan_groups(shapes);
    for_each_group_block(plan, shapes, [&](const GroupBlock& blk) {
        const std::size_t ti = static_cast<std::size_t>(blk.tensor);
        const GroupShape& s = shapes[ti];
        dispatch(w[ti].dtype, [&](auto tag) {
            using T = typename decltype(tag)::type;
            kernels::group_sq_sums<T>(data_as<T>(w[ti]), s.outer, s.groups, s.inner, blk.g_begin, blk.g_end,
                                      sums[ti].data() + blk.g_begin);
        });
    });
    return sums;
}

inline double group_value(const TensorList& w, const std::vector<GroupShape>& shapes, const std::vector<double>& s1) {
    auto sums = group_sq_norms(w, shapes);
    double total = 0.0;
    for (std::size_t i = 0; i < w.size(); ++i) {
        double t = 0.0;
        for (double q : sums[i]) t += std::sqrt(q);
        total += s1[i] * t;
    }
    return total;
}

inline double group_grad(const TensorList& w, const TensorList& g, const std::vector<GroupShape>& shapes,
                         const std::vector<double>& s1, double scale, bool accumulate) {
    auto coef = group_sq_norms(w, shapes);
    double total = 0.0;
    for (std::size_t i = 0; i < w.size(); ++i) {
        double t = 0.0;
        for (double& q : coef[i]) {
            const double norm = std::sqrt(q);
            t += norm;
            q = norm > 0.0 ? scale * s1[i] / norm : (norm == 0.0 ? 0.0 : norm);
        }
        total += s1[i] * t;
    }
    auto plan = plan_groups(shapes);
    for_each_group_block(plan, shapes, [&](const GroupBlock& blk) {
        const std::size_t ti = static_cast<std::size_t>(blk.tensor);
        const GroupShape& s = shapes[ti];
        dispatch(w[ti].dtype, [&](auto tag) {
            using T = typename decltype(tag)::type;
            const double* c = coef[ti].data() + blk.g_begin;
            if (accumulate)
                kernels::group_scale<T, true>(data_as<T>(w[ti]), data_as<T>(g[ti]), s.outer, s.groups, s.inner, blk.g_begin, blk.g_end, c);
            else
                kernels::group_scale<T, false>(data_as<T>(w[ti]), data_as<T>(g[ti]), s.outer, s.groups, s.inner, blk.g_begin, blk.g_end, c);
        });
    });
    return total;
}

}  // namespace normreg::engine
