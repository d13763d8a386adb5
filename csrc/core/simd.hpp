// How the kernels are vectorized: the target_clones markers and the level picked at load.
// Includes nothing of the project.
#pragma once

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

// The optimizer kernels use std::fma: their x86-64 clone targets x86-64-v3 (AVX2 + FMA,
// every CPU on which torch picks its AVX2 kernels), so the fused multiply-adds vectorize.
#if NORMREG_HAS_DISPATCH
#define NORMREG_FMA_KERNEL __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define NORMREG_FMA_KERNEL
#endif

namespace normreg::core {

// The vector width the kernels run with on this CPU.
inline const char* simd_level() noexcept {
#if NORMREG_HAS_DISPATCH
    return __builtin_cpu_supports("avx2") ? "avx2 (runtime dispatch)" : "x86-64 baseline (runtime dispatch)";
#else
    return "compiler default (no runtime dispatch)";
#endif
}

}  // namespace normreg::core
