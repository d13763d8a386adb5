// Fused optimizer-step drivers: the step kernels as applier functors. Every flag that
// changes the loop (momentum, nesterov, weight decay, prox kind, amsgrad, preconditioning)
// stays a template parameter: as run-time picks inside the loop (bitwise masks) the SGD
// step ran 25% slower on 25M floats, and as plain branches GCC unswitched the loop and left
// a copy scalar (3x slower). maximize and a fresh momentum buffer are run-time values.
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

// f(integral_constant<int, k>) for the weight-decay modes k in {0, 1, 2}.
template <class F>
decltype(auto) dispatch3(int kind, F&& f) {
    switch (kind) {
        case 1: return f(std::integral_constant<int, 1>{});
        case 2: return f(std::integral_constant<int, 2>{});
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
    const bool momentum = h.momentum != 0.0;
    return dispatch_penalty(prox_kind, [&](auto kind) {
        constexpr int K = decltype(kind)::value;
        return dispatch_bool(momentum, [&](auto mom) {
            constexpr bool M = decltype(mom)::value;
            return dispatch_bool(nesterov && M, [&](auto nest) {
                constexpr bool N = decltype(nest)::value && M;
                return dispatch_bool(h.weight_decay != 0.0, [&](auto wdc) {
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
                return dispatch3(h.weight_decay == 0.0 ? 0 : (h.decoupled ? 2 : 1), [&](auto wdm) {
                    constexpr int WD = decltype(wdm)::value;
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
