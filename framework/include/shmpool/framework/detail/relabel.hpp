// relabel: a pool error told in its caller's terms (imap positions, pipeline stages); not for
// users.
#pragma once

#include <cstddef>
#include <exception>
#include <string>

#include "shmpool/framework/errors.hpp"

namespace shmpool::detail {

/// `error` told in the caller's terms: a WorkerCrashed or TaskTimeout rebuilt with `item` (the
/// position the caller knows, where the pool counted within a chunk or batch) and, if `task` is
/// given, that task name; a TaskError renamed likewise; anything else as it is.
inline std::exception_ptr relabel(const std::exception_ptr& error, std::size_t item,
                                  const std::string* task = nullptr) {
    try {
        std::rethrow_exception(error);
    } catch (const TaskError& e) {
        return task ? std::make_exception_ptr(TaskError(*task, e.type(), e.message(), e.node()))
                    : error;
    } catch (const WorkerCrashed& e) {
        return std::make_exception_ptr(WorkerCrashed(task ? *task : e.task(), item, e.pid(),
                                                     e.signal(), e.exit_code(), e.attempts(),
                                                     e.node()));
    } catch (const TaskTimeout& e) {
        return std::make_exception_ptr(
            TaskTimeout(task ? *task : e.task(), item, e.seconds(), e.node()));
    } catch (...) {
        return error;
    }
}

}  // namespace shmpool::detail
