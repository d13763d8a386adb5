// The bridge's fast path: read the kernel arguments of a list of torch tensors in one C loop.
//
// normreg does not link libtorch (torch is not a build requirement), so it cannot read a
// tensor's metadata from C++ directly. It can, however, call torch's own Python-level
// accessors (the `dtype` / `is_cpu` / `requires_grad` / `grad` getters and the `data_ptr` /
// `numel` / `is_contiguous` methods) without the interpreter in between: the descriptors are
// looked up once on the tensor type and the C functions behind them are called directly
// (see Accessor). Same functions, same semantics (torch-function modes included), a
// fraction of the cost of `map(attrgetter(...))` in Python. The results go straight into
// preallocated lists.
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
#include <string>
#include <vector>

#include "bindings/bind.hpp"

namespace normreg {

namespace {

// One of torch's accessors, resolved once: the C function behind a getset descriptor or a
// method descriptor, called directly. That is what CPython's descriptor machinery calls
// after its type check (getset_get, method_vectorcall_*); the scan makes that check once
// per tensor (exact_type) and once per accessor at set-up (the tensor types derive from
// the descriptor's type), so each call skips the interpreter's generic path. Anything
// else (another calling convention) goes through the generic descriptor protocol.
struct Accessor {
    PyObject* descr = nullptr;  // owned for the process's lifetime
    getter get = nullptr;       // getset descriptor: get(obj, closure)
    void* closure = nullptr;
    PyCFunction noargs = nullptr;               // METH_NOARGS method: f(obj, nullptr)
    PyCFunctionWithKeywords varargs = nullptr;  // METH_VARARGS | METH_KEYWORDS: f(obj, (), nullptr)
    bool method = false;

    // A new reference, or nullptr with a Python error set.
    PyObject* operator()(PyObject* obj) const;
};

struct ScanTable {
    bool ready = false;
    std::vector<PyTypeObject*> types;  // exact types taken on the fast path (Tensor, Parameter)
    PyObject* dtypes[4] = {nullptr, nullptr, nullptr, nullptr};  // float32, float64, bfloat16, float16
    PyObject* strided = nullptr;  // torch.strided
    PyObject* empty = nullptr;    // () for METH_VARARGS accessors
    Accessor dtype, is_cpu, requires_grad, grad, layout;  // getters
    Accessor data_ptr, numel, is_contiguous;              // methods
};

ScanTable table;

PyObject* Accessor::operator()(PyObject* obj) const {
    if (get != nullptr) return get(obj, closure);
    if (noargs != nullptr) return noargs(obj, nullptr);
    if (varargs != nullptr) return varargs(obj, table.empty, nullptr);
    if (method) return PyObject_Vectorcall(descr, &obj, 1, nullptr);
    return Py_TYPE(descr)->tp_descr_get(descr, obj, reinterpret_cast<PyObject*>(Py_TYPE(obj)));
}

// Resolve `name` on `tensor_type` for objects of every type in `types`.
Accessor resolve(PyObject* tensor_type, const char* name, bool method, const std::vector<PyTypeObject*>& types) {
    Accessor a;
    a.method = method;
    a.descr = PyObject_GetAttrString(tensor_type, name);
    if (a.descr == nullptr) throw py::error_already_set();
    PyTypeObject* owner = nullptr;
    if (!method && Py_TYPE(a.descr) == &PyGetSetDescr_Type) {
        auto* d = reinterpret_cast<PyGetSetDescrObject*>(a.descr);
        owner = PyDescr_TYPE(d);
        if (d->d_getset->get != nullptr) {
            a.get = d->d_getset->get;
            a.closure = d->d_getset->closure;
        }
    } else if (method && Py_TYPE(a.descr) == &PyMethodDescr_Type) {
        auto* d = reinterpret_cast<PyMethodDescrObject*>(a.descr);
        owner = PyDescr_TYPE(d);
        const int flags = d->d_method->ml_flags & ~(METH_COEXIST);
        if (flags == METH_NOARGS) a.noargs = d->d_method->ml_meth;
        else if (flags == (METH_VARARGS | METH_KEYWORDS))
            a.varargs = reinterpret_cast<PyCFunctionWithKeywords>(reinterpret_cast<void (*)(void)>(d->d_method->ml_meth));
    } else if (!method && Py_TYPE(a.descr)->tp_descr_get == nullptr) {
        throw py::type_error(std::string("scan_init: tensor attribute '") + name + "' is not a descriptor");
    }
    if (owner != nullptr) {
        for (PyTypeObject* t : types)
            if (!PyType_IsSubtype(t, owner)) {  // cannot happen for torch's types; stay generic
                a.get = nullptr;
                a.noargs = nullptr;
                a.varargs = nullptr;
            }
    }
    return a;
}

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

// 1: the accessor returned True; 0: False or anything else; -1: error.
inline int flag(const Accessor& a, PyObject* obj) {
    PyObject* r = a(obj);
    if (r == nullptr) return -1;
    const int out = (r == Py_True) ? 1 : 0;
    Py_DECREF(r);
    return out;
}

// What the scan reads of requires_grad: nothing, whether any tensor requires grad (read
// until the first that does), or whether all do (read until the first that does not).
constexpr int kNone = 0, kAny = 1, kAll = 2;

// The bytes [begin, end) a tensor's elements occupy (contiguous tensors only, so exact).
struct Span {
    std::uintptr_t begin, end;
};

// A plain CPU tensor's data_ptr, numel and dtype code stored at index i of the three
// (preallocated) lists, and requires_grad folded into *rg as rg_mode says; false when the
// tensor is not the plain case (or on a Python error, which the caller clears).
bool scan_one(PyObject* t, Py_ssize_t i, PyObject* ptrs, PyObject* numels, PyObject* codes, int rg_mode, int* rg,
              std::vector<Span>* raw) {
    if (!exact_type(t)) return false;
    PyObject* dt = table.dtype(t);
    if (dt == nullptr) return false;
    const int code = dtype_code(dt);
    Py_DECREF(dt);
    if (code < 0) return false;
    if (flag(table.is_cpu, t) != 1) return false;
    if (flag(table.is_contiguous, t) != 1) return false;
    if (rg_mode != 0 && *rg == (rg_mode == kAny ? 0 : 1)) {  // not settled yet
        const int r = flag(table.requires_grad, t);
        if (r < 0) return false;
        *rg = r;
    }
    PyObject* p = table.data_ptr(t);
    if (p == nullptr) return false;
    PyList_SET_ITEM(ptrs, i, p);  // the list owns it from here
    PyObject* n = table.numel(t);
    if (n == nullptr) return false;
    PyList_SET_ITEM(numels, i, n);
    if (raw != nullptr) {
        const long long ne = PyLong_AsLongLong(n);
        const unsigned long long pv = PyLong_AsUnsignedLongLong(p);
        if (PyErr_Occurred()) return false;
        static constexpr std::uintptr_t kSize[4] = {4, 8, 2, 2};  // bytes per element, by dtype code
        if (ne > 0) raw->push_back(Span{static_cast<std::uintptr_t>(pv), static_cast<std::uintptr_t>(pv) + static_cast<std::uintptr_t>(ne) * kSize[code]});
    }
    PyObject* c = PyLong_FromLong(code);
    if (c == nullptr) return false;
    PyList_SET_ITEM(codes, i, c);
    return true;
}

// No two memory ranges overlap (not only "no two start at the same address": two views
// such as w[0:4] and w[2:6] overlap with different starts).
bool distinct(std::vector<Span>& raw) {
    std::sort(raw.begin(), raw.end(), [](const Span& a, const Span& b) { return a.begin < b.begin; });
    for (std::size_t i = 1; i < raw.size(); ++i)
        if (raw[i].begin < raw[i - 1].end) return false;
    return true;
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
            t.empty = PyTuple_New(0);
            PyObject* tt = tensor_type.ptr();
            t.dtype = resolve(tt, "dtype", false, t.types);
            t.is_cpu = resolve(tt, "is_cpu", false, t.types);
            t.requires_grad = resolve(tt, "requires_grad", false, t.types);
            t.grad = resolve(tt, "grad", false, t.types);
            t.layout = resolve(tt, "layout", false, t.types);
            t.data_ptr = resolve(tt, "data_ptr", true, t.types);
            t.numel = resolve(tt, "numel", true, t.types);
            t.is_contiguous = resolve(tt, "is_contiguous", true, t.types);
            t.ready = true;
            table = t;
        },
        py::arg("types"), py::arg("dtypes"), py::arg("strided"), py::arg("tensor_type"),
        "Set up the fast argument scan: tensor types, dtypes and torch's accessors (once, at import).");

    m.def(
        "scan",
        [](py::list tensors, bool inplace, int requires_grad) -> py::object {
            if (!table.ready) return py::none();
            if (requires_grad < kNone || requires_grad > kAll) throw py::value_error("scan: requires_grad must be 0, 1 (any) or 2 (all)");
            const Py_ssize_t n = PyList_GET_SIZE(tensors.ptr());
            auto ptrs = py::reinterpret_steal<py::list>(PyList_New(n));
            auto numels = py::reinterpret_steal<py::list>(PyList_New(n));
            auto codes = py::reinterpret_steal<py::list>(PyList_New(n));
            if (!ptrs || !numels || !codes) throw py::error_already_set();
            int rg = requires_grad == kAll ? 1 : 0;  // all() of nothing is true, any() false
            std::vector<Span> raw;
            if (inplace) raw.reserve(static_cast<std::size_t>(n));
            for (Py_ssize_t i = 0; i < n; ++i) {
                PyObject* t = PyList_GET_ITEM(tensors.ptr(), i);
                if (!scan_one(t, i, ptrs.ptr(), numels.ptr(), codes.ptr(), requires_grad, &rg, inplace ? &raw : nullptr))
                    return none_after_clear();
            }
            if (inplace && !distinct(raw)) return py::none();
            py::object flag = requires_grad == kNone ? py::none() : py::object(py::bool_(rg != 0));
            return py::make_tuple(ptrs, numels, codes, flag);
        },
        py::arg("tensors"), py::arg("inplace"), py::arg("requires_grad") = kNone,
        "(ptrs, numels, dtype codes, flag) of a list of plain, contiguous CPU tensors, or None. `flag` is "
        "None, any(requires_grad) or all(requires_grad) for requires_grad = 0, 1 or 2.");

    m.def(
        "scan_grads",
        [](py::list tensors, py::list numels, py::list codes) -> py::object {
            // Every tensor's .grad as (grads, pointers) when each exists, is a plain dense
            // contiguous CPU tensor of its param's numel and dtype, and no two share memory.
            if (!table.ready) return py::none();
            const Py_ssize_t n = PyList_GET_SIZE(tensors.ptr());
            if (PyList_GET_SIZE(numels.ptr()) != n || PyList_GET_SIZE(codes.ptr()) != n) return py::none();
            auto grads = py::reinterpret_steal<py::list>(PyList_New(n));
            auto gptrs = py::reinterpret_steal<py::list>(PyList_New(n));
            auto gnumels = py::reinterpret_steal<py::list>(PyList_New(n));
            auto gcodes = py::reinterpret_steal<py::list>(PyList_New(n));
            if (!grads || !gptrs || !gnumels || !gcodes) throw py::error_already_set();
            std::vector<Span> raw;
            raw.reserve(static_cast<std::size_t>(n));
            for (Py_ssize_t i = 0; i < n; ++i) {
                PyObject* g = table.grad(PyList_GET_ITEM(tensors.ptr(), i));
                if (g == nullptr) return none_after_clear();
                PyList_SET_ITEM(grads.ptr(), i, g);  // the list owns it from here
                if (!exact_type(g)) return py::none();  // None (missing) or a subclass
                PyObject* layout = table.layout(g);
                if (layout == nullptr) return none_after_clear();
                const bool dense = layout == table.strided;
                Py_DECREF(layout);
                if (!dense) return py::none();
                int unused = 0;
                if (!scan_one(g, i, gptrs.ptr(), gnumels.ptr(), gcodes.ptr(), kNone, &unused, &raw)) return none_after_clear();
                // Same numel and dtype as the param (Python ints: compare by value).
                const int eq_n = PyObject_RichCompareBool(PyList_GET_ITEM(gnumels.ptr(), i), PyList_GET_ITEM(numels.ptr(), i), Py_EQ);
                const int eq_c = PyObject_RichCompareBool(PyList_GET_ITEM(gcodes.ptr(), i), PyList_GET_ITEM(codes.ptr(), i), Py_EQ);
                if (eq_n != 1 || eq_c != 1) return none_after_clear();
            }
            if (!distinct(raw)) return py::none();
            return py::make_tuple(grads, gptrs);
        },
        py::arg("tensors"), py::arg("numels"), py::arg("codes"),
        "(grads, grad pointers) of tensors whose .grad are all present and plain, or None.");
}

}  // namespace normreg
