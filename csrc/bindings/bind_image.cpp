// Image-loss bindings: check arguments with the GIL held, release it around the engine call.
// Pointers come from normreg._bridge (contiguous CPU tensors); 0 stands for an absent tensor.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <string>
#include <vector>

#include "bindings/bind.hpp"
#include "bindings/tensor_list.hpp"
#include "ops/image.hpp"

namespace normreg {

namespace {

ops::PointLoss parse_point_loss(const char* op, const std::string& kind) {
    if (kind == "l1") return ops::PointLoss::L1;
    if (kind == "mse") return ops::PointLoss::MSE;
    throw py::value_error(std::string(op) + ": unknown loss kind '" + kind + "'; use l1 or mse");
}

ops::TVKind parse_tv(const char* op, const std::string& kind) {
    if (kind == "anisotropic") return ops::TVKind::Anisotropic;
    if (kind == "isotropic") return ops::TVKind::Isotropic;
    throw py::value_error(std::string(op) + ": unknown total variation kind '" + kind + "'; use anisotropic or isotropic");
}

ops::DType parse_dtype(const char* op, int code) {
    if (code < 0 || code > 3)
        throw py::type_error(std::string(op) + ": unsupported dtype code " + std::to_string(code) +
                             "; use float32, float64, bfloat16 or float16");
    return static_cast<ops::DType>(code);
}

void require_ptr(const char* op, const char* arg, std::uintptr_t p, std::int64_t numel) {
    if (numel > 0 && p == 0) throw py::value_error(std::string(op) + ": '" + arg + "' has a null data pointer");
}

void* as_ptr(std::uintptr_t p) { return reinterpret_cast<void*>(p); }

ops::ImageShape make_image_shape(const char* op, const std::vector<std::int64_t>& shape) {
    if (shape.size() != 4) throw py::value_error(std::string(op) + ": 'images' must be 4-D (N, C, H, W)");
    for (auto v : shape)
        if (v < 0) throw py::value_error(std::string(op) + ": 'images' has a negative dimension");
    return ops::ImageShape{shape[0], shape[1], shape[2], shape[3]};
}

void require_eps(const char* op, double eps) {
    if (!(eps >= 0.0) || !std::isfinite(eps))
        throw py::value_error(std::string(op) + ": 'eps' must be finite and >= 0, got " + std::to_string(eps));
}

}  // namespace

void bind_image(py::module_& m) {
    m.def(
        "pointwise_loss_value",
        [](const std::string& kind, std::uintptr_t pred, std::uintptr_t target, std::uintptr_t mask, std::uintptr_t weight,
           std::uintptr_t out, std::uintptr_t dir, std::int64_t numel, int dtype, double dir_scale) {
            const char* op = "pointwise_loss_value";
            const auto k = parse_point_loss(op, kind);
            const auto dt = parse_dtype(op, dtype);
            if (numel < 0) throw py::value_error(std::string(op) + ": 'numel' must be >= 0");
            require_ptr(op, "pred", pred, numel);
            require_ptr(op, "target", target, numel);
            const ops::PointwiseArgs a{as_ptr(pred), as_ptr(target), as_ptr(mask), as_ptr(weight), numel, dt};
            kernels::LossSums s;
            {
                py::gil_scoped_release nogil;
                s = ops::pointwise_loss_value(k, a, as_ptr(out), as_ptr(dir), dir_scale);
            }
            return py::make_tuple(s.value, s.mask);
        },
        py::arg("kind"), py::arg("pred"), py::arg("target"), py::arg("mask"), py::arg("weight"), py::arg("out"), py::arg("dir"),
        py::arg("numel"), py::arg("dtype"), py::arg("dir_scale"),
        "(sum of [mask] [weight] loss(pred - target), sum of mask) in float64, one pass; writes the elementwise loss "
        "to out unless out is 0, and the gradient for an incoming gradient of 1, c * [mask] [weight] dloss with "
        "c = dir_scale (l1) or 2 * dir_scale (mse), to dir (float32; float64 for float64) unless dir is 0.");

    m.def(
        "pointwise_loss_grad_scale",
        [](std::uintptr_t dir, std::uintptr_t grad_out, std::uintptr_t grad_pred, std::uintptr_t grad_target, std::int64_t numel,
           int dtype, double scale) {
            const char* op = "pointwise_loss_grad_scale";
            const auto dt = parse_dtype(op, dtype);
            if (numel < 0) throw py::value_error(std::string(op) + ": 'numel' must be >= 0");
            require_ptr(op, "dir", dir, numel);
            if (numel > 0 && grad_pred == 0 && grad_target == 0)
                throw py::value_error(std::string(op) + ": give 'grad_pred', 'grad_target' or both");
            py::gil_scoped_release nogil;
            ops::pointwise_loss_grad_scale(as_ptr(dir), as_ptr(grad_out), as_ptr(grad_pred), as_ptr(grad_target), numel, dt,
                                              scale);
        },
        py::arg("dir"), py::arg("grad_out"), py::arg("grad_pred"), py::arg("grad_target"), py::arg("numel"),
        py::arg("dtype"), py::arg("scale"),
        "grad_pred = (dir * scale) * [grad_out] from the forward's dir; grad_target = -grad_pred; each unless 0. "
        "grad_pred may be dir itself (float32, float64). One pass.");

    m.def(
        "pointwise_loss_grad",
        [](const std::string& kind, std::uintptr_t pred, std::uintptr_t target, std::uintptr_t mask, std::uintptr_t weight,
           std::uintptr_t grad_out, std::uintptr_t grad_pred, std::uintptr_t grad_target, std::int64_t numel, int dtype,
           double dir_scale, double scale) {
            const char* op = "pointwise_loss_grad";
            const auto k = parse_point_loss(op, kind);
            const auto dt = parse_dtype(op, dtype);
            if (numel < 0) throw py::value_error(std::string(op) + ": 'numel' must be >= 0");
            require_ptr(op, "pred", pred, numel);
            require_ptr(op, "target", target, numel);
            require_ptr(op, "grad_pred", grad_pred, numel);
            const ops::PointwiseArgs a{as_ptr(pred), as_ptr(target), as_ptr(mask), as_ptr(weight), numel, dt};
            py::gil_scoped_release nogil;
            ops::pointwise_loss_grad(k, a, as_ptr(grad_out), as_ptr(grad_pred), as_ptr(grad_target), dir_scale, scale);
        },
        py::arg("kind"), py::arg("pred"), py::arg("target"), py::arg("mask"), py::arg("weight"), py::arg("grad_out"),
        py::arg("grad_pred"), py::arg("grad_target"), py::arg("numel"), py::arg("dtype"), py::arg("dir_scale"),
        py::arg("scale"),
        "grad_pred = ((c * dloss * [mask] [weight]) * scale) * [grad_out], c = dir_scale (l1) or 2 * dir_scale (mse), "
        "recomputed from pred and target as the forward's dir then pointwise_loss_grad_scale; grad_target = "
        "-grad_pred unless 0. One pass.");

    m.def(
        "tv_value",
        [](const std::string& kind, std::uintptr_t images, const std::vector<std::int64_t>& shape, int dtype, double eps) {
            const char* op = "tv_value";
            const auto k = parse_tv(op, kind);
            const auto dt = parse_dtype(op, dtype);
            const auto s = make_image_shape(op, shape);
            require_ptr(op, "images", images, s.n * s.c * s.h * s.w);
            require_eps(op, eps);
            py::gil_scoped_release nogil;
            return ops::tv_value(k, as_ptr(images), dt, s, eps);
        },
        py::arg("kind"), py::arg("images"), py::arg("shape"), py::arg("dtype"), py::arg("eps"),
        "Total variation of each image of a contiguous NCHW batch (float64, deterministic).");

    m.def(
        "tv_grad",
        [](const std::string& kind, std::uintptr_t images, std::uintptr_t grad, const std::vector<std::int64_t>& shape, int dtype,
           double eps, const std::vector<double>& scale) {
            const char* op = "tv_grad";
            const auto k = parse_tv(op, kind);
            const auto dt = parse_dtype(op, dtype);
            const auto s = make_image_shape(op, shape);
            require_ptr(op, "images", images, s.n * s.c * s.h * s.w);
            require_ptr(op, "grad", grad, s.n * s.c * s.h * s.w);
            require_eps(op, eps);
            if (static_cast<std::int64_t>(scale.size()) != s.n)
                throw py::value_error(std::string(op) + ": 'scale' must have one value per image, got " +
                                      std::to_string(scale.size()) + " for " + std::to_string(s.n));
            py::gil_scoped_release nogil;
            ops::tv_grad(k, as_ptr(images), as_ptr(grad), dt, s, eps, scale);
        },
        py::arg("kind"), py::arg("images"), py::arg("grad"), py::arg("shape"), py::arg("dtype"), py::arg("eps"), py::arg("scale"),
        "grad = scale[n] * d TV(images[n]) / d images[n], one pass.");
}

}  // namespace normreg
