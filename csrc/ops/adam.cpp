// The fused Adam / AdamW step driver: kernels::adam_step as an applier functor (SGD:
// ops/sgd.cpp, a file of its own so the two build in parallel). Every flag that
// changes the loop (amsgrad, prox kind, preconditioning, coupled weight decay) stays a
// template parameter: as run-time picks inside the loop (bitwise masks) the SGD
// step ran 25% slower on 25M floats, and as plain branches GCC unswitched the loop and left
// a copy scalar (3x slower). maximize and AdamW's decoupled decay are run-time values
// (see kernels::adam_step).
#include "ops/optim.hpp"

#include <cstdint>
#include <type_traits>
#include <vector>

#include "ops/optim_flags.hpp"

namespace normreg::ops {

using engine::Lists;
using engine::multi_tensor_count;

std::vector<std::int64_t> adam_step(const TensorList& w, const TensorList& g, const TensorList& m, const TensorList& v,
                                    const TensorList& vmax, const std::vector<double>& step_size, const std::vector<double>& bc2_sqrt,
                                    const kernels::AdamHyper& h, bool amsgrad, int prox_kind, double pa, double pb,
                                    bool preconditioned) {
    // Preconditioning only changes the L1 / ElasticNet prox (kinds 1 and 2): the other kinds
    // are not instantiated with it.
    return flags::penalty(prox_kind, [&](auto kind) {
        constexpr int K = decltype(kind)::value;
        return flags::boolean(amsgrad, [&](auto ams) {
            constexpr bool A = decltype(ams)::value;
            return flags::boolean_if<K == 1 || K == 2>(preconditioned, [&](auto pre) {
                constexpr bool P = decltype(pre)::value;
                return flags::boolean(h.weight_decay != 0.0 && !h.decoupled, [&](auto coupled) {
                    constexpr bool WD = decltype(coupled)::value;
                    return multi_tensor_count<5>(Lists<5>{&w, &g, &m, &v, A ? &vmax : nullptr}, [&](auto c) noexcept -> std::int64_t {
                        using T = typename decltype(c)::type;
                        const auto p = kernels::prox_const<core::compute_t<T>>(pa, pb);
                        return kernels::adam_step<T, A, K, P, WD>(c.p[0], c.p[1], c.p[2], c.p[3], c.p[4], c.n, h, step_size[c.tensor],
                                                                  bc2_sqrt[c.tensor], p);
                    });
                });
            });
        });
    });
}

}  // namespace normreg::ops
