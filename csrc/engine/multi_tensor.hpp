// The multi-tensor engine: the one place that knows how a list of tensors is cut into
// chunks and run in parallel.
//
// Every op hands the engine a TensorList (pointer, element count, dtype per tensor). The
// engine cuts each tensor into chunks of kChunk elements, runs ONE OpenMP parallel loop
// over all chunks of all tensors, and, for reductions, keeps one partial per chunk that is
// combined in chunk order afterwards, so results are bitwise identical for any thread count.
// Nothing here throws inside a parallel region.
#pragma once
#include <cstdint>
#include <vector>

#include "engine/dtype.hpp"
#include "engine/threads.hpp"

namespace normreg::engine {

constexpr std::int64_t kChunk = 1 << 16;  // 64K elements

struct TensorRef {
    void* data;
    std::int64_t numel;
    DType dtype;
};

using TensorList = std::vector<TensorRef>;

struct Chunk {
    std::int32_t tensor;  // index into the TensorList
    std::int64_t begin;   // first element
    std::int64_t end;     // one past the last element
};

inline std::vector<Chunk> plan_chunks(const TensorList& tensors, std::int64_t chunk = kChunk) {
    std::vector<Chunk> plan;
    std::size_t n = 0;
    for (const auto& t : tensors) n += static_cast<std::size_t>((t.numel + chunk - 1) / chunk);
    plan.reserve(n);
    for (std::size_t i = 0; i < tensors.size(); ++i)
        for (std::int64_t b = 0; b < tensors[i].numel; b += chunk)
            plan.push_back(Chunk{static_cast<std::int32_t>(i), b, b + chunk < tensors[i].numel ? b + chunk : tensors[i].numel});
    return plan;
}

// Below this many elements a call runs on the calling thread: waking a thread team costs
// more than the work (and the result is the same either way).
constexpr std::int64_t kMinParallelWork = 1 << 15;

// Runs f(index) for every index in [0, n) on the engine's threads (serially when `work`,
// the number of elements behind the n items, is too small to pay for a thread team).
// For items of about equal size (row blocks of an image, tensors of a Condat pass).
template <class F>
inline void parallel_for(std::int64_t n, F&& f, std::int64_t work = kMinParallelWork) {
    const int nt = num_threads();
    if (n <= 1 || nt <= 1 || work < kMinParallelWork) {
        for (std::int64_t i = 0; i < n; ++i) f(i);
        return;
    }
#pragma omp parallel for schedule(static) num_threads(nt)
    for (std::int64_t i = 0; i < n; ++i) f(i);
}

// Runs f(index) for every item of a plan whose item i covers the elements
// [prefix[i], prefix[i+1]) (prefix has n + 1 entries, prefix[0] = 0). Each thread takes one
// contiguous run of items holding about 1/nt of the elements: a list such as 100 big tensors
// followed by 100 biases, or weights and biases interleaved, is split by work, not by item
// count (schedule(static) over items would give one thread all the big ones). The split
// only decides who computes an item; every item's result is the same for any thread count.
template <class F>
inline void parallel_for_balanced(const std::vector<std::int64_t>& prefix, F&& f) {
    const std::int64_t n = static_cast<std::int64_t>(prefix.size()) - 1;
    if (n <= 0) return;
    const std::int64_t total = prefix.back();
    int nt = num_threads();
    if (nt > n) nt = static_cast<int>(n);
    if (n <= 1 || nt <= 1 || total < kMinParallelWork) {
        for (std::int64_t i = 0; i < n; ++i) f(i);
        return;
    }
#pragma omp parallel num_threads(nt)
    {
#ifdef _OPENMP
        const std::int64_t t = omp_get_thread_num(), team = omp_get_num_threads();
#else
        const std::int64_t t = 0, team = 1;
#endif
        // item i belongs to thread floor(mid_i * team / total), mid_i = its middle element;
        // first(k) = the first item whose doubled middle reaches 2 * total * k / team.
        auto first = [&](std::int64_t k) {
            std::int64_t lo = 0, hi = n;
            while (lo < hi) {
                const std::int64_t m = lo + (hi - lo) / 2;
                const std::int64_t mid2 = prefix[static_cast<std::size_t>(m)] + prefix[static_cast<std::size_t>(m + 1)];
                if (static_cast<double>(mid2) * static_cast<double>(team) < 2.0 * static_cast<double>(total) * static_cast<double>(k)) lo = m + 1;
                else hi = m;
            }
            return lo;
        };
        const std::int64_t b = first(t), e = t + 1 == team ? n : first(t + 1);
        for (std::int64_t i = b; i < e; ++i) f(i);
    }
}

inline std::vector<std::int64_t> chunk_prefix(const std::vector<Chunk>& plan) {
    std::vector<std::int64_t> prefix(plan.size() + 1, 0);
    for (std::size_t i = 0; i < plan.size(); ++i) prefix[i + 1] = prefix[i] + (plan[i].end - plan[i].begin);
    return prefix;
}

// Runs f(index) for every chunk index of `plan`, balanced by elements.
template <class F>
inline void parallel_for_chunks(const std::vector<Chunk>& plan, F&& f) {
    parallel_for_balanced(chunk_prefix(plan), f);
}

// Applies f(chunk) to every chunk of every tensor.
template <class F>
inline void for_each_chunk(const std::vector<Chunk>& plan, F&& f) {
    parallel_for_chunks(plan, [&](std::int64_t i) { f(plan[static_cast<std::size_t>(i)]); });
}

// Reduction: f(chunk) -> R for every chunk, then combine(acc, r) per tensor in chunk order.
// The result is one R per tensor, identical for any thread count.
template <class R, class F, class C>
inline std::vector<R> reduce_per_tensor(const std::vector<Chunk>& plan, std::size_t ntensors, R init, F&& f, C&& combine) {
    std::vector<R> partial(plan.size(), init);
    parallel_for_chunks(plan, [&](std::int64_t i) { partial[static_cast<std::size_t>(i)] = f(plan[static_cast<std::size_t>(i)]); });
    std::vector<R> out(ntensors, init);
    for (std::size_t i = 0; i < plan.size(); ++i) out[static_cast<std::size_t>(plan[i].tensor)] = combine(out[static_cast<std::size_t>(plan[i].tensor)], partial[i]);
    return out;
}

// Typed pointer to a tensor's data.
template <class T>
inline T* data_as(const TensorRef& t) noexcept {
    return static_cast<T*>(t.data);
}

// ---- grouped iteration -------------------------------------------------------------
// A contiguous tensor viewed as (outer, groups, inner): group g is every slice [o, g, :].
// Group reductions run in parallel over blocks of groups; within a group the order is
// fixed (o ascending, then inner ascending), so results do not depend on the thread count.
struct GroupShape {
    std::int64_t outer;
    std::int64_t groups;
    std::int64_t inner;
};

struct GroupBlock {
    std::int32_t tensor;
    std::int64_t g_begin;
    std::int64_t g_end;
};

inline std::vector<GroupBlock> plan_groups(const std::vector<GroupShape>& shapes, std::int64_t chunk = kChunk) {
    std::vector<GroupBlock> plan;
    for (std::size_t i = 0; i < shapes.size(); ++i) {
        const auto& s = shapes[i];
        const std::int64_t per_group = s.outer * s.inner;
        if (s.groups == 0 || per_group == 0) continue;
        std::int64_t gpb = per_group >= chunk ? 1 : chunk / per_group;  // groups per block
        for (std::int64_t g = 0; g < s.groups; g += gpb)
            plan.push_back(GroupBlock{static_cast<std::int32_t>(i), g, g + gpb < s.groups ? g + gpb : s.groups});
    }
    return plan;
}

// Runs f(index) for every block of a group plan, balanced by elements.
template <class F>
inline void parallel_for_group_blocks(const std::vector<GroupBlock>& plan, const std::vector<GroupShape>& shapes, F&& f) {
    std::vector<std::int64_t> prefix(plan.size() + 1, 0);
    for (std::size_t i = 0; i < plan.size(); ++i) {
        const auto& s = shapes[static_cast<std::size_t>(plan[i].tensor)];
        prefix[i + 1] = prefix[i] + (plan[i].g_end - plan[i].g_begin) * s.outer * s.inner;
    }
    parallel_for_balanced(prefix, f);
}

template <class F>
inline void for_each_group_block(const std::vector<GroupBlock>& plan, const std::vector<GroupShape>& shapes, F&& f) {
    parallel_for_group_blocks(plan, shapes, [&](std::int64_t i) { f(plan[static_cast<std::size_t>(i)]); });
}

}  // namespace normreg::engine
