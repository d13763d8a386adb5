// Penalty bindings: check arguments with the GIL held, release it around the engine call.
// A grads list is passed as pointers only: it shares the params' numels and dtypes, which
// the Python bridge (_bridge.paired) has checked shape by shape.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>

#include "bindings/bind.hpp"
#include "bindings/tensor_list.hpp"
#include "ops/penalty.hpp"

namespace normreg {

namespace {

ops::Penalty parse_kind(const char* op, const std::string& kind) {
    if (kind == "l1") return ops::Penalty::L1;
    if (kind == "squared_l2") return ops::Penalty::SquaredL2;
    if (kind == "elastic_net") return ops::Penalty::ElasticNet;
    if (kind == "l2_norm") return ops::Penalty::L2Norm;
    if (kind == "linf") return ops::Penalty::Linf;
    if (kind == "l0") return ops::Penalty::L0;
    throw py::value_error(std::string(op) + ": unknown penalty kind '" + kind +
                          "'; use l1, squared_l2, elastic_net, l2_norm, linf or l0");
}

}  // namespace

void bind_penalty(py::module_& m) {
    m.def(
        "penalty_value",
        [](const std::string& kind, const Ptrs& ptrs, const Numels& numels, const DTypes& dtypes, const std::vector<double>& s1,
           const std::vector<double>& s2) {
            const char* op = "penalty_value";
            const auto k = parse_kind(op, kind);
            auto w = make_list(op, "params", ptrs, numels, dtypes);
            auto a = expand_strength(op, "strength", s1, w.size());
            auto b = expand_strength(op, "l2", s2, w.size());
            py::gil_scoped_release nogil;
            return ops::penalty_value(k, w, a, b);
        },
        py::arg("kind"), py::arg("ptrs"), py::arg("numels"), py::arg("dtypes"), py::arg("s1"), py::arg("s2"),
        "Value of a penalty over a tensor list (float64 accumulation, deterministic).");

    m.def(
        "penalty_grad",
        [](const std::string& kind, const Ptrs& ptrs, const Numels& numels, const DTypes& dtypes, const Ptrs& gptrs,
           const std::vector<double>& s1, const std::vector<double>& s2, double scale, bool accumulate) {
            const char* op = "penalty_grad";
            const auto k = parse_kind(op, kind);
            if (k == ops::Penalty::L0)
                throw py::value_error("penalty_grad: L0 has no gradient; use its proximal step (prox_) instead");
            require_finite(op, "scale", scale);
            auto w = make_list(op, "params", ptrs, numels, dtypes);
            auto g = make_paired(op, "grads", w, gptrs, numels, dtypes);
            auto a = expand_strength(op, "strength", s1, w.size());
            auto b = expand_strength(op, "l2", s2, w.size());
            py::gil_scoped_release nogil;
            return ops::penalty_grad(k, w, g, a, b, scale, accumulate);
        },
        py::arg("kind"), py::arg("ptrs"), py::arg("numels"), py::arg("dtypes"), py::arg("grad_ptrs"), py::arg("s1"),
        py::arg("s2"), py::arg("scale"), py::arg("accumulate"),
        "grads (+)= scale * gradient of the penalty; returns the penalty value (one pass).");

    m.def(
        "group_value",
        [](const Ptrs& ptrs, const Numels& numels, const DTypes& dtypes, const std::vector<std::int64_t>& outer,
           const std::vector<std::int64_t>& groups, const std::vector<std::int64_t>& inner, const std::vector<double>& s1) {
            const char* op = "group_value";
            auto w = make_list(op, "params", ptrs, numels, dtypes);
            auto shapes = group_shapes(op, w, outer, groups, inner);
            auto a = expand_strength(op, "strength", s1, w.size());
            py::gil_scoped_release nogil;
            return ops::group_value(w, shapes, a);
        },
        py::arg("ptrs"), py::arg("numels"), py::arg("dtypes"), py::arg("outer"), py::arg("groups"), py::arg("inner"), py::arg("s1"));

    m.def(
        "group_grad",
        [](const Ptrs& ptrs, const Numels& numels, const DTypes& dtypes, const Ptrs& gptrs, const std::vector<std::int64_t>& outer,
           const std::vector<std::int64_t>& groups, const std::vector<std::int64_t>& inner, const std::vector<double>& s1, double scale,
           bool accumulate) {
            const char* op = "group_grad";
            require_finite(op, "scale", scale);
            auto w = make_list(op, "params", ptrs, numels, dtypes);
            auto g = make_paired(op, "grads", w, gptrs, numels, dtypes);
            auto shapes = group_shapes(op, w, outer, groups, inner);
            auto a = expand_strength(op, "strength", s1, w.size());
            py::gil_scoped_release nogil;
            return ops::group_grad(w, g, shapes, a, scale, accumulate);
        },
        py::arg("ptrs"), py::arg("numels"), py::arg("dtypes"), py::arg("grad_ptrs"), py::arg("outer"), py::arg("groups"),
        py::arg("inner"), py::arg("s1"), py::arg("scale"), py::arg("accumulate"));

    m.def(
        "abs_sq_sums",
        [](const Ptrs& ptrs, const Numels& numels, const DTypes& dtypes) {
            auto w = make_list("abs_sq_sums", "params", ptrs, numels, dtypes);
            std::vector<kernels::AbsSq> s;
            {
                py::gil_scoped_release nogil;
                s = ops::abs_sq_sums(w);
            }
            std::vector<double> a(s.size()), q(s.size());
            for (std::size_t i = 0; i < s.size(); ++i) { a[i] = s[i].abs; q[i] = s[i].sq; }
            return py::make_tuple(a, q);
        },
        py::arg("ptrs"), py::arg("numels"), py::arg("dtypes"), "Per-tensor sums of |w| and w^2 (float64, deterministic).");
}

}  // namespace normreg
