// How processes end and why workers leave, as text.
#include "shmpool/framework/exit_status.hpp"

#include <string.h>  // sigabbrev_np

#include "shmpool/framework/pool_options.hpp"

namespace shmpool {

std::string signal_name(int signal) {
    // sigabbrev_np (glibc 2.32) is thread-safe, unlike strsignal.
    if (const char* abbrev = ::sigabbrev_np(signal)) return fmt::format("SIG{}", abbrev);
    return fmt::format("signal {}", signal);
}

std::string to_string(const ExitStatus& status) {
    if (status.signal != 0)
        return fmt::format("killed by {}{}", signal_name(status.signal),
                           status.core_dumped ? " (core dumped)" : "");
    return fmt::format("exited with status {}", status.exit_code);
}

std::string_view to_string(StartMethod method) noexcept {
    switch (method) {
        case StartMethod::exec:
            return "exec";
        case StartMethod::fork_server:
            return "fork_server";
    }
    return "unknown";
}

std::string_view to_string(ExitReason reason) noexcept {
    switch (reason) {
        case ExitReason::crashed:
            return "crashed";
        case ExitReason::start_failed:
            return "start_failed";
        case ExitReason::timeout:
            return "timeout";
        case ExitReason::cancelled:
            return "cancelled";
        case ExitReason::recycled_tasks:
            return "recycled_tasks";
        case ExitReason::recycled_memory:
            return "recycled_memory";
    }
    return "unknown";
}

}  // namespace shmpool
