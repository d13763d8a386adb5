// Penalty op drivers: each pass is a functor on one chunk (or group block), run by the
// multi-tensor applier (engine/multi_tensor.hpp). Compiled once, with the extension's flags.
#include "ops/penalty.hpp"

#include <cmath>
#include <limits>
#include <utility>
#include <vector>

namespace normreg::ops {

using engine::Chunk;
using engine::data_as;
using engine::dispatch;
using engine::Lists;
using engine::multi_tensor_apply;
using engine::multi_tensor_reduce;
using core::compute_t;
using core::load;
using core::store;

const char* penalty_name(Penalty p) noexcept {
    switch (p) {
        case Penalty::L1: return "l1";
        case Penalty::SquaredL2: return "squared_l2";
        case Penalty::ElasticNet: return "elastic_net";
        case Penalty::L2Norm: return "l2_norm";
        case Penalty::Linf: return "linf";
        default: return "l0";
    }
}

namespace {

// Per-tensor sums of |w| and w^2 (deterministic); the sum of squares as sq * 2^(2 exp).
template <bool WantAbs, bool WantSq>
std::vector<kernels::AbsSq> abs_sq_sums_scaled(const TensorList& w) {
    return multi_tensor_reduce<kernels::AbsSq, 1>(
        Lists<1>{&w}, kernels::AbsSq{},
        [](auto c) noexcept {
            using T = typename decltype(c)::type;
            return kernels::abs_sq_sum<T, WantAbs, WantSq>(c.p[0], c.n);
        },
        [](kernels::AbsSq a, kernels::AbsSq b) { return a + b; });
}

// The same with plain sums (exp 0; a sum of squares past the double range is inf).
template <bool WantAbs, bool WantSq>
std::vector<kernels::AbsSq> abs_sq_sums_plain(const TensorList& w) {
    auto s = abs_sq_sums_scaled<WantAbs, WantSq>(w);
    for (auto& x : s) {
        x.sq = kernels::sq_plain(x.sq, x.exp);
        x.exp = 0;
    }
    return s;
}

// (l2 / 2) * sum w^2 of a scaled sum, rounded once.
double half_sq(double l2, const kernels::AbsSq& s) noexcept { return std::ldexp(0.5 * l2 * s.sq, 2 * s.exp); }

// The L2-norm gradient terms one coefficient cannot give (mode 1: scaled, 2: infinities),
// added to g after the affine pass (which left those tensors' g unchanged or zero).
void l2_grad_special(const TensorList& w, const TensorList& g, const std::vector<int>& mode, const std::vector<int>& ex,
                     const std::vector<double>& c) {
    multi_tensor_apply<2>(Lists<2>{&w, &g}, [&](auto ch) noexcept {
        using T = typename decltype(ch)::type;
        const std::size_t ti = ch.tensor;
        if (mode[ti] == 2) kernels::l2_grad_inf<T>(ch.p[0], ch.p[1], ch.n, c[ti]);
        else if (mode[ti] == 1) kernels::l2_grad_scaled<T>(ch.p[0], ch.p[1], ch.n, ex[ti], c[ti]);
    });
}

// g = (accumulate ? g : 0) + a_t * sign(w) + b_t * w for every tensor t, in one parallel pass;
// returns per-tensor sums of |w| and w^2 when asked.
template <bool WantAbs, bool WantSq>
std::vector<kernels::AbsSq> affine_grad_pass(const TensorList& w, const TensorList& g, const std::vector<double>& a,
                                             const std::vector<double>& b, bool accumulate) {
    return multi_tensor_reduce<kernels::AbsSq, 2>(
        Lists<2>{&w, &g}, kernels::AbsSq{},
        [&](auto c) noexcept {
            using T = typename decltype(c)::type;
            const std::size_t ti = c.tensor;
            return accumulate ? kernels::affine_grad<T, true, WantAbs, WantSq>(c.p[0], c.p[1], c.n, a[ti], b[ti])
                              : kernels::affine_grad<T, false, WantAbs, WantSq>(c.p[0], c.p[1], c.n, a[ti], b[ti]);
        },
        [](kernels::AbsSq x, kernels::AbsSq y) { return x + y; });
}

// Per-tensor, per-group sums of squares, sums[t][k] * 2^(2 exps[t][k]) (float64 groups out of
// the plain range summed again scaled).
struct GroupSq {
    std::vector<std::vector<double>> sums;
    std::vector<std::vector<int>> exps;
    double norm(std::size_t t, std::size_t k) const noexcept { return kernels::sq_norm(sums[t][k], exps[t][k]); }
};

GroupSq group_sq_norms_scaled(const TensorList& w, const std::vector<GroupShape>& shapes) {
    GroupSq r;
    r.sums.resize(w.size());
    r.exps.resize(w.size());
    for (std::size_t i = 0; i < w.size(); ++i) {
        r.sums[i].assign(static_cast<std::size_t>(shapes[i].groups), 0.0);
        r.exps[i].assign(static_cast<std::size_t>(shapes[i].groups), 0);
    }
    engine::group_apply(w, engine::plan_groups(shapes), [&](auto tag, const engine::GroupBlock& blk) noexcept {
        using T = typename decltype(tag)::type;
        const std::size_t ti = static_cast<std::size_t>(blk.tensor);
        const GroupShape& s = shapes[ti];
        kernels::group_sq_sums<T>(data_as<T>(w[ti]), s.outer, s.groups, s.inner, blk.g_begin, blk.g_end,
                                  r.sums[ti].data() + blk.g_begin);
        kernels::group_sq_fix<T>(data_as<T>(w[ti]), s.outer, s.groups, s.inner, blk.g_begin, blk.g_end,
                                 r.sums[ti].data() + blk.g_begin, r.exps[ti].data() + blk.g_begin);
    });
    return r;
}

}  // namespace

std::vector<kernels::AbsSq> abs_sq_sums(const TensorList& w) { return abs_sq_sums_plain<true, true>(w); }

std::vector<kernels::MaxAbs> max_abs_per_tensor(const TensorList& w) {
    return multi_tensor_reduce<kernels::MaxAbs, 1>(
        Lists<1>{&w}, kernels::MaxAbs{},
        [](auto c) noexcept {
            using T = typename decltype(c)::type;
            return kernels::max_abs<T>(c.p[0], c.n, c.begin);
        },
        [](kernels::MaxAbs a, kernels::MaxAbs b) { return kernels::combine(a, b); });
}

namespace {

std::vector<kernels::NonZero> nonzero_per_tensor(const TensorList& w) {
    return multi_tensor_reduce<kernels::NonZero, 1>(
        Lists<1>{&w}, kernels::NonZero{},
        [](auto c) noexcept {
            using T = typename decltype(c)::type;
            return kernels::count_nonzero<T>(c.p[0], c.n);
        },
        [](kernels::NonZero a, kernels::NonZero b) { return a + b; });
}

}  // namespace

std::int64_t count_inf_per_tensor(const TensorList& w, std::size_t i) {
    return dispatch(w[i].dtype, [&](auto tag) {
        using T = typename decltype(tag)::type;
        return kernels::count_inf<T>(data_as<T>(w[i]), w[i].numel);
    });
}

// Value of the penalty: sum over tensors, in list order, of the per-tensor value.
double penalty_value(Penalty kind, const TensorList& w, const std::vector<double>& s1, const std::vector<double>& s2) {
    double total = 0.0;
    switch (kind) {
        case Penalty::L1: {
            auto s = abs_sq_sums_plain<true, false>(w);
            for (std::size_t i = 0; i < w.size(); ++i) total += s1[i] * s[i].abs;
            break;
        }
        case Penalty::SquaredL2: {
            auto s = abs_sq_sums_scaled<false, true>(w);
            for (std::size_t i = 0; i < w.size(); ++i) total += half_sq(s2[i], s[i]);
            break;
        }
        case Penalty::ElasticNet: {
            auto s = abs_sq_sums_scaled<true, true>(w);
            for (std::size_t i = 0; i < w.size(); ++i) total += s1[i] * s[i].abs + half_sq(s2[i], s[i]);
            break;
        }
        case Penalty::L2Norm: {
            auto s = abs_sq_sums_scaled<false, true>(w);
            for (std::size_t i = 0; i < w.size(); ++i) total += s1[i] * kernels::sq_norm(s[i].sq, s[i].exp);
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

// Gradient of the penalty, scaled by `scale`, written into (or added to) g. Returns the value.
double penalty_grad(Penalty kind, const TensorList& w, const TensorList& g, const std::vector<double>& s1,
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
            for (std::size_t i = 0; i < n; ++i) total += half_sq(s2[i], s[i]);
            break;
        }
        case Penalty::ElasticNet: {
            for (std::size_t i = 0; i < n; ++i) { a[i] = scale * s1[i]; b[i] = scale * s2[i]; }
            auto s = affine_grad_pass<true, true>(w, g, a, b, accumulate);
            for (std::size_t i = 0; i < n; ++i) total += s1[i] * s[i].abs + half_sq(s2[i], s[i]);
            break;
        }
        case Penalty::L2Norm: {
            auto s = abs_sq_sums_scaled<false, true>(w);
            // mode 0: g += b * w; 1: g += ldexp(w, -e) * c (b out of the compute type's normal
            // range); 2: w has infinities, g += copysign(c, w) on them (the limit of w/||w||).
            std::vector<int> mode(n, 0), ex(n, 0);
            std::vector<double> c(n, 0.0);
            bool special = false;
            const double inf = std::numeric_limits<double>::infinity();
            for (std::size_t i = 0; i < n; ++i) {
                const double norm = kernels::sq_norm(s[i].sq, s[i].exp);
                total += s1[i] * norm;
                const double k = scale * s1[i];
                if (norm != norm) { b[i] = norm; continue; }  // NaN norm: NaN gradient
                if (norm == 0.0 || k == 0.0) continue;        // b = 0: g unchanged (or 0)
                if (norm == inf) {
                    const auto ninf = count_inf_per_tensor(w, i);
                    if (ninf > 0) { mode[i] = 2; c[i] = k / std::sqrt(static_cast<double>(ninf)); special = true; }
                    continue;
                }
                b[i] = k / norm;
                const bool f64 = w[i].dtype == DType::Float64;
                const double lo = f64 ? std::numeric_limits<double>::min() : static_cast<double>(std::numeric_limits<float>::min());
                const double hi = f64 ? std::numeric_limits<double>::max() : static_cast<double>(std::numeric_limits<float>::max());
                if (!(std::fabs(b[i]) >= lo && std::fabs(b[i]) <= hi)) {
                    // ||w|| = sqrt(sq) 2^exp = m 2^e with m in [0.5, 2^27]: g = ldexp(w, -e) * (k / m).
                    if (s[i].exp != 0) { ex[i] = s[i].exp; c[i] = k / std::sqrt(s[i].sq); }
                    else { (void)std::frexp(norm, &ex[i]); c[i] = k / std::ldexp(norm, -ex[i]); }
                    mode[i] = 1;
                    b[i] = 0.0;
                    special = true;
                }
            }
            affine_grad_pass<false, false>(w, g, a, b, accumulate);
            if (special) l2_grad_special(w, g, mode, ex, c);
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

// Plain per-group sums of squares (a sum past the double range is inf).
std::vector<std::vector<double>> group_sq_norms(const TensorList& w, const std::vector<GroupShape>& shapes) {
    auto r = group_sq_norms_scaled(w, shapes);
    for (std::size_t i = 0; i < w.size(); ++i)
        for (std::size_t k = 0; k < r.sums[i].size(); ++k) r.sums[i][k] = kernels::sq_plain(r.sums[i][k], r.exps[i][k]);
    return std::move(r.sums);
}

double group_value(const TensorList& w, const std::vector<GroupShape>& shapes, const std::vector<double>& s1) {
    auto sq = group_sq_norms_scaled(w, shapes);
    double total = 0.0;
    for (std::size_t i = 0; i < w.size(); ++i) {
        double t = 0.0;
        for (std::size_t k = 0; k < sq.sums[i].size(); ++k) t += sq.norm(i, k);
        total += s1[i] * t;
    }
    return total;
}

double group_grad(const TensorList& w, const TensorList& g, const std::vector<GroupShape>& shapes,
                         const std::vector<double>& s1, double scale, bool accumulate) {
    auto sq = group_sq_norms_scaled(w, shapes);
    auto& coef = sq.sums;
    double total = 0.0;
    std::vector<std::pair<std::size_t, std::size_t>> inf_groups;  // (tensor, group) with an infinite norm
    struct ScaledGroup {
        std::size_t tensor, group;
        int e;
        double c;
    };
    std::vector<ScaledGroup> scaled_groups;
    for (std::size_t i = 0; i < w.size(); ++i) {
        double t = 0.0;
        for (std::size_t k = 0; k < coef[i].size(); ++k) {
            double& q = coef[i][k];
            const double norm = kernels::sq_norm(q, sq.exps[i][k]);
            t += norm;
            q = norm > 0.0 ? scale * s1[i] / norm : (norm == 0.0 ? 0.0 : norm);
            if (norm == std::numeric_limits<double>::infinity() && q == 0.0 && scale * s1[i] != 0.0) inf_groups.emplace_back(i, k);
            // s / ||w|| past the compute type's normal range (a subnormal norm, or a huge one
            // with a tiny s): g += ldexp(w, -e) * (s / (||w|| 2^-e)) below, q = 0 here
            const bool f64 = w[i].dtype == DType::Float64;
            const double lo = f64 ? std::numeric_limits<double>::min() : static_cast<double>(std::numeric_limits<float>::min());
            const double hi = f64 ? std::numeric_limits<double>::max() : static_cast<double>(std::numeric_limits<float>::max());
            if (norm > 0.0 && norm < std::numeric_limits<double>::infinity() && scale * s1[i] != 0.0 &&
                !(std::fabs(q) >= lo && std::fabs(q) <= hi)) {
                int e = 0;
                (void)std::frexp(norm, &e);
                scaled_groups.push_back(ScaledGroup{i, k, e, scale * s1[i] / std::ldexp(norm, -e)});
                q = 0.0;
            }
        }
        total += s1[i] * t;
    }
    group_apply_coef(w, g, shapes, coef, accumulate);
    // groups with infinite elements: the limit s sign(w) / sqrt(k) on their k infinite
    // elements, 0 elsewhere (coef 0 above left g unchanged or zero there)
    for (const auto& [ti, k] : inf_groups) {
        const GroupShape& s = shapes[ti];
        dispatch(w[ti].dtype, [&](auto tag) {
            using T = typename decltype(tag)::type;
            const T* x = data_as<T>(w[ti]);
            const auto n = kernels::group_count_inf<T>(x, s.outer, s.groups, s.inner, static_cast<std::int64_t>(k));
            if (n > 0)
                kernels::group_grad_inf<T>(x, data_as<T>(g[ti]), s.outer, s.groups, s.inner, static_cast<std::int64_t>(k),
                                           scale * s1[ti] / std::sqrt(static_cast<double>(n)));
        });
    }
    for (const auto& sg : scaled_groups) {
        const GroupShape& s = shapes[sg.tensor];
        dispatch(w[sg.tensor].dtype, [&](auto tag) {
            using T = typename decltype(tag)::type;
            const T* x = data_as<T>(w[sg.tensor]);
            T* y = data_as<T>(g[sg.tensor]);
            for (std::int64_t o = 0; o < s.outer; ++o) {
                const std::int64_t base = (o * s.groups + static_cast<std::int64_t>(sg.group)) * s.inner;
                kernels::l2_grad_scaled<T>(x + base, y + base, s.inner, sg.e, sg.c);
            }
        });
    }
    return total;
}

void group_apply_coef(const TensorList& w, const TensorList& g, const std::vector<GroupShape>& shapes,
                      const std::vector<std::vector<double>>& coef, bool accumulate) {
    engine::group_apply(w, engine::plan_groups(shapes), [&](auto tag, const engine::GroupBlock& blk) noexcept {
        using T = typename decltype(tag)::type;
        const std::size_t ti = static_cast<std::size_t>(blk.tensor);
        const GroupShape& s = shapes[ti];
        const double* c = coef[ti].data() + blk.g_begin;
        if (accumulate)
            kernels::group_scale<T, true>(data_as<T>(w[ti]), data_as<T>(g[ti]), s.outer, s.groups, s.inner, blk.g_begin, blk.g_end, c);
        else
            kernels::group_scale<T, false>(data_as<T>(w[ti]), data_as<T>(g[ti]), s.outer, s.groups, s.inner, blk.g_begin, blk.g_end, c);
    });
}

}  // namespace normreg::ops
