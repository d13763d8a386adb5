// Element types the kernels understand, and how each is loaded into and stored from the
// type the kernels compute in. bfloat16 and float16 are computed in float32 and rounded
// once (round to nearest even) when stored; NaN stays NaN. The bottom of the house:
// includes only the standard library.
#pragma once

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>

namespace normreg::core {

enum class DType : int { Float32 = 0, Float64 = 1, BFloat16 = 2, Float16 = 3 };

// The 16-bit storage types as scoped enums over their bits, not structs: a scalar type, so a
// value copied inside an `omp simd` loop (`const T r = store<T>(x); w[i] = r;`) stays a scalar
// copy. With a struct GCC privatized it as an aggregate per lane and left every such bf16 /
// f16 loop scalar: the bf16 prox and optimizer passes ran 7-13x slower than float32's.
enum class bf16 : std::uint16_t {};
enum class f16 : std::uint16_t {};
inline std::uint16_t bits_of(bf16 v) noexcept { return static_cast<std::uint16_t>(v); }
inline std::uint16_t bits_of(f16 v) noexcept { return static_cast<std::uint16_t>(v); }

inline float bits_to_float(std::uint32_t u) noexcept { float f; std::memcpy(&f, &u, 4); return f; }
inline std::uint32_t float_to_bits(float f) noexcept { std::uint32_t u; std::memcpy(&u, &f, 4); return u; }

inline float load_bf16(std::uint16_t h) noexcept { return bits_to_float(static_cast<std::uint32_t>(h) << 16); }
// Round to nearest even; a NaN stays a (quiet) NaN. Branch-free: both results are formed and
// one is selected, so loops that store bf16 vectorize (with an early return for NaN, GCC left
// them scalar: a bf16 optimizer step ran 7-13x slower than the float32 one).
inline std::uint16_t store_bf16(float f) noexcept {
    const std::uint32_t u = float_to_bits(f);
    const std::uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    const std::uint32_t quiet_nan = (u >> 16) | 0x40u;
    return static_cast<std::uint16_t>((u & 0x7fffffffu) > 0x7f800000u ? quiet_nan : rounded);
}

inline float load_f16(std::uint16_t h) noexcept {
    const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
    const std::uint32_t exp = (h >> 10) & 0x1fu;
    std::uint32_t man = h & 0x3ffu;
    if (exp == 0x1f) return bits_to_float(sign | 0x7f800000u | (man << 13));  // inf / nan
    if (exp == 0) {
        if (man == 0) return bits_to_float(sign);
        // subnormal: value = man * 2^-24
        float v = static_cast<float>(man) * 5.9604644775390625e-08f;
        return sign ? -v : v;
    }
    return bits_to_float(sign | ((exp + 112u) << 23) | (man << 13));
}

inline std::uint16_t store_f16(float f) noexcept {
    std::uint32_t u = float_to_bits(f);
    const std::uint16_t sign = static_cast<std::uint16_t>((u >> 16) & 0x8000u);
    u &= 0x7fffffffu;
    if (u > 0x7f800000u) return static_cast<std::uint16_t>(sign | 0x7e00u);            // NaN
    if (u >= 0x477ff000u) return static_cast<std::uint16_t>(sign | 0x7c00u);           // overflow -> inf
    if (u < 0x38800000u) {                                                              // subnormal or zero
        // add 0.5 (as float) so the FPU rounds the mantissa to nearest even at 2^-24 steps
        float a = bits_to_float(u) + 0.5f;
        return static_cast<std::uint16_t>(sign | (float_to_bits(a) - 0x3f000000u));
    }
    const std::uint32_t odd = (u >> 13) & 1u;
    u += 0xc8000fffu + odd;  // rebias exponent (-112 << 23) and round to nearest even
    return static_cast<std::uint16_t>(sign | (u >> 13));
}

// Compute type for each storage type.
template <class T> struct compute { using type = T; };
template <> struct compute<bf16> { using type = float; };
template <> struct compute<f16> { using type = float; };
template <class T> using compute_t = typename compute<T>::type;

template <class T> inline compute_t<T> load(T v) noexcept { return v; }
template <> inline float load<bf16>(bf16 v) noexcept { return load_bf16(bits_of(v)); }
template <> inline float load<f16>(f16 v) noexcept { return load_f16(bits_of(v)); }

template <class T> inline T store(compute_t<T> v) noexcept { return v; }
template <> inline bf16 store<bf16>(float v) noexcept { return static_cast<bf16>(store_bf16(v)); }
template <> inline f16 store<f16>(float v) noexcept { return static_cast<f16>(store_f16(v)); }

template <class T> struct type_tag { using type = T; };

inline bool valid_dtype(DType dt) noexcept {
    const int c = static_cast<int>(dt);
    return c >= 0 && c <= 3;
}

// Never guess a dtype: a wrong guess reads the memory as the wrong type. The bindings refuse
// every other code (make_list, parse_dtype) with a TypeError; this is the engine's own check,
// made before any parallel region (pybind11 turns it into a ValueError).
[[noreturn]] inline void throw_bad_dtype(DType dt) {
    throw std::invalid_argument("normreg: unsupported dtype code " + std::to_string(static_cast<int>(dt)) +
                                "; use float32 (0), float64 (1), bfloat16 (2) or float16 (3)");
}

// Calls f(type_tag<T>{}) with T the storage type for `dt`, after checking `dt` (throws
// std::invalid_argument for an unknown code: never call it inside an OpenMP region).
template <class F> inline decltype(auto) dispatch(DType dt, F&& f) {
    switch (dt) {
        case DType::Float64: return f(type_tag<double>{});
        case DType::BFloat16: return f(type_tag<bf16>{});
        case DType::Float16: return f(type_tag<f16>{});
        case DType::Float32: return f(type_tag<float>{});
    }
    throw_bad_dtype(dt);
}

// The same for a dtype already checked (valid_dtype, or the applier's check of its lists):
// safe inside a parallel region. An unknown code here is a bug of the caller.
template <class F> inline decltype(auto) dispatch_checked(DType dt, F&& f) noexcept {
    switch (dt) {
        case DType::Float64: return f(type_tag<double>{});
        case DType::BFloat16: return f(type_tag<bf16>{});
        case DType::Float16: return f(type_tag<f16>{});
        case DType::Float32: break;
    }
    return f(type_tag<float>{});  // Float32 (the only code left after the caller's check)
}

inline int dtype_size(DType dt) {
    switch (dt) {
        case DType::Float64: return 8;
        case DType::BFloat16: case DType::Float16: return 2;
        case DType::Float32: return 4;
    }
    throw_bad_dtype(dt);
}

}  // namespace normreg::core
