// Tasks: functions registered under a stable name, so that a worker process (the same program,
// re-executed) can call them by name.
//
//   int square(int x) { return x * x; }
//   SHMPOOL_TASK(square_task, square);       // at namespace scope; the task is named "square_task"
//   auto f = pool.submit(square_task, 7);    // f.get() == 49
//
// Arguments and results travel through shmpool::Codec (codec.hpp). Parameters may be values or
// const references; a task may return void.
#pragma once

#include <atomic>
#include <cstdint>
#include <cstring>
#include <exception>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>

#include "shmpool/framework/codec.hpp"

namespace shmpool {

namespace detail {

/// Decodes the arguments, calls the function, encodes the result (exceptions propagate).
using Invoker = void (*)(Reader& args, std::string& result);

/// Runs items [i, count) of a packed chunk: item k's one argument is the `in_stride` bytes at
/// in + k * in_stride, its result goes to out + k * out_stride. Before each item it stamps
/// `started` (if not null) with the monotonic clock, after it stores k + 1 in `completed`, so the
/// parent can attribute a crash to the item. An exception propagates with `i` on the item that
/// threw.
using PackedInvoker = void (*)(const char* in, char* out, std::uint32_t& i, std::uint32_t count,
                               std::atomic<std::uint32_t>* completed,
                               std::atomic<std::uint64_t>* started);

/// What a worker needs to run a task by name.
struct TaskEntry {
    Invoker invoke = nullptr;
    PackedInvoker packed = nullptr;  ///< for tasks of one raw-bytes argument and result
    std::uint32_t in_stride = 0;     ///< sizeof the argument (packed tasks)
    std::uint32_t out_stride = 0;    ///< sizeof the result, 0 for void (packed tasks)
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

/// CLOCK_MONOTONIC in nanoseconds: the clock every process of a pool shares.
std::uint64_t monotonic_ns() noexcept;

/// Whether T travels as its bytes alone (the built-in codec of trivially copyable types).
template <class T>
constexpr bool raw_codec_v = [] {
    if constexpr (requires { Codec<T>::raw_bytes; })
        return Codec<T>::raw_bytes;
    else
        return false;
}();

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

/// Whether a task can run packed chunks: one argument and a result (or void) that are raw bytes.
template <auto Fn>
constexpr bool packable_v = [] {
    using Traits = FunctionTraits<decltype(Fn)>;
    using R = typename Traits::Result;
    if constexpr (std::tuple_size_v<typename Traits::Arguments> != 1) {
        return false;
    } else {
        using A = std::tuple_element_t<0, typename Traits::Arguments>;
        return raw_codec_v<A> && std::is_default_constructible_v<A> &&
               (std::is_void_v<R> || raw_codec_v<R>);
    }
}();

// The packed fast path of Pool::map: no per-item length, record or allocation.
template <auto Fn>
void invoke_packed(const char* in, char* out, std::uint32_t& i, std::uint32_t count,
                   std::atomic<std::uint32_t>* completed, std::atomic<std::uint64_t>* started) {
    using Traits = FunctionTraits<decltype(Fn)>;
    using A = std::tuple_element_t<0, typename Traits::Arguments>;
    using R = typename Traits::Result;
    for (; i < count; ++i) {
        if (started) started->store(monotonic_ns(), std::memory_order_release);
        A a;
        std::memcpy(&a, in + std::size_t{i} * sizeof(A), sizeof(A));
        if constexpr (std::is_void_v<R>) {
            Fn(a);
        } else {
            R r = Fn(a);
            std::memcpy(out + std::size_t{i} * sizeof(R), &r, sizeof(R));
        }
        completed->store(i + 1, std::memory_order_release);
    }
}

template <auto Fn>
TaskEntry task_entry() {
    TaskEntry e{&invoke<Fn>};
    if constexpr (packable_v<Fn>) {
        using Traits = FunctionTraits<decltype(Fn)>;
        using R = typename Traits::Result;
        e.packed = &invoke_packed<Fn>;
        e.in_stride = sizeof(std::tuple_element_t<0, typename Traits::Arguments>);
        if constexpr (!std::is_void_v<R>) e.out_stride = sizeof(R);
    }
    return e;
}

}  // namespace detail

/// A handle on a registered task: what Pool::submit and Pool::map take.
template <auto Fn>
class Task {
  public:
    using Traits = detail::FunctionTraits<decltype(Fn)>;
    using Result = typename Traits::Result;
    using Arguments = typename Traits::Arguments;

    /// Registers the task under `name`; noexcept, so that a Task may be a namespace-scope
    /// constant (a duplicate name is reported later, by Pool's constructor).
    explicit Task(std::string_view name) noexcept
        : name_(&detail::register_task(name, detail::task_entry<Fn>())) {}
    const std::string& name() const noexcept { return *name_; }

    /// Appends a call's arguments, encoded as the worker will decode them, to `out`.
    template <class... A>
    static void append_args(std::string& out, const A&... args) {
        static_assert(sizeof...(A) == std::tuple_size_v<Arguments>,
                      "wrong number of task arguments");
        Writer w(out);
        [&]<std::size_t... I>(std::index_sequence<I...>) {
            (Codec<std::tuple_element_t<I, Arguments>>::encode(
                 w, static_cast<std::tuple_element_t<I, Arguments>>(args)),
             ...);
        }
        (std::index_sequence_for<A...>{});
    }

  private:
    const std::string* name_;  // the registry's copy
};

}  // namespace shmpool

/// Defines `handle`, a shmpool::Task for `function`, registered under the name "handle".
#define SHMPOOL_TASK(handle, function)               \
    inline const ::shmpool::Task<&function> handle { \
#handle                                      \
    }
