// Image-space loss ops, run by the engine: pointwise reconstruction losses over one tensor
// (cut into kChunk-element chunks) and total variation over NCHW batches (cut into blocks
// of rows of one plane). One parallel loop per op; reductions keep one partial per chunk or
// block and combine them in plan order, so values are identical for any thread count.
#pragma once
#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <utility>
#include <vector>

#include "engine/multi_tensor.hpp"
#include "kernels/image.hpp"

namespace normreg::engine {

using kernels::PointLoss;
using kernels::TVKind;

// Calls f(std::true_type{}) or f(std::false_type{}): turns a run-time flag into a template one.
template <class F>
inline decltype(auto) with_flag(bool b, F&& f) {
    if (b) return f(std::true_type{});
    return f(std::false_type{});
}

template <class F>
inline decltype(auto) with_point_loss(PointLoss k, F&& f) {
    if (k == PointLoss::MSE) return f(std::integral_constant<PointLoss, PointLoss::MSE>{});
    return f(std::integral_constant<PointLoss, PointLoss::L1>{});
}

// The tensors of one pointwise-loss call: all contiguous, `numel` elements of `dtype`;
// mask / weight already broadcast to pred's shape, null when absent.
struct PointwiseArgs {
    const void* pred;
    const void* target;
    const void* mask;
    const void* weight;
    std::int64_t numel;
    DType dtype;
};

// Sum of [m] [w] loss(pred - target) and sum of m; writes the elementwise loss to `out`
// (reduction "none") when out is not null, and the gradient for an incoming gradient of 1,
// grad_factor(dir_scale) * [m] [w] dloss, to `dir` (in the compute type: float for
// float32/bf16/f16, double for float64) when dir is not null.
inline kernels::LossSums pointwise_loss_value(PointLoss kind, const PointwiseArgs& a, void* out, void* dir, double dir_scale) {
    const TensorList one{TensorRef{const_cast<void*>(a.pred), a.numel, a.dtype}};
    const auto plan = plan_chunks(one);
    if (plan.empty()) return kernels::LossSums{};
    return dispatch(a.dtype, [&](auto tag) {
        using T = typename decltype(tag)::type;
        using C = compute_t<T>;
        const T* p = static_cast<const T*>(a.pred);
        const T* t = static_cast<const T*>(a.target);
        const T* m = static_cast<const T*>(a.mask);
        const T* w = static_cast<const T*>(a.weight);
        T* o = static_cast<T*>(out);
        C* u = static_cast<C*>(dir);
        return with_point_loss(kind, [&](auto K) {
            return with_flag(m != nullptr, [&](auto M) {
                return with_flag(w != nullptr, [&](auto W) {
                    return with_flag(o != nullptr, [&](auto O) {
                        return with_flag(u != nullptr, [&](auto D) {
                            auto r = reduce_per_tensor(
                                plan, 1, kernels::LossSums{},
                                [&](const Chunk& c) {
                                    const std::int64_t b = c.begin;
                                    return kernels::pointwise_value<T, decltype(K)::value, decltype(M)::value, decltype(W)::value,
                                                                    decltype(O)::value, decltype(D)::value>(
                                        p + b, t + b, m + (M ? b : 0), w + (W ? b : 0), o + (O ? b : 0), u + (D ? b : 0), c.end - b, dir_scale);
                                },
                                [](kernels::LossSums x, kernels::LossSums y) { return x + y; });
                            return r[0];
                        });
                    });
                });
            });
        });
    });
}

// grad_pred = (grad_factor(dir_scale) * dloss * [m] [w]) * scale * [grad_out], as the forward's
// dir followed by pointwise_loss_grad_scale; grad_target = -grad_pred when not null.
inline void pointwise_loss_grad(PointLoss kind, const PointwiseArgs& a, const void* grad_out, void* grad_pred, void* grad_target,
                                double dir_scale, double scale) {
    const TensorList one{TensorRef{const_cast<void*>(a.pred), a.numel, a.dtype}};
    const auto plan = plan_chunks(one);
    if (plan.empty()) return;
    dispatch(a.dtype, [&](auto tag) {
        using T = typename decltype(tag)::type;
        const T* p = static_cast<const T*>(a.pred);
        const T* t = static_cast<const T*>(a.target);
        const T* m = static_cast<const T*>(a.mask);
        const T* w = static_cast<const T*>(a.weight);
        const T* go = static_cast<const T*>(grad_out);
        T* gp = static_cast<T*>(grad_pred);
        T* gt = static_cast<T*>(grad_target);
        with_point_loss(kind, [&](auto K) {
            with_flag(m != nullptr, [&](auto M) {
                with_flag(w != nullptr, [&](auto W) {
                    with_flag(go != nullptr, [&](auto G) {
                        with_flag(gt != nullptr, [&](auto GT) {
                            for_each_chunk(plan, [&](const Chunk& c) {
                                const std::int64_t b = c.begin;
                                kernels::pointwise_grad<T, decltype(K)::value, decltype(M)::value, decltype(W)::value,
                                                        decltype(G)::value, decltype(GT)::value>(
                                    p + b, t + b, m + (M ? b : 0), w + (W ? b : 0), go + (G ? b : 0), gp + b, gt + (GT ? b : 0),
                                    c.end - b, dir_scale, scale);
                            });
                        });
                    });
                });
            });
        });
    });
}

// grad_pred = (dir * scale) * [grad_out] and grad_target = minus that, each when not null, from
// the gradient pointwise_loss_value wrote to dir (compute type). grad_pred may be dir itself
// when the dtype is float32 or float64 (in place).
inline void pointwise_loss_grad_scale(const void* dir, const void* grad_out, void* grad_pred, void* grad_target, std::int64_t numel,
                                      DType dtype, double scale) {
    const TensorList one{TensorRef{const_cast<void*>(dir), numel, dtype}};
    const auto plan = plan_chunks(one);
    if (plan.empty()) return;
    dispatch(dtype, [&](auto tag) {
        using T = typename decltype(tag)::type;
        using C = compute_t<T>;
        const C* u = static_cast<const C*>(dir);
        const T* go = static_cast<const T*>(grad_out);
        T* gp = static_cast<T*>(grad_pred);
        T* gt = static_cast<T*>(grad_target);
        with_flag(go != nullptr, [&](auto G) {
            with_flag(gp != nullptr, [&](auto GP) {
                with_flag(gt != nullptr, [&](auto GT) {
                    for_each_chunk(plan, [&](const Chunk& c) {
                        const std::int64_t b = c.begin;
                        kernels::pointwise_grad_scale<T, decltype(G)::value, decltype(GP)::value, decltype(GT)::value>(
                            u + b, go + (G ? b : 0), gp + (GP ? b : 0), gt + (GT ? b : 0), c.end - b, scale);
                    });
                });
            });
        });
    });
}

// ---- total variation over an NCHW batch -------------------------------------------------

struct ImageShape {
    std::int64_t n, c, h, w;
};

// Rows [r0, r1) of plane `plane` (= n * C + c). Blocks never cross planes.
struct RowBlock {
    std::int64_t plane;
    std::int64_t r0;
    std::int64_t r1;
};

inline std::vector<RowBlock> plan_rows(const ImageShape& s, std::int64_t chunk = kChunk) {
    std::vector<RowBlock> plan;
    if (s.h <= 0 || s.w <= 0) return plan;
    const std::int64_t rows = std::max<std::int64_t>(1, chunk / s.w);
    const std::int64_t planes = s.n * s.c;
    plan.reserve(static_cast<std::size_t>(planes * ((s.h + rows - 1) / rows)));
    for (std::int64_t q = 0; q < planes; ++q)
        for (std::int64_t r = 0; r < s.h; r += rows) plan.push_back(RowBlock{q, r, std::min(r + rows, s.h)});
    return plan;
}

// Total variation of each image (sum over its channels), in image order; deterministic.
inline std::vector<double> tv_value(TVKind kind, const void* x, DType dtype, const ImageShape& s, double eps) {
    std::vector<double> per_image(static_cast<std::size_t>(s.n > 0 ? s.n : 0), 0.0);
    const auto plan = plan_rows(s);
    if (plan.empty()) return per_image;
    std::vector<double> partial(plan.size(), 0.0);
    dispatch(dtype, [&](auto tag) {
        using T = typename decltype(tag)::type;
        using C = compute_t<T>;
        const T* base = static_cast<const T*>(x);
        const C ceps = static_cast<C>(eps);
        const std::int64_t H = s.h, W = s.w;
        auto run = [&](auto KC) {
            constexpr TVKind K = decltype(KC)::value;
            parallel_for(static_cast<std::int64_t>(plan.size()), [&](std::int64_t bi) {
                const RowBlock& b = plan[static_cast<std::size_t>(bi)];
                partial[static_cast<std::size_t>(bi)] = kernels::tv_block_value<T, K>(base + b.plane * H * W, H, W, b.r0, b.r1, ceps);
            }, s.n * s.c * H * W);
        };
        if (kind == TVKind::Isotropic) run(std::integral_constant<TVKind, TVKind::Isotropic>{});
        else run(std::integral_constant<TVKind, TVKind::Anisotropic>{});
    });
    for (std::size_t i = 0; i < plan.size(); ++i) per_image[static_cast<std::size_t>(plan[i].plane / s.c)] += partial[i];
    return per_image;
}

// g = scale[n] * d TV(x_n) / dx for every image n, one pass over x writing g.
inline void tv_grad(TVKind kind, const void* x, void* g, DType dtype, const ImageShape& s, double eps,
                    const std::vector<double>& scale) {
    const auto plan = plan_rows(s);
    if (plan.empty()) return;
    dispatch(dtype, [&](auto tag) {
        using T = typename decltype(tag)::type;
        using C = compute_t<T>;
        const T* xb = static_cast<const T*>(x);
        T* gb = static_cast<T*>(g);
        const std::int64_t H = s.h, W = s.w;
        // Per block, three rows of directions (ax, by of this row, by of the row above),
        // allocated here, before the parallel loop, so nothing allocates (or throws) inside it.
        // Each difference's direction is computed once and used by both of its pixels.
        const C ceps = static_cast<C>(eps);
        std::vector<C> buf(plan.size() * 3 * static_cast<std::size_t>(W));
        auto run = [&](auto KC) {
            constexpr TVKind K = decltype(KC)::value;
            parallel_for(static_cast<std::int64_t>(plan.size()), [&](std::int64_t bi) {
                const RowBlock& b = plan[static_cast<std::size_t>(bi)];
                const C sc = static_cast<C>(scale[static_cast<std::size_t>(b.plane / s.c)]);
                C* scratch = buf.data() + static_cast<std::size_t>(bi) * 3 * static_cast<std::size_t>(W);
                kernels::tv_block_grad<T, K>(xb + b.plane * H * W, gb + b.plane * H * W, H, W, b.r0, b.r1, ceps, sc, scratch);
            }, s.n * s.c * H * W);
        };
        if (kind == TVKind::Isotropic) run(std::integral_constant<TVKind, TVKind::Isotropic>{});
        else run(std::integral_constant<TVKind, TVKind::Anisotropic>{});
    });
}

}  // namespace normreg::engine
