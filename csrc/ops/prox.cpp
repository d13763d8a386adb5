// Proximal-operator drivers: each pass is a functor on one chunk (or group block), run by the
// multi-tensor applier. Compiled once, with the extension's flags.
#include "ops/prox.hpp"

#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <vector>

#include "kernels/prox.hpp"
#include "ops/penalty.hpp"  // count_inf_per_tensor

namespace normreg::ops {

using engine::data_as;
using engine::DType;
using engine::Lists;
using engine::multi_tensor_count;
using engine::multi_tensor_reduce;

// Elementwise prox with per-tensor parameters (a, b):
//   Shrink / ShrinkNonNeg: w <- b * soft(w, a * u)   (u: optional per-element weights)
//   Hard:                  w <- |w| <= a ? 0 : w
//   Clamp:                 w <- clamp(w, a, b)
Counts prox_elementwise(ElemOp op, const TensorList& w, const TensorList* u, const std::vector<double>& a,
                        const std::vector<double>& b) {
    static const TensorList none;
    const TensorList& weights = u ? *u : none;
    return multi_tensor_count<2>(Lists<2>{&w, &weights}, [&](auto c) noexcept -> std::int64_t {
        using T = typename decltype(c)::type;
        const std::size_t ti = c.tensor;
        T* wp = c.p[0];
        const T* up = c.p[1];
        switch (op) {
            case ElemOp::Shrink:
                return up ? kernels::shrink<T, false, true>(wp, up, c.n, a[ti], b[ti])
                          : kernels::shrink<T, false, false>(wp, up, c.n, a[ti], b[ti]);
            case ElemOp::ShrinkNonNeg:
                return up ? kernels::shrink<T, true, true>(wp, up, c.n, a[ti], b[ti])
                          : kernels::shrink<T, true, false>(wp, up, c.n, a[ti], b[ti]);
            case ElemOp::Hard: return kernels::hard<T>(wp, c.n, a[ti]);
            case ElemOp::Clamp:
            default: return kernels::clamp<T>(wp, c.n, a[ti], b[ti]);
        }
    });
}

namespace {

// Per-tensor sum |w| and sum soft(w, t)^2 (deterministic).
std::vector<kernels::SoftSums> soft_sums_per_tensor(const TensorList& w, const std::vector<double>& t) {
    return multi_tensor_reduce<kernels::SoftSums, 1>(
        Lists<1>{&w}, kernels::SoftSums{},
        [&](auto c) noexcept {
            using T = typename decltype(c)::type;
            return kernels::soft_sums<T>(c.p[0], c.n, t[c.tensor]);
        },
        [](kernels::SoftSums x, kernels::SoftSums y) { return x + y; });
}

// Coefficient of the (group) L2-norm prox: max(1 - s / norm, 0); NaN norm gives NaN, and a
// zero norm gives 0 (no 0/0).
double norm_prox_coef(double norm, double s) noexcept {
    if (norm != norm) return norm;
    return norm > s ? 1.0 - s / norm : 0.0;
}

}  // namespace

// Prox of  l1*|w|_1 + (l2/2)|w|^2 + lg*||w||_2  per tensor, with t = step*l1, s = step*lg,
// d = 1/(1 + step*l2):  w <- d * max(1 - s/||soft(w,t)||, 0) * soft(w, t)  (exact: the L1
// elements nest inside the tensor's group). Two passes: norms, then the scaled shrink, both
// with soft(w, t) and the scale in double (the float64 prox, rounded once on store).
Counts prox_l2_norm(const TensorList& w, const std::vector<double>& t, const std::vector<double>& s,
                           const std::vector<double>& d) {
    auto sums = soft_sums_per_tensor(w, t);
    std::vector<double> coef(w.size());
    for (std::size_t i = 0; i < w.size(); ++i) coef[i] = norm_prox_coef(kernels::sq_norm(sums[i].sq, sums[i].exp), s[i]) * d[i];
    return multi_tensor_count<1>(Lists<1>{&w}, [&](auto c) noexcept -> std::int64_t {
        using T = typename decltype(c)::type;
        return kernels::shrink_d<T>(c.p[0], c.n, t[c.tensor], coef[c.tensor]);
    });
}

// Projection onto the L2 ball of radius r per tensor: w <- w * min(1, r / ||w||). The norm
// is scaled (no overflow or underflow); where r / ||w|| is below the compute type's normal
// range the tensor is scaled as ldexp(w, -e) * (r / (||w|| 2^-e)) instead. A tensor with
// infinite elements goes to the limit: the radius shared by them, r / sqrt(k) each.
Counts project_l2_ball(const TensorList& w, const std::vector<double>& r) {
    const std::size_t nt = w.size();
    std::vector<double> zero(nt, 0.0);
    auto sums = soft_sums_per_tensor(w, zero);
    std::vector<double> coef(nt);
    std::vector<int> mode(nt, 0), ex(nt, 0);  // 0: coef; 1: ldexp(w, -ex) * coef; 2: infinities
    bool special = false;
    for (std::size_t i = 0; i < nt; ++i) {
        const double norm = kernels::sq_norm(sums[i].sq, sums[i].exp);
        if (norm != norm) { coef[i] = norm; continue; }
        if (!(norm > r[i])) { coef[i] = 1.0; continue; }
        if (norm == std::numeric_limits<double>::infinity()) {
            const std::int64_t k = count_inf_per_tensor(w, i);
            if (k > 0) { mode[i] = 2; coef[i] = r[i] / std::sqrt(static_cast<double>(k)); special = true; continue; }
        }
        coef[i] = r[i] / norm;
        const double lo = w[i].dtype == DType::Float64 ? std::numeric_limits<double>::min()
                                                       : static_cast<double>(std::numeric_limits<float>::min());
        if (coef[i] < lo) {
            if (sums[i].exp != 0) { ex[i] = sums[i].exp; coef[i] = r[i] / std::sqrt(sums[i].sq); }
            else { (void)std::frexp(norm, &ex[i]); coef[i] = r[i] / std::ldexp(norm, -ex[i]); }
            mode[i] = 1;
            special = true;
        }
    }
    if (!special) return prox_elementwise(ElemOp::Shrink, w, nullptr, zero, coef);
    return multi_tensor_count<1>(Lists<1>{&w}, [&](auto c) noexcept -> std::int64_t {
        using T = typename decltype(c)::type;
        const std::size_t ti = c.tensor;
        if (mode[ti] == 1) return kernels::scale_exp<T>(c.p[0], c.n, ex[ti], coef[ti]);
        if (mode[ti] == 2) return kernels::inf_share<T>(c.p[0], c.n, coef[ti]);
        return kernels::shrink<T, false, false>(c.p[0], nullptr, c.n, 0.0, coef[ti]);
    });
}

// Per-tensor threshold theta of the projection onto the L1 ball of radius r (exact):
// sum max(|w| - theta, 0) = r when ||w||_1 > r, else 0; r = 0 gives +inf, a tensor with NaN
// gives NaN. Elements with |w| <= (||w||_1 - r) / n cannot be above theta, so only the rest
// are gathered (in index order, in parallel) and handed to Condat's algorithm.
//
// A tensor with k > 0 infinite elements (and no NaN) gets theta = +inf and ninf[i] = k: the
// projection's limit puts the whole radius on the infinite elements, r / k each (sign kept).
// A float64 sum |w| that overflowed with no infinite element gathers every element.
std::vector<double> l1_ball_thresholds(const TensorList& w, const std::vector<double>& r, std::vector<std::int64_t>* ninf) {
    const std::size_t nt = w.size();
    std::vector<double> zero(nt, 0.0), theta(nt, 0.0), lower(nt, 0.0);
    if (ninf) ninf->assign(nt, 0);
    auto sums = soft_sums_per_tensor(w, zero);
    std::vector<char> need(nt, 0);
    bool any = false;
    const double inf = std::numeric_limits<double>::infinity();
    for (std::size_t i = 0; i < nt; ++i) {
        const double S = sums[i].abs;
        if (S != S) theta[i] = S;
        else if (w[i].numel == 0) theta[i] = 0.0;
        else if (r[i] == 0.0) theta[i] = inf;
        else if (S <= r[i]) theta[i] = 0.0;
        else if (S == inf && count_inf_per_tensor(w, i) > 0) {
            theta[i] = inf;
            if (ninf) (*ninf)[i] = count_inf_per_tensor(w, i);
        } else {
            need[i] = 1;
            any = true;
            lower[i] = S == inf ? 0.0 : (S - r[i]) / static_cast<double>(w[i].numel);
        }
    }
    if (!any) return theta;
    // 1) candidates per chunk (a plan of its own: slot 1, the applier's passes use slot 0)
    engine::check_dtypes(w);
    const engine::ChunkPlan& plan = engine::chunk_plan(w, 1);
    std::vector<std::int64_t> cnt(plan.size(), 0);
    engine::multi_tensor_apply_plan<1>(Lists<1>{&w}, plan, [&](auto c, std::int64_t k) noexcept {
        using T = typename decltype(c)::type;
        if (need[c.tensor]) cnt[static_cast<std::size_t>(k)] = kernels::count_above<T>(c.p[0], c.n, lower[c.tensor]);
    });
    // 2) offsets in chunk order, one buffer per tensor (allocated here, outside the loops)
    std::vector<std::int64_t> offset(plan.size(), 0), total(nt, 0);
    for (std::size_t k = 0; k < plan.size(); ++k) {
        const std::size_t ti = static_cast<std::size_t>(plan[k].tensor);
        offset[k] = total[ti];
        total[ti] += cnt[k];
    }
    std::vector<std::vector<double>> cand(nt), v(nt), vt(nt);
    for (std::size_t i = 0; i < nt; ++i)
        if (need[i]) {
            cand[i].resize(static_cast<std::size_t>(total[i]));
            v[i].resize(static_cast<std::size_t>(total[i]));
            vt[i].resize(static_cast<std::size_t>(total[i]));
        }
    engine::multi_tensor_apply_plan<1>(Lists<1>{&w}, plan, [&](auto c, std::int64_t k) noexcept {
        using T = typename decltype(c)::type;
        const std::size_t ti = c.tensor;
        if (!need[ti] || cnt[static_cast<std::size_t>(k)] == 0) return;
        kernels::gather_above<T>(c.p[0], c.n, lower[ti], cand[ti].data() + offset[static_cast<std::size_t>(k)]);
    });
    // 3) Condat per tensor (tensors in parallel; each is sequential and exact)
    engine::parallel_for(static_cast<std::int64_t>(nt), [&](std::int64_t k) {
        const std::size_t i = static_cast<std::size_t>(k);
        if (!need[i]) return;
        theta[i] = total[i] > 0 ? kernels::condat_threshold(cand[i].data(), total[i], r[i], v[i].data(), vt[i].data()) : 0.0;
        if (theta[i] < 0.0) theta[i] = 0.0;
    }, std::accumulate(total.begin(), total.end(), std::int64_t{0}));
    return theta;
}

// The shrink by theta is computed in double and stored rounded toward zero (kernels::shrink_rz):
// the result is inside the ball, within 1 ulp of the float64 projection rounded to T.
Counts project_l1_ball(const TensorList& w, const std::vector<double>& r) {
    std::vector<std::int64_t> ninf;
    auto theta = l1_ball_thresholds(w, r, &ninf);
    return multi_tensor_count<1>(Lists<1>{&w}, [&](auto c) noexcept -> std::int64_t {
        using T = typename decltype(c)::type;
        const std::size_t ti = c.tensor;
        if (ninf[ti] > 0) return kernels::inf_share<T>(c.p[0], c.n, r[ti] / static_cast<double>(ninf[ti]));
        return kernels::shrink_rz<T>(c.p[0], c.n, theta[ti]);
    });
}

// Prox of s * max|w| per tensor (Moreau): w - P_{L1 ball of radius s}(w) = clamp(w, -theta, theta).
Counts prox_linf(const TensorList& w, const std::vector<double>& s) {
    auto theta = l1_ball_thresholds(w, s);
    std::vector<double> lo(w.size());
    for (std::size_t i = 0; i < w.size(); ++i) {
        if (s[i] == 0.0) theta[i] = std::numeric_limits<double>::infinity();  // prox of 0 is the identity
        lo[i] = -theta[i];
    }
    return prox_elementwise(ElemOp::Clamp, w, nullptr, lo, theta);
}

// Group prox over slices along a dim ((outer, groups, inner) view), with the same terms as
// prox_l2_norm per group: w_g <- d * max(1 - s/||soft(w_g,t)||, 0) * soft(w_g, t).
Counts prox_group(const TensorList& w, const std::vector<GroupShape>& shapes, const std::vector<double>& t,
                         const std::vector<double>& s, const std::vector<double>& d) {
    const std::size_t nt = w.size();
    std::vector<std::vector<double>> coef(nt);
    std::vector<std::vector<int>> exps(nt);
    for (std::size_t i = 0; i < nt; ++i) {
        coef[i].assign(static_cast<std::size_t>(shapes[i].groups), 0.0);
        exps[i].assign(static_cast<std::size_t>(shapes[i].groups), 0);
    }
    const engine::GroupPlan plan = engine::plan_groups(shapes);
    engine::group_apply(w, plan, [&](auto tag, const engine::GroupBlock& blk) noexcept {
        using T = typename decltype(tag)::type;
        const std::size_t ti = static_cast<std::size_t>(blk.tensor);
        const GroupShape& sh = shapes[ti];
        kernels::group_soft_sq<T>(data_as<T>(w[ti]), sh.outer, sh.groups, sh.inner, blk.g_begin, blk.g_end, t[ti],
                                  coef[ti].data() + blk.g_begin);
        kernels::group_soft_fix<T>(data_as<T>(w[ti]), sh.outer, sh.groups, sh.inner, blk.g_begin, blk.g_end, t[ti],
                                   coef[ti].data() + blk.g_begin, exps[ti].data() + blk.g_begin);
    });
    for (std::size_t i = 0; i < nt; ++i)
        for (std::size_t k = 0; k < coef[i].size(); ++k)
            coef[i][k] = norm_prox_coef(kernels::sq_norm(coef[i][k], exps[i][k]), s[i]) * d[i];
    return engine::group_count(w, plan, [&](auto tag, const engine::GroupBlock& blk) noexcept -> std::int64_t {
        using T = typename decltype(tag)::type;
        const std::size_t ti = static_cast<std::size_t>(blk.tensor);
        const GroupShape& sh = shapes[ti];
        return kernels::group_shrink<T>(data_as<T>(w[ti]), sh.outer, sh.groups, sh.inner, blk.g_begin, blk.g_end, t[ti],
                                        coef[ti].data() + blk.g_begin);
    });
}

}  // namespace normreg::ops
