// Penalty op drivers (ops/penalty.cpp): the passes each penalty needs over a whole
// TensorList, each a functor handed to the multi-tensor applier. Strength vectors are per
// tensor (already expanded by the bindings) and checked there.
#pragma once
#include <cstdint>
#include <vector>

#include "engine/multi_tensor.hpp"
#include "kernels/penalty.hpp"  // AbsSq, MaxAbs: the per-tensor results

namespace normreg::ops {

using engine::DType;
using engine::GroupShape;
using engine::TensorList;
using engine::TensorRef;

enum class Penalty : int { L1 = 0, SquaredL2 = 1, ElasticNet = 2, L2Norm = 3, Linf = 4, L0 = 5 };

const char* penalty_name(Penalty p) noexcept;

// Per-tensor plain sums of |w| and w^2 (deterministic; a sum of squares past the double
// range is inf).
std::vector<kernels::AbsSq> abs_sq_sums(const TensorList& w);

// Per-tensor max |w| with its first arg max and whether a NaN was seen.
std::vector<kernels::MaxAbs> max_abs_per_tensor(const TensorList& w);

// Number of infinite elements of tensor i (a rare path: serial).
std::int64_t count_inf_per_tensor(const TensorList& w, std::size_t i);

// Value of the penalty: sum over tensors, in list order, of the per-tensor value.
double penalty_value(Penalty kind, const TensorList& w, const std::vector<double>& s1, const std::vector<double>& s2);

// Gradient of the penalty, scaled by `scale`, written into (or added to) g. Returns the value.
double penalty_grad(Penalty kind, const TensorList& w, const TensorList& g, const std::vector<double>& s1,
                    const std::vector<double>& s2, double scale, bool accumulate);

// Group lasso: groups are slices along one dim, i.e. [o, g, :] of (outer, G, inner).
// Plain per-tensor, per-group sums of squares (a sum past the double range is inf).
std::vector<std::vector<double>> group_sq_norms(const TensorList& w, const std::vector<GroupShape>& shapes);
double group_value(const TensorList& w, const std::vector<GroupShape>& shapes, const std::vector<double>& s1);
double group_grad(const TensorList& w, const TensorList& g, const std::vector<GroupShape>& shapes, const std::vector<double>& s1,
                  double scale, bool accumulate);

// g = (accumulate ? g : 0) + coef[t][k] * w on group k of tensor t, groups as in group_grad.
void group_apply_coef(const TensorList& w, const TensorList& g, const std::vector<GroupShape>& shapes,
                      const std::vector<std::vector<double>>& coef, bool accumulate);

}  // namespace normreg::ops
