// Passes the sharded penalties need (python/normreg/distributed.py; ops/dist.cpp): the
// caller combines per-tensor / per-group partial sums across ranks, then applies
// coefficients it computed from the global norms. The reductions themselves are the ones
// of ops/penalty.hpp (max_abs_per_tensor, group_sq_norms), and so is the coefficient pass
// (group_apply_coef).
#pragma once
#include <cstdint>
#include <vector>

#include "engine/multi_tensor.hpp"

namespace normreg::ops {

using engine::GroupShape;
using engine::TensorList;

// w <- c[t] * w for every tensor t, in place, chunk-parallel; zeros per tensor afterwards.
std::vector<std::int64_t> scale_per_tensor(const TensorList& w, const std::vector<double>& c);

// w[o, k, :] <- coef[t][k] * w[o, k, :] on every group k of every tensor t, in place; zeros
// per tensor afterwards (integer sums: the same for any thread count).
std::vector<std::int64_t> group_scale_inplace(const TensorList& w, const std::vector<GroupShape>& shapes,
                                              const std::vector<std::vector<double>>& coef);

}  // namespace normreg::ops
