// The fused SGD step driver: kernels::sgd_step as an applier functor (Adam: ops/adam.cpp,
// a file of its own so the two build in parallel). Every flag that
// changes the loop (momentum, nesterov, weight decay, prox kind) stays a template
// parameter: as run-time picks inside the loop (bitwise masks) the SGD
// step ran 25% slower on 25M floats, and as plain branches GCC unswitched the loop and left
// a copy scalar (3x slower). maximize and a fresh momentum buffer are run-time values.
#include "ops/optim.hpp"

#include <cstdint>
#include <type_traits>
#include <vector>

#include "ops/optim_flags.hpp"

namespace normreg::ops {

using engine::Lists;
using engine::multi_tensor_count;

std::vector<std::int64_t> sgd_step(const TensorList& w, const TensorList& g, const TensorList& buf, const std::vector<char>& init,
                                   const kernels::SgdHyper& h, bool nesterov, int prox_kind, double pa, double pb) {
    const bool momentum = h.momentum != 0.0;
    return flags::penalty(prox_kind, [&](auto kind) {
        constexpr int K = decltype(kind)::value;
        return flags::boolean(momentum, [&](auto mom) {
            constexpr bool M = decltype(mom)::value;
            return flags::boolean_if<M>(nesterov, [&](auto nest) {  // nesterov needs momentum
                constexpr bool N = decltype(nest)::value;
                return flags::boolean(h.weight_decay != 0.0, [&](auto wdc) {
                    constexpr bool WD = decltype(wdc)::value;
                    return multi_tensor_count<3>(Lists<3>{&w, &g, M ? &buf : nullptr}, [&](auto c) noexcept -> std::int64_t {
                        using T = typename decltype(c)::type;
                        const auto p = kernels::prox_const<core::compute_t<T>>(pa, pb);
                        return kernels::sgd_step<T, M, N, K, WD>(c.p[0], c.p[1], c.p[2], c.n, h, M && init[c.tensor] != 0, p);
                    });
                });
            });
        });
    });
}

}  // namespace normreg::ops
