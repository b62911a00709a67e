// How a worker calls a task by name: the registry entry, the invokers that decode arguments and
// encode results, and the packed invoker of Pool::map's fast path (not for users).
#pragma once

#include <atomic>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <typeinfo>
#include <utility>

#include "shmpool/framework/codec.hpp"
#include "shmpool/framework/detail/type_descriptor.hpp"

namespace shmpool::detail {

/// CLOCK_MONOTONIC in nanoseconds: the clock every process of a pool shares.
std::uint64_t monotonic_ns() noexcept;

/// Decodes the arguments, calls the function, encodes the result (exceptions propagate).
using Invoker = void (*)(Reader& args, std::string& result);

/// Where a packed run marks its progress, in the worker's slot: before item i it stamps the
/// item's start (only when the pool enforces timeouts), after it the items completed, so that the
/// parent can attribute a crash or a timeout to the item.
struct ItemMarks {
    std::atomic<std::uint32_t>* completed = nullptr;
    std::atomic<std::uint64_t>* started = nullptr;  // null: no timeouts, no clock read
    void start(std::uint32_t /*i*/) const noexcept {
        if (started) started->store(monotonic_ns(), std::memory_order_release);
    }
    void finish(std::uint32_t i) const noexcept {
        completed->store(i + 1, std::memory_order_release);
    }
};

/// Runs items [i, count) of a packed chunk: item k's one argument is the `in_stride` bytes at
/// in + k * in_stride, its result goes to out + k * out_stride. An exception propagates with `i`
/// on the item that threw.
using PackedInvoker = void (*)(const char* in, char* out, std::uint32_t& i, std::uint32_t count,
                               const ItemMarks& marks);

/// What a worker needs to run a task by name.
struct TaskEntry {
    Invoker invoke = nullptr;
    PackedInvoker packed = nullptr;  ///< for tasks of one raw-bytes argument and result
    std::uint32_t in_stride = 0;     ///< sizeof the argument (packed tasks)
    std::uint32_t out_stride = 0;    ///< sizeof the result, 0 for void (packed tasks)
    const char* signature = "";      ///< the function's type (the same in every rank of a job)
    /// The parameters' and result's wire types (type_descriptor.hpp), for other languages.
    std::string (*describe)() = nullptr;
};

/// Registers a task and returns its name as the registry keeps it (valid for the life of the
/// program). It never throws, since it runs during static initialisation where nothing could
/// catch: a name taken by another function is recorded, and check_task_registry() reports it.
const std::string& register_task(std::string_view name, const TaskEntry& entry) noexcept;
/// std::logic_error naming every task name registered for two different functions (Pool's
/// constructor and the worker's start-up call it); nothing if there is none.
void check_task_registry();
/// The invoker registered under `name`, or nullptr.
Invoker find_task(std::string_view name) noexcept;
/// Everything registered under `name` (all null if nothing is).
TaskEntry find_task_entry(std::string_view name) noexcept;
/// Every registered task with its wire types and packed strides, as JSON (SHMPOOL_ROLE=describe).
std::string describe_tasks();
/// A fingerprint of every registered task's name and signature: two programs whose tasks agree
/// have the same one.
std::uint64_t task_registry_fingerprint() noexcept;

template <class F>
struct FunctionTraits;
template <class R, class... Args>
struct FunctionTraits<R (*)(Args...)> {
    using Result = R;
    using Arguments = std::tuple<std::decay_t<Args>...>;
};

template <auto Fn>
void invoke(Reader& r, std::string& out) {
    using Traits = FunctionTraits<decltype(Fn)>;
    // Braced initialisation decodes left to right, in parameter order.
    auto args = [&]<class... A>(std::tuple<A...>*) {
        return std::tuple<A...>{Codec<A>::decode(r)...};
    }(static_cast<typename Traits::Arguments*>(nullptr));
    if constexpr (std::is_void_v<typename Traits::Result>) {
        std::apply(Fn, std::move(args));
    } else {
        encode(out, std::apply(Fn, std::move(args)));
    }
}

/// The largest argument or result a packed chunk carries: at least one item fits the smallest
/// slot (4 KiB, half of its response area kept for errors). Bigger ones travel as records, which
/// have no size limit.
constexpr std::size_t max_packed_stride = 1024;

/// Whether a task can run packed chunks: one argument and a result (or void) that are raw bytes.
template <auto Fn>
constexpr bool packable_v = [] {
    using Traits = FunctionTraits<decltype(Fn)>;
    using R = typename Traits::Result;
    if constexpr (std::tuple_size_v<typename Traits::Arguments> != 1) {
        return false;
    } else {
        using A = std::tuple_element_t<0, typename Traits::Arguments>;
        if constexpr (!raw_codec_v<A> || !(std::is_void_v<R> || raw_codec_v<R>)) {
            return false;
        } else {
            constexpr std::size_t result =
                std::is_void_v<R> ? 0 : sizeof(std::conditional_t<std::is_void_v<R>, char, R>);
            return std::is_default_constructible_v<A> && sizeof(A) <= max_packed_stride &&
                   result <= max_packed_stride;
        }
    }
}();

// The packed fast path of Pool::map: no per-item length, record or allocation.
template <auto Fn>
void invoke_packed(const char* in, char* out, std::uint32_t& i, std::uint32_t count,
                   const ItemMarks& marks) {
    using Traits = FunctionTraits<decltype(Fn)>;
    using A = std::tuple_element_t<0, typename Traits::Arguments>;
    using R = typename Traits::Result;
    for (; i < count; ++i) {
        marks.start(i);
        A a;
        std::memcpy(&a, in + std::size_t{i} * sizeof(A), sizeof(A));
        if constexpr (std::is_void_v<R>) {
            Fn(a);
        } else {
            R r = Fn(a);
            std::memcpy(out + std::size_t{i} * sizeof(R), &r, sizeof(R));
        }
        marks.finish(i);
    }
}

template <auto Fn>
TaskEntry task_entry() {
    using Traits = FunctionTraits<decltype(Fn)>;
    TaskEntry e{&invoke<Fn>};
    e.signature = typeid(decltype(Fn)).name();
    e.describe = [] {
        return signature_descriptor<typename Traits::Result>(
            static_cast<typename Traits::Arguments*>(nullptr));
    };
    if constexpr (packable_v<Fn>) {
        using R = typename Traits::Result;
        e.packed = &invoke_packed<Fn>;
        e.in_stride = sizeof(std::tuple_element_t<0, typename Traits::Arguments>);
        if constexpr (!std::is_void_v<R>) e.out_stride = sizeof(R);
    }
    return e;
}

}  // namespace shmpool::detail
