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

// The conversions and bit helpers are inlined into every kernel loop whatever the inliner's
// size estimate: the branch-free float16 conversions are large enough that GCC otherwise kept
// a call to penalized_grad<f16> inside the Adam loop (10x slower than the loop it replaced).
#define NORMREG_INLINE __attribute__((always_inline)) inline

namespace normreg::core {

enum class DType : int { Float32 = 0, Float64 = 1, BFloat16 = 2, Float16 = 3 };

// The 16-bit storage types as scoped enums over their bits, not structs: a scalar type, so a
// value copied inside an `omp simd` loop (`const T r = store<T>(x); w[i] = r;`) stays a scalar
// copy. With a struct GCC privatized it as an aggregate per lane and left every such bf16 /
// f16 loop scalar: the bf16 prox and optimizer passes ran 7-13x slower than float32's.
enum class bf16 : std::uint16_t {};
enum class f16 : std::uint16_t {};
NORMREG_INLINE std::uint16_t bits_of(bf16 v) noexcept { return static_cast<std::uint16_t>(v); }
NORMREG_INLINE std::uint16_t bits_of(f16 v) noexcept { return static_cast<std::uint16_t>(v); }

NORMREG_INLINE float bits_to_float(std::uint32_t u) noexcept { float f; std::memcpy(&f, &u, 4); return f; }
NORMREG_INLINE std::uint32_t float_to_bits(float f) noexcept { std::uint32_t u; std::memcpy(&u, &f, 4); return u; }

// c ? a : b with masks, for the float16 conversions: a select GCC vectorizes (their ?: chains
// were turned into control flow, and every float16 loop stayed scalar).
NORMREG_INLINE std::uint32_t select_bits(bool c, std::uint32_t a, std::uint32_t b) noexcept {
    const std::uint32_t m = 0u - static_cast<std::uint32_t>(c);
    return (a & m) | (b & ~m);
}

NORMREG_INLINE float load_bf16(std::uint16_t h) noexcept { return bits_to_float(static_cast<std::uint32_t>(h) << 16); }
// Round to nearest even; a NaN stays a (quiet) NaN. Both results are formed and one is taken
// (GCC vectorizes this ?: as a blend; select_bits measured 15% slower here).
NORMREG_INLINE std::uint16_t store_bf16(float f) noexcept {
    const std::uint32_t u = float_to_bits(f);
    const std::uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    const std::uint32_t quiet_nan = (u >> 16) | 0x40u;
    return static_cast<std::uint16_t>((u & 0x7fffffffu) > 0x7f800000u ? quiet_nan : rounded);
}

// float16 <-> float, round to nearest even on store, NaN kept (quiet), overflow to inf,
// subnormals both ways. Branch-free (every case is formed and one is selected) so that loops
// loading or storing float16 vectorize; checked equal, bit for bit, to the branchy versions
// they replaced over all 2^16 halves and all 2^32 floats.
NORMREG_INLINE float load_f16(std::uint16_t h) noexcept {
    const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
    const std::uint32_t exp = (h >> 10) & 0x1fu;
    const std::uint32_t man = h & 0x3ffu;
    const std::uint32_t normal = sign | ((exp + 112u) << 23) | (man << 13);
    const std::uint32_t inf_nan = sign | 0x7f800000u | (man << 13);
    // subnormal (and zero): man * 2^-24, exact in float
    const std::uint32_t sub = sign | float_to_bits(static_cast<float>(static_cast<std::int32_t>(man)) * 5.9604644775390625e-08f);
    return bits_to_float(select_bits(exp == 0x1fu, inf_nan, select_bits(exp == 0u, sub, normal)));
}

NORMREG_INLINE std::uint16_t store_f16(float f) noexcept {
    const std::uint32_t all = float_to_bits(f);
    const std::uint32_t sign = (all >> 16) & 0x8000u;
    const std::uint32_t u = all & 0x7fffffffu;
    // below 2^-14 (subnormal or zero): adding 0.5 makes the FPU round the mantissa to nearest
    // even at 2^-24 steps
    const std::uint32_t sub = float_to_bits(bits_to_float(u) + 0.5f) - 0x3f000000u;
    // normal: rebias the exponent (-112 << 23) and round to nearest even
    const std::uint32_t normal = (u + 0xc8000fffu + ((u >> 13) & 1u)) >> 13;
    std::uint32_t r = select_bits(u < 0x38800000u, sub, normal);
    r = select_bits(u >= 0x477ff000u, 0x7c00u, r);  // overflow -> inf
    r = select_bits(u > 0x7f800000u, 0x7e00u, r);   // NaN
    return static_cast<std::uint16_t>(sign | r);
}

// Compute type for each storage type.
template <class T> struct compute { using type = T; };
template <> struct compute<bf16> { using type = float; };
template <> struct compute<f16> { using type = float; };
template <class T> using compute_t = typename compute<T>::type;

template <class T> NORMREG_INLINE compute_t<T> load(T v) noexcept { return v; }
template <> NORMREG_INLINE float load<bf16>(bf16 v) noexcept { return load_bf16(bits_of(v)); }
template <> NORMREG_INLINE float load<f16>(f16 v) noexcept { return load_f16(bits_of(v)); }

template <class T> NORMREG_INLINE T store(compute_t<T> v) noexcept { return v; }
template <> NORMREG_INLINE bf16 store<bf16>(float v) noexcept { return static_cast<bf16>(store_bf16(v)); }
template <> NORMREG_INLINE f16 store<f16>(float v) noexcept { return static_cast<f16>(store_f16(v)); }

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
