// Passes the sharded penalties need (python/normreg/distributed.py): the caller combines
// per-tensor / per-group partial sums across ranks, then applies coefficients it computed
// from the global norms. The reductions themselves are the ones in penalty_ops.hpp.
#pragma once
#include <vector>

#include "engine/multi_tensor.hpp"
#include "engine/penalty_ops.hpp"
#include "kernels/dist.hpp"
#include "kernels/penalty.hpp"

namespace normreg::engine {

// g = (accumulate ? g : 0) + coef[t][k] * w on group k of tensor t, groups as in group_grad.
inline void group_apply_coef(const TensorList& w, const TensorList& g, const std::vector<GroupShape>& shapes,
                             const std::vector<std::vector<double>>& coef, bool accumulate) {
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
}

// w <- c[t] * w for every tensor t, in place, chunk-parallel; zeros per tensor afterwards.
inline std::vector<std::int64_t> scale_per_tensor(const TensorList& w, const std::vector<double>& c) {
    auto plan = plan_chunks(w);
    return reduce_per_tensor<std::int64_t>(
        plan, w.size(), 0,
        [&](const Chunk& ch) {
            const std::size_t ti = static_cast<std::size_t>(ch.tensor);
            return dispatch(w[ti].dtype, [&](auto tag) {
                using T = typename decltype(tag)::type;
                return kernels::scale_count<T>(data_as<T>(w[ti]) + ch.begin, ch.end - ch.begin, c[ti]);
            });
        },
        [](std::int64_t a, std::int64_t b) { return a + b; });
}

// w[o, k, :] <- coef[t][k] * w[o, k, :] on every group k of every tensor t, in place; zeros
// per tensor afterwards (integer sums: the same for any thread count).
inline std::vector<std::int64_t> group_scale_inplace(const TensorList& w, const std::vector<GroupShape>& shapes,
                                                     const std::vector<std::vector<double>>& coef) {
    auto plan = plan_groups(shapes);
    std::vector<std::int64_t> partial(plan.size(), 0);
    parallel_for_group_blocks(plan, shapes, [&](std::int64_t i) {
        const GroupBlock& blk = plan[static_cast<std::size_t>(i)];
        const std::size_t ti = static_cast<std::size_t>(blk.tensor);
        const GroupShape& s = shapes[ti];
        partial[static_cast<std::size_t>(i)] = dispatch(w[ti].dtype, [&](auto tag) {
            using T = typename decltype(tag)::type;
            return kernels::group_scale_count<T>(data_as<T>(w[ti]), s.outer, s.groups, s.inner, blk.g_begin, blk.g_end,
                                                 coef[ti].data() + blk.g_begin);
        });
    });
    std::vector<std::int64_t> out(w.size(), 0);
    for (std::size_t i = 0; i < plan.size(); ++i) out[static_cast<std::size_t>(plan[i].tensor)] += partial[i];
    return out;
}

}  // namespace normreg::engine
