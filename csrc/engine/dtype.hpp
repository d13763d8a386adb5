// Element types the engine understands, and how each is loaded into and stored from the
// type the kernels compute in. bfloat16 and float16 are computed in float32 and rounded
// once (round to nearest even) when stored; NaN stays NaN.
#pragma once

#include <cstdlib>
#include <cstdint>
#include <cstring>
#include <type_traits>

// NORMREG_KERNEL marks a chunk-level kernel: on x86-64 with GCC or Clang it is compiled
// twice (AVX2 and baseline x86-64) and the loader picks the clone the CPU supports, so a
// portable wheel still runs 256-bit vector loops. FP contraction is off in the build, so
// both clones round alike (sums may differ only in their vector reduction order).
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && defined(__linux__)
#define NORMREG_KERNEL __attribute__((target_clones("avx2", "default")))
#define NORMREG_HAS_DISPATCH 1
#else
#define NORMREG_KERNEL
#define NORMREG_HAS_DISPATCH 0
#endif

namespace normreg::engine {

// The vector width the kernels run with on this CPU.
inline const char* simd_level() noexcept {
#if NORMREG_HAS_DISPATCH
    return __builtin_cpu_supports("avx2") ? "avx2 (runtime dispatch)" : "x86-64 baseline (runtime dispatch)";
#else
    return "compiler default (no runtime dispatch)";
#endif
}

enum class DType : int { Float32 = 0, Float64 = 1, BFloat16 = 2, Float16 = 3 };

struct bf16 { std::uint16_t bits; };
struct f16 { std::uint16_t bits; };

inline float bits_to_float(std::uint32_t u) noexcept { float f; std::memcpy(&f, &u, 4); return f; }
inline std::uint32_t float_to_bits(float f) noexcept { std::uint32_t u; std::memcpy(&u, &f, 4); return u; }

inline float load_bf16(std::uint16_t h) noexcept { return bits_to_float(static_cast<std::uint32_t>(h) << 16); }
inline std::uint16_t store_bf16(float f) noexcept {
    std::uint32_t u = float_to_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((u >> 16) | 0x40u);  // quiet NaN
    u += 0x7fffu + ((u >> 16) & 1u);
    return static_cast<std::uint16_t>(u >> 16);
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
template <> inline float load<bf16>(bf16 v) noexcept { return load_bf16(v.bits); }
template <> inline float load<f16>(f16 v) noexcept { return load_f16(v.bits); }

template <class T> inline T store(compute_t<T> v) noexcept { return v; }
template <> inline bf16 store<bf16>(float v) noexcept { return bf16{store_bf16(v)}; }
template <> inline f16 store<f16>(float v) noexcept { return f16{store_f16(v)}; }

template <class T> struct type_tag { using type = T; };

// Calls f(type_tag<T>{}) with T the storage type for `dt`.
template <class F> inline decltype(auto) dispatch(DType dt, F&& f) {
    switch (dt) {
        case DType::Float64: return f(type_tag<double>{});
        case DType::BFloat16: return f(type_tag<bf16>{});
        case DType::Float16: return f(type_tag<f16>{});
        case DType::Float32: return f(type_tag<float>{});
    }
    // Unreachable: the bindings refuse every other code (make_list, parse_dtype). Never
    // guess a dtype: a wrong guess reads the memory as the wrong type.
    std::abort();
}

inline int dtype_size(DType dt) noexcept {
    switch (dt) {
        case DType::Float64: return 8;
        case DType::BFloat16: case DType::Float16: return 2;
        case DType::Float32: return 4;
    }
    std::abort();  // unreachable, as in dispatch()
}

}  // namespace normreg::engine
