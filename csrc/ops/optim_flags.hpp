// The compile-time flag dispatch of the optimizer drivers (ops/sgd.cpp, ops/adam.cpp):
// f(integral_constant<int, k>) for a run-time k. Private to csrc/ops.
#pragma once
#include <type_traits>

namespace normreg::ops::flags {

// f(integral_constant<int, k>) for the fused penalty kinds k in {0, 1, 2, 3} (kernels::ProxKind).
template <class F>
decltype(auto) penalty(int kind, F&& f) {
    switch (kind) {
        case 1: return f(std::integral_constant<int, 1>{});
        case 2: return f(std::integral_constant<int, 2>{});
        case 3: return f(std::integral_constant<int, 3>{});
        default: return f(std::integral_constant<int, 0>{});
    }
}

template <class F>
decltype(auto) boolean(bool b, F&& f) {
    return b ? f(std::true_type{}) : f(std::false_type{});
}

// boolean(b, f) where the flag can matter (Enabled), else f(false_type) only: a flag that
// does not apply is not instantiated twice.
template <bool Enabled, class F>
decltype(auto) boolean_if(bool b, F&& f) {
    if constexpr (Enabled) return boolean(b, static_cast<F&&>(f));
    else return (void)b, f(std::false_type{});
}

}  // namespace normreg::ops::flags
