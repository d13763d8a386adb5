// Image-space loss drivers: the pointwise kernels as applier functors over a list of one
// tensor, total variation over row blocks. Compiled once, with the extension's flags.
#include "ops/image.hpp"

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <utility>
#include <vector>

namespace normreg::ops {

using core::compute_t;
using engine::dispatch;
using engine::kChunk;
using engine::Lists;
using engine::TensorList;
using engine::TensorRef;

namespace {

// Calls f(std::true_type{}) or f(std::false_type{}): turns a run-time flag into a template one.
template <class F>
decltype(auto) with_flag(bool b, F&& f) {
    if (b) return f(std::true_type{});
    return f(std::false_type{});
}

template <class F>
decltype(auto) with_point_loss(PointLoss k, F&& f) {
    if (k == PointLoss::MSE) return f(std::integral_constant<PointLoss, PointLoss::MSE>{});
    return f(std::integral_constant<PointLoss, PointLoss::L1>{});
}

}  // namespace

// Sum of [m] [w] loss(pred - target) and sum of m; with `out` (reduction "none") the
// elementwise loss is written there instead and only the sum of m is returned; and the gradient for an incoming gradient of 1,
// grad_factor(dir_scale) * [m] [w] dloss, to `dir` (in the compute type: float for
// float32/bf16/f16, double for float64) when dir is not null.
// The applier dispatches on the dtype; the functor picks the kernel's flags per chunk (a few
// branches per 64K elements).
kernels::LossSums pointwise_loss_value(PointLoss kind, const PointwiseArgs& a, void* out, void* dir, double dir_scale) {
    if (a.numel <= 0) return kernels::LossSums{};
    const TensorList one{TensorRef{const_cast<void*>(a.pred), a.numel, a.dtype}};
    auto r = engine::multi_tensor_reduce<kernels::LossSums, 1>(
        Lists<1>{&one}, kernels::LossSums{},
        [&](auto c) noexcept {
            using T = typename decltype(c)::type;
            using C = compute_t<T>;
            const std::int64_t b = c.begin;
            const T* p = static_cast<const T*>(a.pred) + b;
            const T* t = static_cast<const T*>(a.target) + b;
            const T* m = a.mask ? static_cast<const T*>(a.mask) + b : nullptr;
            const T* w = a.weight ? static_cast<const T*>(a.weight) + b : nullptr;
            T* o = out ? static_cast<T*>(out) + b : nullptr;
            C* u = dir ? static_cast<C*>(dir) + b : nullptr;
            return with_point_loss(kind, [&](auto K) {
                return with_flag(m != nullptr, [&](auto M) {
                    return with_flag(w != nullptr, [&](auto W) {
                        return with_flag(u != nullptr, [&](auto D) {
                            constexpr auto k = decltype(K)::value;
                            constexpr bool mm = decltype(M)::value, ww = decltype(W)::value, dd = decltype(D)::value;
                            if (o != nullptr)  // "none": the elementwise loss, and the mask's sum
                                return kernels::LossSums{0.0, kernels::pointwise_none<T, k, mm, ww, dd>(p, t, m, w, o, u, c.n, dir_scale)};
                            return kernels::pointwise_value<T, k, mm, ww, dd>(p, t, m, w, u, c.n, dir_scale);
                        });
                    });
                });
            });
        },
        [](kernels::LossSums x, kernels::LossSums y) { return x + y; });
    return r[0];
}

// The gradient recomputed from pred and target (a retained graph's second backward): per
// block of kGradBlock elements, pointwise_value writes the forward's gradient u into a buffer
// on the stack (in L1), and pointwise_grad_scale turns it into grad_pred / grad_target. The
// operations and their order are those of the forward's dir followed by the backward's
// scaling, so the two ways to a gradient are bitwise equal by construction, and no kernel of
// its own (128 more instantiations) is compiled for this rare path.
void pointwise_loss_grad(PointLoss kind, const PointwiseArgs& a, const void* grad_out, void* grad_pred, void* grad_target,
                         double dir_scale, double scale) {
    if (a.numel <= 0) return;
    constexpr std::int64_t kGradBlock = 2048;
    const TensorList one{TensorRef{const_cast<void*>(a.pred), a.numel, a.dtype}};
    engine::multi_tensor_apply<1>(Lists<1>{&one}, [&](auto c) noexcept {
        using T = typename decltype(c)::type;
        using C = compute_t<T>;
        alignas(64) C u[kGradBlock];
        for (std::int64_t i = 0; i < c.n; i += kGradBlock) {
            const std::int64_t b = c.begin + i, n = std::min(kGradBlock, c.n - i);
            const T* p = static_cast<const T*>(a.pred) + b;
            const T* t = static_cast<const T*>(a.target) + b;
            const T* m = a.mask ? static_cast<const T*>(a.mask) + b : nullptr;
            const T* w = a.weight ? static_cast<const T*>(a.weight) + b : nullptr;
            const T* go = grad_out ? static_cast<const T*>(grad_out) + b : nullptr;
            T* gp = static_cast<T*>(grad_pred) + b;
            T* gt = grad_target ? static_cast<T*>(grad_target) + b : nullptr;
            with_point_loss(kind, [&](auto K) {
                with_flag(m != nullptr, [&](auto M) {
                    with_flag(w != nullptr, [&](auto W) {
                        kernels::pointwise_value<T, decltype(K)::value, decltype(M)::value, decltype(W)::value, true>(p, t, m, w, u, n,
                                                                                                                  dir_scale);
                    });
                });
            });
            with_flag(go != nullptr, [&](auto G) {
                with_flag(gt != nullptr, [&](auto GT) {
                    kernels::pointwise_grad_scale<T, decltype(G)::value, true, decltype(GT)::value>(u, go, gp, gt, n, scale);
                });
            });
        }
    });
}

void pointwise_loss_grad_scale(const void* dir, const void* grad_out, void* grad_pred, void* grad_target, std::int64_t numel,
                               DType dtype, double scale) {
    if (numel <= 0) return;
    const TensorList one{TensorRef{const_cast<void*>(dir), numel, dtype}};
    engine::multi_tensor_apply<1>(Lists<1>{&one}, [&](auto c) noexcept {
        using T = typename decltype(c)::type;
        using C = compute_t<T>;
        const std::int64_t b = c.begin;
        const C* u = static_cast<const C*>(dir) + b;
        const T* go = grad_out ? static_cast<const T*>(grad_out) + b : nullptr;
        T* gp = grad_pred ? static_cast<T*>(grad_pred) + b : nullptr;
        T* gt = grad_target ? static_cast<T*>(grad_target) + b : nullptr;
        with_flag(go != nullptr, [&](auto G) {
            with_flag(gp != nullptr, [&](auto GP) {
                with_flag(gt != nullptr, [&](auto GT) {
                    kernels::pointwise_grad_scale<T, decltype(G)::value, decltype(GP)::value, decltype(GT)::value>(u, go, gp, gt, c.n, scale);
                });
            });
        });
    });
}

// ---- total variation over an NCHW batch -------------------------------------------------

namespace {

// Rows [r0, r1) of plane `plane` (= n * C + c). Blocks never cross planes.
struct RowBlock {
    std::int64_t plane;
    std::int64_t r0;
    std::int64_t r1;
};

std::vector<RowBlock> plan_rows(const ImageShape& s, std::int64_t chunk = kChunk) {
    std::vector<RowBlock> plan;
    if (s.h <= 0 || s.w <= 0) return plan;
    const std::int64_t rows = std::max<std::int64_t>(1, chunk / s.w);
    const std::int64_t planes = s.n * s.c;
    plan.reserve(static_cast<std::size_t>(planes * ((s.h + rows - 1) / rows)));
    for (std::int64_t q = 0; q < planes; ++q)
        for (std::int64_t r = 0; r < s.h; r += rows) plan.push_back(RowBlock{q, r, std::min(r + rows, s.h)});
    return plan;
}

}  // namespace

std::vector<double> tv_value(TVKind kind, const void* x, DType dtype, const ImageShape& s, double eps) {
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
            engine::parallel_for(static_cast<std::int64_t>(plan.size()), [&](std::int64_t bi) {
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

void tv_grad(TVKind kind, const void* x, void* g, DType dtype, const ImageShape& s, double eps, const std::vector<double>& scale) {
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
            engine::parallel_for(static_cast<std::int64_t>(plan.size()), [&](std::int64_t bi) {
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

}  // namespace normreg::ops
