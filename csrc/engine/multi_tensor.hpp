// The multi-tensor applier: the one place that knows how lists of tensors are cut into
// chunks and run in parallel (in the spirit of apex's multi_tensor_apply and ATen's foreach
// kernels; the op is a functor).
//
// An op driver hands the applier up to a few paired TensorLists (pointer, element count,
// dtype per tensor; the first list decides the sizes and dtypes, the others pair with it
// element by element, or are empty when absent) and a functor. The applier checks every
// dtype (std::invalid_argument, before any thread starts), cuts each tensor into chunks of
// kChunk elements, runs ONE OpenMP parallel loop over all chunks of all tensors, split by
// work, and calls the functor once per chunk with typed pointers:
//
//     op(ChunkRef<T, N>{ {list0 + begin, list1 + begin, ...}, n, begin, tensor })
//
// A reduction keeps one partial per chunk and combines them per tensor in chunk order, so
// results are bitwise identical for any thread count. Nothing here throws or allocates
// inside a parallel region; the plan, prefix and partial buffers are kept per calling
// thread and reused from call to call.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <utility>
#include <vector>

#include "core/dtype.hpp"
#include "core/threads.hpp"

namespace normreg::engine {

using core::DType;
using core::dispatch;
using core::dispatch_checked;
using core::num_threads;
using core::type_tag;

constexpr std::int64_t kChunk = 1 << 16;  // 64K elements

struct TensorRef {
    void* data;
    std::int64_t numel;
    DType dtype;
};

using TensorList = std::vector<TensorRef>;

// Typed pointer to a tensor's data.
template <class T>
inline T* data_as(const TensorRef& t) noexcept {
    return static_cast<T*>(t.data);
}

// Throws std::invalid_argument if a tensor of `w` has an unknown dtype code (the bindings
// refuse them first; this keeps the engine from reading memory as a guessed type).
inline void check_dtypes(const TensorList& w) {
    for (const auto& t : w)
        if (!core::valid_dtype(t.dtype)) core::throw_bad_dtype(t.dtype);
}

// ---- parallel loops -----------------------------------------------------------------

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
inline void parallel_for_balanced(const std::int64_t* prefix, std::int64_t n, F&& f) {
    if (n <= 0) return;
    const std::int64_t total = prefix[n];
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
                const std::int64_t mid2 = prefix[m] + prefix[m + 1];
                if (static_cast<double>(mid2) * static_cast<double>(team) < 2.0 * static_cast<double>(total) * static_cast<double>(k)) lo = m + 1;
                else hi = m;
            }
            return lo;
        };
        const std::int64_t b = first(t), e = t + 1 == team ? n : first(t + 1);
        for (std::int64_t i = b; i < e; ++i) f(i);
    }
}

template <class F>
inline void parallel_for_balanced(const std::vector<std::int64_t>& prefix, F&& f) {
    parallel_for_balanced(prefix.data(), static_cast<std::int64_t>(prefix.size()) - 1, f);
}

// ---- chunk plans ----------------------------------------------------------------------

struct Chunk {
    std::int32_t tensor;  // index into the TensorList
    std::int64_t begin;   // first element
    std::int64_t end;     // one past the last element
};

// The chunks of every tensor of a list, in list order, and the running element count
// (prefix[i] = elements before chunk i; prefix.back() = all elements).
struct ChunkPlan {
    std::vector<Chunk> chunks;
    std::vector<std::int64_t> prefix;

    std::size_t size() const noexcept { return chunks.size(); }
    const Chunk& operator[](std::size_t i) const noexcept { return chunks[i]; }

    void build(const TensorList& tensors, std::int64_t chunk = kChunk) {
        chunks.clear();
        prefix.clear();
        std::size_t n = 0;
        for (const auto& t : tensors) n += static_cast<std::size_t>((t.numel + chunk - 1) / chunk);
        chunks.reserve(n);
        prefix.reserve(n + 1);
        prefix.push_back(0);
        for (std::size_t i = 0; i < tensors.size(); ++i)
            for (std::int64_t b = 0; b < tensors[i].numel; b += chunk) {
                const std::int64_t e = b + chunk < tensors[i].numel ? b + chunk : tensors[i].numel;
                chunks.push_back(Chunk{static_cast<std::int32_t>(i), b, e});
                prefix.push_back(prefix.back() + (e - b));
            }
    }
};

// A plan for `tensors`, kept by the calling thread and rebuilt in place (no allocation once
// its buffers are large enough). Valid until the calling thread's next call of chunk_plan
// with the same slot; drivers that hold two plans at once use two slots.
inline const ChunkPlan& chunk_plan(const TensorList& tensors, int slot = 0) {
    static thread_local ChunkPlan plans[2];
    ChunkPlan& p = plans[slot & 1];
    p.build(tensors);
    return p;
}

// Runs f(index) for every chunk index of `plan`, balanced by elements.
template <class F>
inline void parallel_for_chunks(const ChunkPlan& plan, F&& f) {
    parallel_for_balanced(plan.prefix.data(), static_cast<std::int64_t>(plan.size()), f);
}

// A buffer of n values of R kept by the calling thread (one per R), reused across calls.
template <class R>
inline R* scratch(std::size_t n, int slot = 0) {
    static thread_local std::vector<R> buf[2];
    auto& b = buf[slot & 1];
    if (b.size() < n) b.resize(n);
    return b.data();
}

// ---- the applier ------------------------------------------------------------------------

// One chunk of N paired lists as the functor sees it: typed pointers at the chunk's first
// element (nullptr for an absent list), its length, its offset in the tensor and the
// tensor's index in the lists (for per-tensor parameters).
template <class T, std::size_t N>
struct ChunkRef {
    using type = T;
    std::array<T*, N> p;
    std::int64_t n;
    std::int64_t begin;
    std::size_t tensor;
};

template <std::size_t N>
using Lists = std::array<const TensorList*, N>;

namespace detail {

template <class T, std::size_t N>
inline ChunkRef<T, N> make_ref(const Lists<N>& lists, const Chunk& c) noexcept {
    ChunkRef<T, N> r;
    const std::size_t ti = static_cast<std::size_t>(c.tensor);
    for (std::size_t k = 0; k < N; ++k) {
        const TensorList* l = lists[k];
        r.p[k] = (l != nullptr && !l->empty()) ? data_as<T>((*l)[ti]) + c.begin : nullptr;
    }
    r.n = c.end - c.begin;
    r.begin = c.begin;
    r.tensor = ti;
    return r;
}

}  // namespace detail

// The lower level: op(ChunkRef<T, N>, chunk index) for every chunk of `plan`, a plan of
// lists[0] (chunk_plan), in one parallel loop. For drivers that need the per-chunk results
// themselves (offsets of a gather); the dtypes must have been checked (check_dtypes).
template <std::size_t N, class Op>
inline void multi_tensor_apply_plan(const Lists<N>& lists, const ChunkPlan& plan, Op&& op) {
    parallel_for_chunks(plan, [&](std::int64_t i) {
        const Chunk& c = plan[static_cast<std::size_t>(i)];
        dispatch_checked((*lists[0])[static_cast<std::size_t>(c.tensor)].dtype, [&](auto tag) {
            using T = typename decltype(tag)::type;
            op(detail::make_ref<T, N>(lists, c), i);
        });
    });
}

// Reduction over paired lists: r_c = op(chunk c) for every chunk of every tensor of
// lists[0], then out[t] = combine(... combine(init, r_first) ..., r_last) over the chunks
// of tensor t in chunk order. One R per tensor, identical for any thread count.
template <class R, std::size_t N, class Op, class Combine>
inline std::vector<R> multi_tensor_reduce(const Lists<N>& lists, R init, Op&& op, Combine&& combine) {
    const TensorList& w = *lists[0];
    check_dtypes(w);
    const ChunkPlan& plan = chunk_plan(w);
    const std::size_t nc = plan.size();
    R* partial = scratch<R>(nc);
    multi_tensor_apply_plan<N>(lists, plan, [&](const auto& c, std::int64_t i) { partial[i] = op(c); });
    std::vector<R> out(w.size(), init);
    for (std::size_t i = 0; i < nc; ++i) {
        R& o = out[static_cast<std::size_t>(plan[i].tensor)];
        o = combine(o, partial[i]);
    }
    return out;
}

// Elementwise pass over paired lists: op(chunk) for every chunk, nothing returned.
template <std::size_t N, class Op>
inline void multi_tensor_apply(const Lists<N>& lists, Op&& op) {
    const TensorList& w = *lists[0];
    check_dtypes(w);
    multi_tensor_apply_plan<N>(lists, chunk_plan(w), [&](const auto& c, std::int64_t) { op(c); });
}

// Sum of per-chunk integer counts (zeros written, elements above a bound): the common
// reduction of the in-place ops.
template <std::size_t N, class Op>
inline std::vector<std::int64_t> multi_tensor_count(const Lists<N>& lists, Op&& op) {
    return multi_tensor_reduce<std::int64_t, N>(lists, std::int64_t{0}, op, [](std::int64_t a, std::int64_t b) { return a + b; });
}

// ---- grouped iteration -------------------------------------------------------------
// A contiguous tensor viewed as (outer, groups, inner): group g is every slice [o, g, :].
// Group ops run in parallel over blocks of groups, through the same balanced loop; within
// a group the order is fixed (o ascending, then inner ascending), so results do not depend
// on the thread count.
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

struct GroupPlan {
    std::vector<GroupBlock> blocks;
    std::vector<std::int64_t> prefix;
    std::size_t size() const noexcept { return blocks.size(); }
    const GroupBlock& operator[](std::size_t i) const noexcept { return blocks[i]; }
};

inline GroupPlan plan_groups(const std::vector<GroupShape>& shapes, std::int64_t chunk = kChunk) {
    GroupPlan plan;
    plan.prefix.push_back(0);
    for (std::size_t i = 0; i < shapes.size(); ++i) {
        const auto& s = shapes[i];
        const std::int64_t per_group = s.outer * s.inner;
        if (s.groups == 0 || per_group == 0) continue;
        std::int64_t gpb = per_group >= chunk ? 1 : chunk / per_group;  // groups per block
        for (std::int64_t g = 0; g < s.groups; g += gpb) {
            const std::int64_t e = g + gpb < s.groups ? g + gpb : s.groups;
            plan.blocks.push_back(GroupBlock{static_cast<std::int32_t>(i), g, e});
            plan.prefix.push_back(plan.prefix.back() + (e - g) * per_group);
        }
    }
    return plan;
}

// Group-block applier over a list: op(type_tag<T>, block) for every block, T the dtype of
// the block's tensor in w (checked first). A reduction returns one R per block in plan
// order (the caller combines them, in that order).
template <class Op>
inline void group_apply(const TensorList& w, const GroupPlan& plan, Op&& op) {
    check_dtypes(w);
    parallel_for_balanced(plan.prefix.data(), static_cast<std::int64_t>(plan.size()), [&](std::int64_t i) {
        const GroupBlock& blk = plan[static_cast<std::size_t>(i)];
        dispatch_checked(w[static_cast<std::size_t>(blk.tensor)].dtype, [&](auto tag) { op(tag, blk); });
    });
}

// Per-tensor sum of the int64 counts op(type_tag<T>, block) returns, combined in plan order.
template <class Op>
inline std::vector<std::int64_t> group_count(const TensorList& w, const GroupPlan& plan, Op&& op) {
    check_dtypes(w);
    std::int64_t* partial = scratch<std::int64_t>(plan.size(), 1);
    parallel_for_balanced(plan.prefix.data(), static_cast<std::int64_t>(plan.size()), [&](std::int64_t i) {
        const GroupBlock& blk = plan[static_cast<std::size_t>(i)];
        partial[i] = dispatch_checked(w[static_cast<std::size_t>(blk.tensor)].dtype, [&](auto tag) -> std::int64_t { return op(tag, blk); });
    });
    std::vector<std::int64_t> out(w.size(), 0);
    for (std::size_t i = 0; i < plan.size(); ++i) out[static_cast<std::size_t>(plan[i].tensor)] += partial[i];
    return out;
}

}  // namespace normreg::engine
