// Fused optimizer-step bindings: check the lists and hyperparameters with the GIL held,
// then release it around one engine pass per param group.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <string>

#include "bindings/bind.hpp"
#include "bindings/tensor_list.hpp"
#include "ops/optim.hpp"

namespace normreg {

namespace {

void check_prox(const char* op, int kind, double a, double b) {
    if (kind < 0 || kind > 3)
        throw py::value_error(std::string(op) + ": 'prox_kind' must be 0 (none), 1 (shrink), 2 (hard) or 3 (penalty gradient)");
    if (!(a >= 0.0) || !std::isfinite(a)) throw py::value_error(std::string(op) + ": 'prox_a' must be finite and >= 0");
    if (!(b >= 0.0) || !std::isfinite(b)) throw py::value_error(std::string(op) + ": 'prox_b' must be finite and >= 0");
}

}  // namespace

void bind_optim(py::module_& m) {
    m.def(
        "sgd_step",
        [](const Ptrs& ptrs, const Numels& numels, const DTypes& dtypes, const Ptrs& gptrs, const Ptrs& bptrs,
           const std::vector<bool>& init, double lr, double momentum, double dampening, double weight_decay, bool nesterov,
           bool maximize, int prox_kind, double pa, double pb) {
            const char* op = "sgd_step";
            for (auto [name, v] : {std::pair<const char*, double>{"lr", lr}, {"momentum", momentum}, {"dampening", dampening},
                                   {"weight_decay", weight_decay}})
                require_finite(op, name, v);
            check_prox(op, prox_kind, pa, pb);
            auto w = make_list(op, "params", ptrs, numels, dtypes);
            auto g = make_paired(op, "grads", w, gptrs, numels, dtypes);
            engine::TensorList buf;
            std::vector<char> ini(w.size(), 0);
            if (momentum != 0.0) {
                buf = make_paired(op, "momentum_buffers", w, bptrs, numels, dtypes);
                if (init.size() != w.size()) throw py::value_error("sgd_step: 'init' must have one flag per param");
                for (std::size_t i = 0; i < w.size(); ++i) ini[i] = init[i] ? 1 : 0;
            }
            const kernels::SgdHyper h{lr, momentum, dampening, weight_decay, maximize};
            py::gil_scoped_release nogil;
            return ops::sgd_step(w, g, buf, ini, h, nesterov, prox_kind, pa, pb);
        },
        py::arg("ptrs"), py::arg("numels"), py::arg("dtypes"), py::arg("grad_ptrs"), py::arg("buf_ptrs"), py::arg("init"),
        py::arg("lr"), py::arg("momentum"), py::arg("dampening"), py::arg("weight_decay"), py::arg("nesterov"),
        py::arg("maximize"), py::arg("prox_kind"), py::arg("prox_a"), py::arg("prox_b"),
        "Fused SGD step + elementwise prox over a param group; returns zeros per tensor.");

    m.def(
        "adam_step",
        [](const Ptrs& ptrs, const Numels& numels, const DTypes& dtypes, const Ptrs& gptrs, const Ptrs& mptrs, const Ptrs& vptrs,
           const Ptrs& vmax_ptrs, const std::vector<double>& step_size, const std::vector<double>& bc2_sqrt, double lr,
           double beta1, double beta2, double eps, double weight_decay, bool decoupled, bool maximize, bool amsgrad,
           int prox_kind, double pa, double pb, bool preconditioned) {
            const char* op = "adam_step";
            for (auto [name, v] : {std::pair<const char*, double>{"lr", lr}, {"beta1", beta1}, {"beta2", beta2}, {"eps", eps},
                                   {"weight_decay", weight_decay}})
                require_finite(op, name, v);
            check_prox(op, prox_kind, pa, pb);
            auto w = make_list(op, "params", ptrs, numels, dtypes);
            auto g = make_paired(op, "grads", w, gptrs, numels, dtypes);
            auto mm = make_paired(op, "exp_avgs", w, mptrs, numels, dtypes);
            auto vv = make_paired(op, "exp_avg_sqs", w, vptrs, numels, dtypes);
            engine::TensorList vmax;
            if (amsgrad) vmax = make_paired(op, "max_exp_avg_sqs", w, vmax_ptrs, numels, dtypes);
            if (step_size.size() != w.size() || bc2_sqrt.size() != w.size())
                throw py::value_error("adam_step: 'step_size' and 'bc2_sqrt' need one value per param");
            for (std::size_t i = 0; i < w.size(); ++i)
                if (!std::isfinite(step_size[i]) || !(bc2_sqrt[i] > 0.0))
                    throw py::value_error("adam_step: bias corrections must be finite and > 0");
            const kernels::AdamHyper h{lr, beta1, beta2, eps, weight_decay, decoupled, maximize};
            py::gil_scoped_release nogil;
            return ops::adam_step(w, g, mm, vv, vmax, step_size, bc2_sqrt, h, amsgrad, prox_kind, pa, pb, preconditioned);
        },
        py::arg("ptrs"), py::arg("numels"), py::arg("dtypes"), py::arg("grad_ptrs"), py::arg("exp_avg_ptrs"),
        py::arg("exp_avg_sq_ptrs"), py::arg("max_exp_avg_sq_ptrs"), py::arg("step_size"), py::arg("bc2_sqrt"), py::arg("lr"),
        py::arg("beta1"), py::arg("beta2"), py::arg("eps"), py::arg("weight_decay"), py::arg("decoupled"), py::arg("maximize"),
        py::arg("amsgrad"), py::arg("prox_kind"), py::arg("prox_a"), py::arg("prox_b"), py::arg("preconditioned"),
        "Fused Adam/AdamW step + elementwise prox over a param group; returns zeros per tensor.");
}

}  // namespace normreg
