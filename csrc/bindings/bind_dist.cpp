// Partial reductions and coefficient passes for sharded penalties (normreg.distributed):
// per-tensor max |w|, per-group sums of squares, the group gradient pass with given
// coefficients, and the in-place scalings of the sharded proximal steps.
// Checks with the GIL held, release it around the engine call.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <limits>
#include <string>

#include "bindings/bind.hpp"
#include "bindings/tensor_list.hpp"
#include "ops/dist.hpp"
#include "ops/penalty.hpp"

namespace normreg {

namespace {

void check_coef(const char* op, const std::vector<engine::GroupShape>& shapes, const std::vector<std::vector<double>>& coef) {
    if (coef.size() != shapes.size())
        throw py::value_error(std::string(op) + ": 'coef' must have one list per tensor, got " + std::to_string(coef.size()) +
                              " for " + std::to_string(shapes.size()));
    for (std::size_t i = 0; i < shapes.size(); ++i)
        if (static_cast<std::int64_t>(coef[i].size()) != shapes[i].groups)
            throw py::value_error(std::string(op) + ": 'coef'[" + std::to_string(i) + "] must have one value per group (" +
                                  std::to_string(shapes[i].groups) + "), got " + std::to_string(coef[i].size()));
}

}  // namespace

void bind_dist(py::module_& m) {
    m.def(
        "max_abs_per_tensor",
        [](const Ptrs& ptrs, const Numels& numels, const DTypes& dtypes) {
            auto w = make_list("max_abs_per_tensor", "params", ptrs, numels, dtypes);
            std::vector<kernels::MaxAbs> r;
            {
                py::gil_scoped_release nogil;
                r = ops::max_abs_per_tensor(w);
            }
            std::vector<double> out(r.size());
            for (std::size_t i = 0; i < r.size(); ++i) out[i] = r[i].nan ? std::numeric_limits<double>::quiet_NaN() : r[i].max;
            return out;
        },
        py::arg("ptrs"), py::arg("numels"), py::arg("dtypes"),
        "Per-tensor max |w| (NaN if the tensor holds a NaN, -1 if it is empty).");

    m.def(
        "group_sq_sums",
        [](const Ptrs& ptrs, const Numels& numels, const DTypes& dtypes, const std::vector<std::int64_t>& outer,
           const std::vector<std::int64_t>& groups, const std::vector<std::int64_t>& inner) {
            const char* op = "group_sq_sums";
            auto w = make_list(op, "params", ptrs, numels, dtypes);
            auto shapes = group_shapes(op, w, outer, groups, inner);
            py::gil_scoped_release nogil;
            return ops::group_sq_norms(w, shapes);
        },
        py::arg("ptrs"), py::arg("numels"), py::arg("dtypes"), py::arg("outer"), py::arg("groups"), py::arg("inner"),
        "Per-tensor, per-group sums of squares (float64, deterministic).");

    m.def(
        "group_apply_coef",
        [](const Ptrs& ptrs, const Numels& numels, const DTypes& dtypes, const Ptrs& gptrs, const std::vector<std::int64_t>& outer,
           const std::vector<std::int64_t>& groups, const std::vector<std::int64_t>& inner,
           const std::vector<std::vector<double>>& coef, bool accumulate) {
            const char* op = "group_apply_coef";
            auto w = make_list(op, "params", ptrs, numels, dtypes);
            auto g = make_paired(op, "grads", w, gptrs, numels, dtypes);
            auto shapes = group_shapes(op, w, outer, groups, inner);
            check_coef(op, shapes, coef);
            py::gil_scoped_release nogil;
            ops::group_apply_coef(w, g, shapes, coef, accumulate);
        },
        py::arg("ptrs"), py::arg("numels"), py::arg("dtypes"), py::arg("grad_ptrs"), py::arg("outer"), py::arg("groups"),
        py::arg("inner"), py::arg("coef"), py::arg("accumulate"),
        "grads (+)= coef[t][k] * w on group k of tensor t (coefficients computed by the caller).");

    m.def(
        "scale_per_tensor",
        [](const Ptrs& ptrs, const Numels& numels, const DTypes& dtypes, const std::vector<double>& c) {
            const char* op = "scale_per_tensor";
            auto w = make_list(op, "params", ptrs, numels, dtypes);
            if (c.size() != w.size())
                throw py::value_error(std::string(op) + ": 'c' must have one value per tensor, got " + std::to_string(c.size()) +
                                      " for " + std::to_string(w.size()));
            py::gil_scoped_release nogil;
            return ops::scale_per_tensor(w, c);
        },
        py::arg("ptrs"), py::arg("numels"), py::arg("dtypes"), py::arg("c"),
        "w <- c[t] * w in place for every tensor t; returns the zeros per tensor.");

    m.def(
        "group_scale_inplace",
        [](const Ptrs& ptrs, const Numels& numels, const DTypes& dtypes, const std::vector<std::int64_t>& outer,
           const std::vector<std::int64_t>& groups, const std::vector<std::int64_t>& inner,
           const std::vector<std::vector<double>>& coef) {
            const char* op = "group_scale_inplace";
            auto w = make_list(op, "params", ptrs, numels, dtypes);
            auto shapes = group_shapes(op, w, outer, groups, inner);
            check_coef(op, shapes, coef);
            py::gil_scoped_release nogil;
            return ops::group_scale_inplace(w, shapes, coef);
        },
        py::arg("ptrs"), py::arg("numels"), py::arg("dtypes"), py::arg("outer"), py::arg("groups"), py::arg("inner"),
        py::arg("coef"), "w <- coef[t][k] * w on group k of tensor t, in place; returns the zeros per tensor.");
}

}  // namespace normreg
