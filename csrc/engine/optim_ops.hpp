// Fused optimizer steps over a whole param group: one parallel pass over all chunks of all
// tensors does the moment updates, the parameter update and the elementwise prox, and
// counts the zeros it writes (per-chunk counts combined in chunk order). The lists are
// already paired and checked by the bindings.
#pragma once
#include <cstdint>
#include <type_traits>
#include <vector>

#include "engine/multi_tensor.hpp"
#include "kernels/optim.hpp"

namespace normreg::engine {

// f(integral_constant<int, k>) for k in {0, 1, 2} (weight-decay modes).
template <class F>
inline decltype(auto) dispatch3(int kind, F&& f) {
    switch (kind) {
        case 1: return f(std::integral_constant<int, 1>{});
        case 2: return f(std::integral_constant<int, 2>{});
        default: return f(std::integral_constant<int, 0>{});
    }
}

// f(integral_constant<int, k>) for the fused penalty kinds k in {0, 1, 2, 3} (kernels::ProxKind).
template <class F>
inline decltype(auto) dispatch_penalty(int kind, F&& f) {
    if (kind == 3) return f(std::integral_constant<int, 3>{});
    return dispatch3(kind, f);
}

template <class F>
inline decltype(auto) dispatch_bool(bool b, F&& f) {
    return b ? f(std::true_type{}) : f(std::false_type{});
}

// SGD (momentum, dampening, nesterov, weight decay, maximize) + the fused penalty (prox or gradient). `buf` is empty when
// momentum == 0; init[i] marks tensors whose momentum buffer is new (and zero-filled).
inline std::vector<std::int64_t> sgd_step(const TensorList& w, const TensorList& g, const TensorList& buf,
                                          const std::vector<char>& init, const kernels::SgdHyper& h, bool nesterov,
                                          int prox_kind, double pa, double pb) {
    const bool momentum = h.momentum != 0.0;
    auto plan = plan_chunks(w);
    auto combine = [](std::int64_t a, std::int64_t b) { return a + b; };
    return dispatch_penalty(prox_kind, [&](auto kind) {
        constexpr int K = decltype(kind)::value;
        return dispatch_bool(momentum, [&](auto mom) {
            constexpr bool M = decltype(mom)::value;
            return dispatch_bool(nesterov && M, [&](auto nest) {
                constexpr bool N = decltype(nest)::value;
                return dispatch_bool(h.weight_decay != 0.0, [&](auto wdc) {
                constexpr bool WD = decltype(wdc)::value;
                return reduce_per_tensor<std::int64_t>(
                    plan, w.size(), 0,
                    [&](const Chunk& c) -> std::int64_t {
                        const std::size_t ti = static_cast<std::size_t>(c.tensor);
                        return dispatch(w[ti].dtype, [&](auto tag) -> std::int64_t {
                            using T = typename decltype(tag)::type;
                            const auto p = kernels::prox_const<compute_t<T>>(pa, pb);
                            T* bp = M ? data_as<T>(buf[ti]) + c.begin : nullptr;
                            return kernels::sgd_step<T, M, N, K, WD>(data_as<T>(w[ti]) + c.begin, data_as<T>(g[ti]) + c.begin,
                                                                     bp, c.end - c.begin, h, M && init[ti] != 0, p);
                        });
                    },
                    combine);
                });
            });
        });
    });
}

// Adam / AdamW (+ amsgrad) + the fused penalty (prox or gradient); step_size and bc2_sqrt per tensor (each param has its
// own step count, as in torch.optim). `vmax` is empty unless amsgrad.
inline std::vector<std::int64_t> adam_step(const TensorList& w, const TensorList& g, const TensorList& m, const TensorList& v,
                                           const TensorList& vmax, const std::vector<double>& step_size,
                                           const std::vector<double>& bc2_sqrt, const kernels::AdamHyper& h, bool amsgrad,
                                           int prox_kind, double pa, double pb, bool preconditioned) {
    auto plan = plan_chunks(w);
    auto combine = [](std::int64_t a, std::int64_t b) { return a + b; };
    return dispatch_penalty(prox_kind, [&](auto kind) {
        constexpr int K = decltype(kind)::value;
        return dispatch_bool(amsgrad, [&](auto ams) {
            constexpr bool A = decltype(ams)::value;
            return dispatch_bool(preconditioned && (K == 1 || K == 2), [&](auto pre) {
                constexpr bool P = decltype(pre)::value;
                return dispatch3(h.weight_decay == 0.0 ? 0 : (h.decoupled ? 2 : 1), [&](auto wdm) {
                constexpr int WD = decltype(wdm)::value;
                return reduce_per_tensor<std::int64_t>(
                    plan, w.size(), 0,
                    [&](const Chunk& c) -> std::int64_t {
                        const std::size_t ti = static_cast<std::size_t>(c.tensor);
                        return dispatch(w[ti].dtype, [&](auto tag) -> std::int64_t {
                            using T = typename decltype(tag)::type;
                            const auto p = kernels::prox_const<compute_t<T>>(pa, pb);
                            T* vm = A ? data_as<T>(vmax[ti]) + c.begin : nullptr;
                            return kernels::adam_step<T, A, K, P, WD>(data_as<T>(w[ti]) + c.begin, data_as<T>(g[ti]) + c.begin,
                                                                      data_as<T>(m[ti]) + c.begin, data_as<T>(v[ti]) + c.begin, vm,
                                                                      c.end - c.begin, h, step_size[ti], bc2_sqrt[ti], p);
                        });
                    },
                    combine);
                });
            });
        });
    });
}

}  // namespace normreg::engine
