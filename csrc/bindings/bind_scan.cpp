// The bridge's fast path: read the kernel arguments of a list of torch tensors in one C loop.
//
// normreg does not link libtorch (torch is not a build requirement), so it cannot read a
// tensor's metadata from C++ directly. It can, however, call torch's own Python-level
// accessors (the `dtype` / `is_cpu` / `requires_grad` / `grad` getters and the `data_ptr` /
// `numel` / `is_contiguous` methods) without the interpreter in between: the descriptors are
// looked up once on the tensor type and then invoked through the CPython C API. Same
// functions, same semantics (torch-function modes included), a fraction of the cost of
// `map(attrgetter(...))` in Python.
//
// Nothing here raises for a bad tensor: whenever something is not the plain case (another
// type, an unsupported dtype, not on the CPU, not contiguous, shared memory for an in-place
// op, a missing or odd .grad, or any Python exception), the scan returns None and the
// Python bridge takes its slow path, which checks tensor by tensor and raises the precise
// TypeError / ValueError naming the argument.
#include <Python.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "bindings/bind.hpp"

namespace normreg {

namespace {

struct ScanTable {
    bool ready = false;
    std::vector<PyTypeObject*> types;  // exact types taken on the fast path (Tensor, Parameter)
    PyObject* dtypes[4] = {nullptr, nullptr, nullptr, nullptr};  // float32, float64, bfloat16, float16
    PyObject* get_dtype = nullptr;      // getset descriptors
    PyObject* get_is_cpu = nullptr;
    PyObject* get_requires_grad = nullptr;
    PyObject* get_grad = nullptr;
    PyObject* get_layout = nullptr;
    PyObject* strided = nullptr;         // torch.strided
    PyObject* data_ptr = nullptr;        // method descriptors
    PyObject* numel = nullptr;
    PyObject* is_contiguous = nullptr;
};

ScanTable table;

// Attribute `d` (a descriptor found on the tensor type) read from `obj`: a new reference or
// nullptr with a Python error set.
inline PyObject* get(PyObject* d, PyObject* obj) {
    descrgetfunc f = Py_TYPE(d)->tp_descr_get;
    if (f == nullptr) {
        PyErr_SetString(PyExc_TypeError, "not a descriptor");
        return nullptr;
    }
    return f(d, obj, reinterpret_cast<PyObject*>(Py_TYPE(obj)));
}

inline PyObject* call(PyObject* method, PyObject* obj) { return PyObject_Vectorcall(method, &obj, 1, nullptr); }

inline bool exact_type(PyObject* obj) {
    PyTypeObject* t = Py_TYPE(obj);
    for (PyTypeObject* k : table.types)
        if (t == k) return true;
    return false;
}

inline int dtype_code(PyObject* dt) {
    for (int c = 0; c < 4; ++c)
        if (dt == table.dtypes[c]) return c;
    return -1;
}

// true: the getter returned Py_True; false: Py_False or anything else; -1: error.
inline int flag(PyObject* d, PyObject* obj, bool method) {
    PyObject* r = method ? call(d, obj) : get(d, obj);
    if (r == nullptr) return -1;
    const int out = (r == Py_True) ? 1 : 0;
    Py_DECREF(r);
    return out;
}

// A plain CPU tensor's (data_ptr, numel, dtype code) appended to the three lists; false when
// the tensor is not the plain case (or on a Python error, which is cleared).
bool scan_one(PyObject* t, PyObject* ptrs, PyObject* numels, PyObject* codes, int* any_rg, std::vector<std::uintptr_t>* raw) {
    if (!exact_type(t)) return false;
    PyObject* dt = get(table.get_dtype, t);
    if (dt == nullptr) return false;
    const int code = dtype_code(dt);
    Py_DECREF(dt);
    if (code < 0) return false;
    if (flag(table.get_is_cpu, t, false) != 1) return false;
    if (flag(table.is_contiguous, t, true) != 1) return false;
    if (any_rg != nullptr && *any_rg == 0) {
        const int rg = flag(table.get_requires_grad, t, false);
        if (rg < 0) return false;
        *any_rg = rg;
    }
    PyObject* p = call(table.data_ptr, t);
    if (p == nullptr) return false;
    PyObject* n = call(table.numel, t);
    if (n == nullptr) {
        Py_DECREF(p);
        return false;
    }
    if (raw != nullptr) {
        const long long ne = PyLong_AsLongLong(n);
        const unsigned long long pv = PyLong_AsUnsignedLongLong(p);
        if (PyErr_Occurred()) {
            Py_DECREF(p);
            Py_DECREF(n);
            return false;
        }
        if (ne > 0) raw->push_back(static_cast<std::uintptr_t>(pv));
    }
    PyObject* c = PyLong_FromLong(code);
    const bool ok = c != nullptr && PyList_Append(ptrs, p) == 0 && PyList_Append(numels, n) == 0 && PyList_Append(codes, c) == 0;
    Py_XDECREF(c);
    Py_DECREF(p);
    Py_DECREF(n);
    return ok;
}

bool distinct(std::vector<std::uintptr_t>& raw) {
    std::sort(raw.begin(), raw.end());
    return std::adjacent_find(raw.begin(), raw.end()) == raw.end();
}

py::object none_after_clear() {
    PyErr_Clear();
    return py::none();
}

}  // namespace

void bind_scan(py::module_& m) {
    m.def(
        "scan_init",
        [](py::list types, py::tuple dtypes, py::object strided, py::object tensor_type) {
            if (dtypes.size() != 4) throw py::value_error("scan_init: four dtypes (float32, float64, bfloat16, float16) expected");
            ScanTable t;
            for (auto k : types) {
                if (!PyType_Check(k.ptr())) throw py::type_error("scan_init: 'types' must hold types");
                t.types.push_back(reinterpret_cast<PyTypeObject*>(k.ptr()));
                Py_INCREF(k.ptr());  // kept for the process's lifetime
            }
            for (int c = 0; c < 4; ++c) {
                t.dtypes[c] = dtypes[c].ptr();
                Py_INCREF(t.dtypes[c]);
            }
            t.strided = strided.release().ptr();
            auto attr = [&](const char* name) { return py::object(tensor_type.attr(name)).release().ptr(); };
            t.get_dtype = attr("dtype");
            t.get_is_cpu = attr("is_cpu");
            t.get_requires_grad = attr("requires_grad");
            t.get_grad = attr("grad");
            t.get_layout = attr("layout");
            t.data_ptr = attr("data_ptr");
            t.numel = attr("numel");
            t.is_contiguous = attr("is_contiguous");
            for (PyObject* d : {t.get_dtype, t.get_is_cpu, t.get_requires_grad, t.get_grad, t.get_layout})
                if (Py_TYPE(d)->tp_descr_get == nullptr) throw py::type_error("scan_init: a tensor attribute is not a descriptor");
            t.ready = true;
            table = t;
        },
        py::arg("types"), py::arg("dtypes"), py::arg("strided"), py::arg("tensor_type"),
        "Set up the fast argument scan: tensor types, dtypes and torch's accessors (once, at import).");

    m.def(
        "scan",
        [](py::list tensors, bool inplace, bool requires_grad) -> py::object {
            if (!table.ready) return py::none();
            const Py_ssize_t n = PyList_GET_SIZE(tensors.ptr());
            py::list ptrs, numels, codes;
            int any_rg = 0;
            std::vector<std::uintptr_t> raw;
            if (inplace) raw.reserve(static_cast<std::size_t>(n));
            for (Py_ssize_t i = 0; i < n; ++i) {
                PyObject* t = PyList_GET_ITEM(tensors.ptr(), i);
                if (!scan_one(t, ptrs.ptr(), numels.ptr(), codes.ptr(), requires_grad ? &any_rg : nullptr, inplace ? &raw : nullptr))
                    return none_after_clear();
            }
            if (inplace && !distinct(raw)) return py::none();
            return py::make_tuple(ptrs, numels, codes, py::bool_(any_rg != 0));
        },
        py::arg("tensors"), py::arg("inplace"), py::arg("requires_grad") = false,
        "(ptrs, numels, dtype codes, any requires_grad) of a list of plain, contiguous CPU tensors, or None.");

    m.def(
        "scan_grads",
        [](py::list tensors, py::list numels, py::list codes) -> py::object {
            // Every tensor's .grad as (grads, pointers) when each exists, is a plain dense
            // contiguous CPU tensor of its param's numel and dtype, and no two share memory.
            if (!table.ready) return py::none();
            const Py_ssize_t n = PyList_GET_SIZE(tensors.ptr());
            if (PyList_GET_SIZE(numels.ptr()) != n || PyList_GET_SIZE(codes.ptr()) != n) return py::none();
            py::list grads, gptrs, gnumels, gcodes;
            std::vector<std::uintptr_t> raw;
            raw.reserve(static_cast<std::size_t>(n));
            for (Py_ssize_t i = 0; i < n; ++i) {
                PyObject* g = get(table.get_grad, PyList_GET_ITEM(tensors.ptr(), i));
                if (g == nullptr) return none_after_clear();
                py::object gref = py::reinterpret_steal<py::object>(g);
                if (!exact_type(g)) return py::none();  // None (missing) or a subclass
                PyObject* layout = get(table.get_layout, g);
                if (layout == nullptr) return none_after_clear();
                const bool dense = layout == table.strided;
                Py_DECREF(layout);
                if (!dense) return py::none();
                if (!scan_one(g, gptrs.ptr(), gnumels.ptr(), gcodes.ptr(), nullptr, &raw)) return none_after_clear();
                // Same numel and dtype as the param (Python ints: compare by value).
                const int eq_n = PyObject_RichCompareBool(PyList_GET_ITEM(gnumels.ptr(), i), PyList_GET_ITEM(numels.ptr(), i), Py_EQ);
                const int eq_c = PyObject_RichCompareBool(PyList_GET_ITEM(gcodes.ptr(), i), PyList_GET_ITEM(codes.ptr(), i), Py_EQ);
                if (eq_n != 1 || eq_c != 1) return none_after_clear();
                grads.append(gref);
            }
            if (!distinct(raw)) return py::none();
            return py::make_tuple(grads, gptrs);
        },
        py::arg("tensors"), py::arg("numels"), py::arg("codes"),
        "(grads, grad pointers) of tensors whose .grad are all present and plain, or None.");
}

}  // namespace normreg
