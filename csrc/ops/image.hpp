// Image-space loss drivers (ops/image.cpp): pointwise reconstruction losses over one tensor
// (through the multi-tensor applier, a list of one) and total variation over NCHW batches
// (cut into blocks of rows of one plane). One parallel loop per op; reductions keep one
// partial per chunk or block and combine them in plan order, so values are identical for
// any thread count.
#pragma once
#include <cstdint>
#include <vector>

#include "engine/multi_tensor.hpp"
#include "kernels/image.hpp"  // LossSums, PointLoss, TVKind

namespace normreg::ops {

using engine::DType;
using kernels::PointLoss;
using kernels::TVKind;

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

// Sum of [m] [w] loss(pred - target) and sum of m; with `out` (reduction "none") the
// elementwise loss is written there instead and only the sum of m is returned; and the gradient for an incoming gradient of 1,
// grad_factor(dir_scale) * [m] [w] dloss, to `dir` (in the compute type: float for
// float32/bf16/f16, double for float64) when dir is not null.
kernels::LossSums pointwise_loss_value(PointLoss kind, const PointwiseArgs& a, void* out, void* dir, double dir_scale);

// grad_pred = (grad_factor(dir_scale) * dloss * [m] [w]) * scale * [grad_out], as the forward's
// dir followed by pointwise_loss_grad_scale; grad_target = -grad_pred when not null.
void pointwise_loss_grad(PointLoss kind, const PointwiseArgs& a, const void* grad_out, void* grad_pred, void* grad_target,
                         double dir_scale, double scale);

// grad_pred = (dir * scale) * [grad_out] and grad_target = minus that, each when not null, from
// the gradient pointwise_loss_value wrote to dir (compute type). grad_pred may be dir itself
// when the dtype is float32 or float64 (in place).
void pointwise_loss_grad_scale(const void* dir, const void* grad_out, void* grad_pred, void* grad_target, std::int64_t numel,
                               DType dtype, double scale);

struct ImageShape {
    std::int64_t n, c, h, w;
};

// Total variation of each image (sum over its channels), in image order; deterministic.
std::vector<double> tv_value(TVKind kind, const void* x, DType dtype, const ImageShape& s, double eps);

// g = scale[n] * d TV(x_n) / dx for every image n, one pass over x writing g.
void tv_grad(TVKind kind, const void* x, void* g, DType dtype, const ImageShape& s, double eps, const std::vector<double>& scale);

}  // namespace normreg::ops
