// Sharded-penalty drivers: coefficient passes as applier functors (chunks or group blocks).
#include "ops/dist.hpp"

#include "kernels/dist.hpp"
#include "kernels/penalty.hpp"

namespace normreg::ops {

using engine::data_as;
using engine::GroupBlock;
using engine::Lists;

std::vector<std::int64_t> scale_per_tensor(const TensorList& w, const std::vector<double>& c) {
    return engine::multi_tensor_count<1>(Lists<1>{&w}, [&](auto ch) noexcept -> std::int64_t {
        using T = typename decltype(ch)::type;
        return kernels::scale_count<T>(ch.p[0], ch.n, c[ch.tensor]);
    });
}

std::vector<std::int64_t> group_scale_inplace(const TensorList& w, const std::vector<GroupShape>& shapes,
                                              const std::vector<std::vector<double>>& coef) {
    return engine::group_count(w, engine::plan_groups(shapes), [&](auto tag, const GroupBlock& blk) noexcept -> std::int64_t {
        using T = typename decltype(tag)::type;
        const std::size_t ti = static_cast<std::size_t>(blk.tensor);
        const GroupShape& s = shapes[ti];
        return kernels::group_scale_count<T>(data_as<T>(w[ti]), s.outer, s.groups, s.inner, blk.g_begin, blk.g_end,
                                             coef[ti].data() + blk.g_begin);
    });
}

}  // namespace normreg::ops
