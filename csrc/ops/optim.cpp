// Fused optimizer-step drivers: the step kernels as applier functors. Momentum / amsgrad
// (extra streams) and the prox kind (and Adam's preconditioned prox) pick the kernel's
// instantiation; weight decay, nesterov, a fresh buffer and maximize are run-time values
// inside it (kernels/optim.hpp).
#include "ops/optim.hpp"

#include <cstdint>
#include <type_traits>
#include <vector>

namespace normreg::ops {

using engine::Lists;
using engine::multi_tensor_count;

namespace {

// f(integral_constant<int, k>) for the fused penalty kinds k in {0, 1, 2, 3} (kernels::ProxKind).
template <class F>
decltype(auto) dispatch_penalty(int kind, F&& f) {
    switch (kind) {
        case 1: return f(std::integral_constant<int, 1>{});
        case 2: return f(std::integral_constant<int, 2>{});
        case 3: return f(std::integral_constant<int, 3>{});
        default: return f(std::integral_constant<int, 0>{});
    }
}

template <class F>
decltype(auto) dispatch_bool(bool b, F&& f) {
    return b ? f(std::true_type{}) : f(std::false_type{});
}

}  // namespace

std::vector<std::int64_t> sgd_step(const TensorList& w, const TensorList& g, const TensorList& buf, const std::vector<char>& init,
                                   const kernels::SgdHyper& h, bool nesterov, int prox_kind, double pa, double pb) {
    return dispatch_penalty(prox_kind, [&](auto kind) {
        constexpr int K = decltype(kind)::value;
        return dispatch_bool(h.momentum != 0.0, [&](auto mom) {
            constexpr bool M = decltype(mom)::value;
            return multi_tensor_count<3>(Lists<3>{&w, &g, M ? &buf : nullptr}, [&](auto c) noexcept -> std::int64_t {
                using T = typename decltype(c)::type;
                const auto p = kernels::prox_const<core::compute_t<T>>(pa, pb);
                return kernels::sgd_step<T, M, K>(c.p[0], c.p[1], c.p[2], c.n, h, M && init[c.tensor] != 0, M && nesterov, p);
            });
        });
    });
}

std::vector<std::int64_t> adam_step(const TensorList& w, const TensorList& g, const TensorList& m, const TensorList& v,
                                    const TensorList& vmax, const std::vector<double>& step_size, const std::vector<double>& bc2_sqrt,
                                    const kernels::AdamHyper& h, bool amsgrad, int prox_kind, double pa, double pb,
                                    bool preconditioned) {
    return dispatch_penalty(prox_kind, [&](auto kind) {
        constexpr int K = decltype(kind)::value;
        return dispatch_bool(amsgrad, [&](auto ams) {
            constexpr bool A = decltype(ams)::value;
            return dispatch_bool(preconditioned && (K == 1 || K == 2), [&](auto pre) {
                constexpr bool P = decltype(pre)::value && (K == 1 || K == 2);
                return multi_tensor_count<5>(Lists<5>{&w, &g, &m, &v, A ? &vmax : nullptr}, [&](auto c) noexcept -> std::int64_t {
                    using T = typename decltype(c)::type;
                    const auto p = kernels::prox_const<core::compute_t<T>>(pa, pb);
                    return kernels::adam_step<T, A, K, P>(c.p[0], c.p[1], c.p[2], c.p[3], c.p[4], c.n, h, step_size[c.tensor],
                                                          bc2_sqrt[c.tensor], p);
                });
            });
        });
    });
}

}  // namespace normreg::ops
