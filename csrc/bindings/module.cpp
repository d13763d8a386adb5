// Table of contents of the extension: each bind_* adds one family of ops.
#include "bindings/bind.hpp"

PYBIND11_MODULE(_C, m) {
    m.doc() = "normreg kernels. Use the Python API (import normreg) instead.";
    normreg::bind_runtime(m);
    normreg::bind_scan(m);
    normreg::bind_penalty(m);
    normreg::bind_dist(m);
    normreg::bind_image(m);
    normreg::bind_prox(m);
    normreg::bind_optim(m);
}
