// Runtime bindings: thread count and what was built.
#include <pybind11/pybind11.h>

#include "bindings/bind.hpp"
#include "core/simd.hpp"
#include "core/threads.hpp"
#include "engine/multi_tensor.hpp"  // kChunk

namespace normreg {

void bind_runtime(py::module_& m) {
    m.def("set_num_threads", &core::set_num_threads, py::arg("n"),
          "Thread count of the kernels; 0 follows torch.get_num_threads().");
    m.def("get_num_threads", &core::num_threads, "Threads the next kernel call will use.");
    m.def("thread_override", []() { return core::thread_override().load(); });
    m.def("build_info", []() {
        py::dict d;
        d["openmp"] = core::openmp_enabled();
#ifdef _OPENMP
        d["openmp_version"] = _OPENMP;
#else
        d["openmp_version"] = 0;
#endif
        d["compiler"] = NORMREG_COMPILER;
        d["cxx_flags"] = NORMREG_CXX_FLAGS;
        d["build_type"] = NORMREG_BUILD_TYPE;
        d["chunk_elements"] = engine::kChunk;
        d["simd"] = core::simd_level();
        return d;
    });
}

}  // namespace normreg
