// Thread count of the kernels: follows the OpenMP runtime that torch set up (torch is
// imported first, so both share one runtime) unless set_num_threads() overrides it.
#pragma once
#include <atomic>
#ifdef _OPENMP
#include <omp.h>
#endif

namespace normreg::core {

inline std::atomic<int>& thread_override() noexcept {
    static std::atomic<int> n{0};
    return n;
}

inline void set_num_threads(int n) noexcept { thread_override().store(n < 0 ? 0 : n); }

inline int num_threads() noexcept {
    int n = thread_override().load();
    if (n > 0) return n;
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

inline bool openmp_enabled() noexcept {
#ifdef _OPENMP
    return true;
#else
    return false;
#endif
}

}  // namespace normreg::core
