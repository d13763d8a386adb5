// Argument conversion for the bindings: (pointer, numel, dtype) lists from the Python
// bridge become engine TensorLists, and strength lists are checked and expanded. Every
// check happens here, with the GIL held, before the engine touches memory. Messages start
// with the op's name and say how to fix the call.
#pragma once
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <string>
#include <vector>

#include "engine/multi_tensor.hpp"

namespace normreg {

namespace py = pybind11;

// The bridge's integer lists (pointers, numels, dtype codes). A std::vector with a caster of
// its own (below): these lists are read on every call, once per tensor, so an exact Python
// list of exact ints is read in one direct loop; anything else goes through pybind11's
// generic sequence caster, with its usual conversions and errors.
template <class T>
struct IntList : std::vector<T> {
    using std::vector<T>::vector;
};

using Ptrs = IntList<std::uintptr_t>;
using Numels = IntList<std::int64_t>;
using DTypes = IntList<int>;

inline engine::TensorList make_list(const char* op, const char* arg, const Ptrs& ptrs, const Numels& numels,
                                    const DTypes& dtypes) {
    if (ptrs.size() != numels.size() || ptrs.size() != dtypes.size())
        throw py::value_error(std::string(op) + ": '" + arg + "' pointer, numel and dtype lists differ in length");
    engine::TensorList out;
    out.reserve(ptrs.size());
    for (std::size_t i = 0; i < ptrs.size(); ++i) {
        if (dtypes[i] < 0 || dtypes[i] > 3)
            throw py::type_error(std::string(op) + ": '" + arg + "' tensor " + std::to_string(i) +
                                 " has an unsupported dtype code " + std::to_string(dtypes[i]) +
                                 "; use float32, float64, bfloat16 or float16");
        if (numels[i] < 0)
            throw py::value_error(std::string(op) + ": '" + arg + "' tensor " + std::to_string(i) + " has a negative numel");
        if (numels[i] > 0 && ptrs[i] == 0)
            throw py::value_error(std::string(op) + ": '" + arg + "' tensor " + std::to_string(i) + " has a null data pointer");
        out.push_back(engine::TensorRef{reinterpret_cast<void*>(ptrs[i]), numels[i], static_cast<engine::DType>(dtypes[i])});
    }
    return out;
}

// A second list that must pair element by element with `first` (same numel and dtype).
inline engine::TensorList make_paired(const char* op, const char* arg, const engine::TensorList& first, const Ptrs& ptrs,
                                      const Numels& numels, const DTypes& dtypes) {
    auto out = make_list(op, arg, ptrs, numels, dtypes);
    if (out.size() != first.size())
        throw py::value_error(std::string(op) + ": '" + arg + "' must have one tensor per param, got " +
                              std::to_string(out.size()) + " for " + std::to_string(first.size()));
    for (std::size_t i = 0; i < out.size(); ++i) {
        if (out[i].numel != first[i].numel)
            throw py::value_error(std::string(op) + ": '" + arg + "' tensor " + std::to_string(i) + " has " +
                                  std::to_string(out[i].numel) + " elements but its param has " + std::to_string(first[i].numel));
        if (out[i].dtype != first[i].dtype)
            throw py::type_error(std::string(op) + ": '" + arg + "' tensor " + std::to_string(i) + " has a different dtype than its param");
    }
    return out;
}

// The (outer, groups, inner) shape of each tensor of a group op, checked against its numel.
inline std::vector<engine::GroupShape> group_shapes(const char* op, const engine::TensorList& w, const std::vector<std::int64_t>& outer,
                                             const std::vector<std::int64_t>& groups, const std::vector<std::int64_t>& inner) {
    if (outer.size() != w.size() || groups.size() != w.size() || inner.size() != w.size())
        throw py::value_error(std::string(op) + ": one (outer, groups, inner) shape per tensor is required");
    std::vector<engine::GroupShape> s(w.size());
    for (std::size_t i = 0; i < w.size(); ++i) {
        if (outer[i] < 0 || groups[i] < 0 || inner[i] < 0 || outer[i] * groups[i] * inner[i] != w[i].numel)
            throw py::value_error(std::string(op) + ": group shape of tensor " + std::to_string(i) + " does not match its numel");
        s[i] = engine::GroupShape{outer[i], groups[i], inner[i]};
    }
    return s;
}

// A strength list of length 1 (broadcast) or n, every value finite and >= 0.
inline std::vector<double> expand_strength(const char* op, const char* arg, const std::vector<double>& s, std::size_t n) {
    if (s.size() != 1 && s.size() != n)
        throw py::value_error(std::string(op) + ": '" + arg + "' must have 1 or " + std::to_string(n) + " values, got " +
                              std::to_string(s.size()));
    for (double v : s)
        if (!(v >= 0.0) || !std::isfinite(v))
            throw py::value_error(std::string(op) + ": '" + arg + "' must be finite and >= 0, got " + std::to_string(v));
    if (s.size() == n) return s;
    return std::vector<double>(n, s[0]);
}

inline void require_finite(const char* op, const char* arg, double v) {
    if (!std::isfinite(v)) throw py::value_error(std::string(op) + ": '" + arg + "' must be finite, got " + std::to_string(v));
}

}  // namespace normreg

namespace pybind11 {
namespace detail {

template <class T>
struct type_caster<normreg::IntList<T>> {
    PYBIND11_TYPE_CASTER(normreg::IntList<T>, const_name("list[int]"));

    bool load(handle src, bool convert) {
        PyObject* o = src.ptr();
        if (PyList_CheckExact(o) && fast_load(o)) return true;
        list_caster<std::vector<T>, T> generic;
        if (!generic.load(src, convert)) return false;
        std::vector<T>& v = generic;
        value.assign(v.begin(), v.end());
        return true;
    }

    static handle cast(const normreg::IntList<T>& src, return_value_policy policy, handle parent) {
        return list_caster<std::vector<T>, T>::cast(src, policy, parent);
    }

private:
    // Every item an exact int in T's range; false (nothing raised) otherwise.
    bool fast_load(PyObject* list) {
        const Py_ssize_t n = PyList_GET_SIZE(list);
        value.resize(static_cast<std::size_t>(n));
        for (Py_ssize_t i = 0; i < n; ++i) {
            PyObject* item = PyList_GET_ITEM(list, i);
            if (!PyLong_CheckExact(item)) return false;
            if constexpr (std::is_unsigned_v<T>) {
                const unsigned long long x = PyLong_AsUnsignedLongLong(item);
                if (x == static_cast<unsigned long long>(-1) && PyErr_Occurred()) {
                    PyErr_Clear();
                    return false;
                }
                if (x > std::numeric_limits<T>::max()) return false;
                value[static_cast<std::size_t>(i)] = static_cast<T>(x);
            } else {
                int overflow = 0;
                const long long x = PyLong_AsLongLongAndOverflow(item, &overflow);
                if (overflow != 0 || x < std::numeric_limits<T>::min() || x > std::numeric_limits<T>::max()) return false;
                value[static_cast<std::size_t>(i)] = static_cast<T>(x);
            }
        }
        return true;
    }
};

}  // namespace detail
}  // namespace pybind11
