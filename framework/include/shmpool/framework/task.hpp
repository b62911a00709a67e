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

#include <string>
#include <string_view>
#include <tuple>
#include <utility>

#include "shmpool/framework/codec.hpp"
#include "shmpool/framework/detail/task_entry.hpp"

namespace shmpool {

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
