// One bind_* function per binding file; module.cpp calls them in order.
#pragma once
#include <pybind11/pybind11.h>

namespace normreg {
namespace py = pybind11;
void bind_runtime(py::module_& m);
void bind_scan(py::module_& m);
void bind_penalty(py::module_& m);
void bind_dist(py::module_& m);
void bind_image(py::module_& m);
void bind_prox(py::module_& m);
void bind_optim(py::module_& m);
}  // namespace normreg
