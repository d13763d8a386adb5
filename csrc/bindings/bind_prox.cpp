// Proximal-operator bindings: check arguments with the GIL held, release it around the
// engine call. Every op returns the number of exact zeros per tensor after the step.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <string>

#include "bindings/bind.hpp"
#include "bindings/tensor_list.hpp"
#include "ops/prox.hpp"

namespace normreg {

namespace {

using Doubles = std::vector<double>;

// A per-tensor list of length 1 (broadcast) or n whose values are finite and > 0.
Doubles expand_positive(const char* op, const char* arg, const Doubles& s, std::size_t n) {
    auto out = expand_strength(op, arg, s, n);
    for (double v : out)
        if (!(v > 0.0)) throw py::value_error(std::string(op) + ": '" + arg + "' must be > 0, got " + std::to_string(v));
    return out;
}

// A per-tensor list of length 1 or n; values may be infinite but not NaN.
Doubles expand_bound(const char* op, const char* arg, const Doubles& s, std::size_t n) {
    if (s.size() != 1 && s.size() != n)
        throw py::value_error(std::string(op) + ": '" + arg + "' must have 1 or " + std::to_string(n) + " values, got " +
                              std::to_string(s.size()));
    for (double v : s)
        if (v != v) throw py::value_error(std::string(op) + ": '" + arg + "' must not be NaN");
    return s.size() == n ? s : Doubles(n, s[0]);
}

}  // namespace

void bind_prox(py::module_& m) {
    m.def(
        "prox_elementwise",
        [](int op, const Ptrs& ptrs, const Numels& numels, const DTypes& dtypes, const Ptrs& wptrs, const Doubles& a,
           const Doubles& b) {
            const char* name = "prox_elementwise";
            if (op < 0 || op > 3) throw py::value_error("prox_elementwise: 'op' must be 0 (shrink), 1 (nonneg), 2 (hard) or 3 (clamp)");
            const auto kind = static_cast<ops::ElemOp>(op);
            auto w = make_list(name, "params", ptrs, numels, dtypes);
            engine::TensorList u;
            const bool weighted = !wptrs.empty();
            if (weighted) {
                if (kind != ops::ElemOp::Shrink && kind != ops::ElemOp::ShrinkNonNeg)
                    throw py::value_error("prox_elementwise: 'weights' only apply to the soft threshold");
                u = make_paired(name, "weights", w, wptrs, numels, dtypes);
            }
            Doubles av, bv;
            if (kind == ops::ElemOp::Clamp) {
                av = expand_bound(name, "lo", a, w.size());
                bv = expand_bound(name, "hi", b, w.size());
                for (std::size_t i = 0; i < w.size(); ++i)
                    if (av[i] > bv[i]) throw py::value_error("prox_elementwise: 'lo' must be <= 'hi'");
            } else {
                av = expand_strength(name, "threshold", a, w.size());
                bv = expand_strength(name, "scale", b, w.size());
            }
            py::gil_scoped_release nogil;
            return ops::prox_elementwise(kind, w, weighted ? &u : nullptr, av, bv);
        },
        py::arg("op"), py::arg("ptrs"), py::arg("numels"), py::arg("dtypes"), py::arg("weight_ptrs"), py::arg("a"), py::arg("b"),
        "In-place elementwise prox (shrink, nonneg shrink, hard threshold, clamp); returns zeros per tensor.");

    m.def(
        "prox_l2_norm",
        [](const Ptrs& ptrs, const Numels& numels, const DTypes& dtypes, const Doubles& t, const Doubles& s, const Doubles& d) {
            const char* name = "prox_l2_norm";
            auto w = make_list(name, "params", ptrs, numels, dtypes);
            auto tv = expand_strength(name, "threshold", t, w.size());
            auto sv = expand_strength(name, "strength", s, w.size());
            auto dv = expand_strength(name, "scale", d, w.size());
            py::gil_scoped_release nogil;
            return ops::prox_l2_norm(w, tv, sv, dv);
        },
        py::arg("ptrs"), py::arg("numels"), py::arg("dtypes"), py::arg("t"), py::arg("s"), py::arg("d"),
        "w <- d * max(1 - s/||soft(w,t)||, 0) * soft(w, t) per tensor; returns zeros per tensor.");

    m.def(
        "prox_group",
        [](const Ptrs& ptrs, const Numels& numels, const DTypes& dtypes, const std::vector<std::int64_t>& outer,
           const std::vector<std::int64_t>& groups, const std::vector<std::int64_t>& inner, const Doubles& t, const Doubles& s,
           const Doubles& d) {
            const char* name = "prox_group";
            auto w = make_list(name, "params", ptrs, numels, dtypes);
            auto shapes = group_shapes(name, w, outer, groups, inner);
            auto tv = expand_strength(name, "threshold", t, w.size());
            auto sv = expand_strength(name, "strength", s, w.size());
            auto dv = expand_strength(name, "scale", d, w.size());
            py::gil_scoped_release nogil;
            return ops::prox_group(w, shapes, tv, sv, dv);
        },
        py::arg("ptrs"), py::arg("numels"), py::arg("dtypes"), py::arg("outer"), py::arg("groups"), py::arg("inner"), py::arg("t"),
        py::arg("s"), py::arg("d"), "Group prox over slices along a dim (sparse group lasso form); returns zeros per tensor.");

    m.def(
        "project_l2_ball",
        [](const Ptrs& ptrs, const Numels& numels, const DTypes& dtypes, const Doubles& r) {
            const char* name = "project_l2_ball";
            auto w = make_list(name, "params", ptrs, numels, dtypes);
            auto rv = expand_positive(name, "radius", r, w.size());
            py::gil_scoped_release nogil;
            return ops::project_l2_ball(w, rv);
        },
        py::arg("ptrs"), py::arg("numels"), py::arg("dtypes"), py::arg("radius"));

    m.def(
        "project_l1_ball",
        [](const Ptrs& ptrs, const Numels& numels, const DTypes& dtypes, const Doubles& r) {
            const char* name = "project_l1_ball";
            auto w = make_list(name, "params", ptrs, numels, dtypes);
            auto rv = expand_positive(name, "radius", r, w.size());
            py::gil_scoped_release nogil;
            return ops::project_l1_ball(w, rv);
        },
        py::arg("ptrs"), py::arg("numels"), py::arg("dtypes"), py::arg("radius"),
        "Exact projection onto the L1 ball per tensor (Condat's algorithm on the filtered candidates).");

    m.def(
        "l1_ball_thresholds",
        [](const Ptrs& ptrs, const Numels& numels, const DTypes& dtypes, const Doubles& r) {
            const char* name = "l1_ball_thresholds";
            auto w = make_list(name, "params", ptrs, numels, dtypes);
            auto rv = expand_strength(name, "radius", r, w.size());
            py::gil_scoped_release nogil;
            return ops::l1_ball_thresholds(w, rv);
        },
        py::arg("ptrs"), py::arg("numels"), py::arg("dtypes"), py::arg("radius"),
        "Per-tensor soft threshold of the L1-ball projection (read only).");

    m.def(
        "prox_linf",
        [](const Ptrs& ptrs, const Numels& numels, const DTypes& dtypes, const Doubles& s) {
            const char* name = "prox_linf";
            auto w = make_list(name, "params", ptrs, numels, dtypes);
            auto sv = expand_strength(name, "strength", s, w.size());
            py::gil_scoped_release nogil;
            return ops::prox_linf(w, sv);
        },
        py::arg("ptrs"), py::arg("numels"), py::arg("dtypes"), py::arg("s"),
        "Prox of s * max|w| per tensor via the L1-ball projection (Moreau); returns zeros per tensor.");
}

}  // namespace normreg
