// Proximal operators and projections over a whole TensorList (ops/prox.cpp), run by the
// multi-tensor applier. Every op works in place and returns the number of exact zeros per
// tensor, counted in the pass that writes (per-chunk counts combined in chunk order).
// Per-tensor parameters are already expanded and checked by the bindings.
#pragma once
#include <cstdint>
#include <vector>

#include "engine/multi_tensor.hpp"

namespace normreg::ops {

using engine::GroupShape;
using engine::TensorList;

enum class ElemOp : int { Shrink = 0, ShrinkNonNeg = 1, Hard = 2, Clamp = 3 };

using Counts = std::vector<std::int64_t>;

// Elementwise prox with per-tensor parameters (a, b):
//   Shrink / ShrinkNonNeg: w <- b * soft(w, a * u)   (u: optional per-element weights)
//   Hard:                  w <- |w| <= a ? 0 : w
//   Clamp:                 w <- clamp(w, a, b)
Counts prox_elementwise(ElemOp op, const TensorList& w, const TensorList* u, const std::vector<double>& a,
                        const std::vector<double>& b);

// Prox of  l1*|w|_1 + (l2/2)|w|^2 + lg*||w||_2  per tensor, t = step*l1, s = step*lg,
// d = 1/(1 + step*l2):  w <- d * max(1 - s/||soft(w,t)||, 0) * soft(w, t).
Counts prox_l2_norm(const TensorList& w, const std::vector<double>& t, const std::vector<double>& s, const std::vector<double>& d);

// Projection onto the L2 ball of radius r per tensor.
Counts project_l2_ball(const TensorList& w, const std::vector<double>& r);

// Per-tensor threshold theta of the projection onto the L1 ball of radius r (exact); ninf
// (if given) receives the number of infinite elements of tensors whose theta is +inf for them.
std::vector<double> l1_ball_thresholds(const TensorList& w, const std::vector<double>& r, std::vector<std::int64_t>* ninf = nullptr);

// Exact projection onto the L1 ball per tensor.
Counts project_l1_ball(const TensorList& w, const std::vector<double>& r);

// Prox of s * max|w| per tensor (Moreau): clamp(w, -theta, theta).
Counts prox_linf(const TensorList& w, const std::vector<double>& s);

// Group prox over slices along a dim ((outer, groups, inner) view), the terms of prox_l2_norm per group.
Counts prox_group(const TensorList& w, const std::vector<GroupShape>& shapes, const std::vector<double>& t,
                  const std::vector<double>& s, const std::vector<double>& d);

}  // namespace normreg::ops
