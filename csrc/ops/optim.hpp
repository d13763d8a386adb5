// Fused optimizer-step drivers (ops/sgd.cpp, ops/adam.cpp): one applier pass over all chunks of all
// tensors of a param group does the moment updates, the parameter update and the
// elementwise prox, and counts the zeros it writes (per-chunk counts combined in chunk
// order). The lists are already paired and checked by the bindings.
#pragma once
#include <cstdint>
#include <vector>

#include "engine/multi_tensor.hpp"
#include "kernels/optim.hpp"  // SgdHyper, AdamHyper

namespace normreg::ops {

using engine::TensorList;

// SGD (momentum, dampening, nesterov, weight decay, maximize) + the fused penalty (prox or
// gradient). `buf` is empty when momentum == 0; init[i] marks tensors whose momentum buffer
// is new (and zero-filled).
std::vector<std::int64_t> sgd_step(const TensorList& w, const TensorList& g, const TensorList& buf, const std::vector<char>& init,
                                   const kernels::SgdHyper& h, bool nesterov, int prox_kind, double pa, double pb);

// Adam / AdamW (+ amsgrad) + the fused penalty (prox or gradient); step_size and bc2_sqrt per
// tensor (each param has its own step count, as in torch.optim). `vmax` is empty unless amsgrad.
std::vector<std::int64_t> adam_step(const TensorList& w, const TensorList& g, const TensorList& m, const TensorList& v,
                                    const TensorList& vmax, const std::vector<double>& step_size, const std::vector<double>& bc2_sqrt,
                                    const kernels::AdamHyper& h, bool amsgrad, int prox_kind, double pa, double pb,
                                    bool preconditioned);

}  // namespace normreg::ops
