// Passes the sharded penalties need (python/normreg/distributed.py): the caller combines
// per-tensor / per-group partial sums across ranks, then applies coefficients it computed
// from the global norms. The reductions themselves are the ones in penalty_ops.hpp.
#pragma once
#include <vector>

#include "engine/multi_tensor.hpp"
#include "engine/penalty_ops.hpp"
#include "kernels/penalty.hpp"

namespace normreg::engine {

// g = (accumulate ? g : 0) + coef[t][k] * w on group k of tensor t, groups as in group_grad.
inline void group_apply_coef(const TensorList& w, const TensorList& g, const std::vector<GroupShape>& shapes,
                             const std::vector<std::vector<double>>& coef, bool accumulate) {
    auto plan = plan_groups(shapes);
    for_each_group_block(plan, [&](const GroupBlock& blk) {
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

}  // namespace normreg::engine
