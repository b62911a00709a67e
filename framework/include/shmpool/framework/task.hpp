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

/// Registers a task; std::logic_error if the name is taken by another function.
void register_task(const std::string& name, Invoker invoker);
/// The invoker registered under `name`, or nullptr.
Invoker find_task(std::string_view name) noexcept;

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

}  // namespace detail

/// A handle on a registered task: what Pool::submit and Pool::map take.
template <auto Fn>
class Task {
  public:
    using Traits = detail::FunctionTraits<decltype(Fn)>;
    using Result = typename Traits::Result;
    using Arguments = typename Traits::Arguments;

    explicit Task(std::string name) : name_(std::move(name)) {
        detail::register_task(name_, &detail::invoke<Fn>);
    }
    const std::string& name() const noexcept { return name_; }

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
    std::string name_;
};

}  // namespace shmpool

/// Defines `handle`, a shmpool::Task for `function`, registered under the name "handle".
#define SHMPOOL_TASK(handle, function)               \
    inline const ::shmpool::Task<&function> handle { \
#handle                                      \
    }
