// ExitStatus: how a worker process ended (an exit code, or a signal), as a printable value.
//
//   fmt::print("{}\n", status);  // "exited with status 3", "killed by SIGSEGV (core dumped)"
#pragma once

#include <fmt/format.h>

#include <string>

namespace shmpool {

/// How a process ended: exited with a status, or was killed by a signal.
struct ExitStatus {
    int signal = 0;            ///< the terminating signal, or 0 if it exited
    int exit_code = -1;        ///< the exit status if it exited, else -1
    bool core_dumped = false;  ///< killed by a signal and left a core dump
    long peak_rss_kb = 0;      ///< peak resident set size (getrusage), 0 if unknown

    bool exited() const noexcept { return signal == 0 && exit_code >= 0; }
    bool signalled() const noexcept { return signal != 0; }
    /// The same ending (the peak RSS is not compared).
    friend bool operator==(const ExitStatus& a, const ExitStatus& b) noexcept {
        return a.signal == b.signal && a.exit_code == b.exit_code && a.core_dumped == b.core_dumped;
    }
};

/// "SIGKILL" for 9, "signal 77" for a number without a name.
std::string signal_name(int signal);

/// "exited with status 3", "killed by SIGKILL", "killed by SIGSEGV (core dumped)".
std::string to_string(const ExitStatus& status);

}  // namespace shmpool

template <>
struct fmt::formatter<shmpool::ExitStatus> : fmt::formatter<std::string> {
    auto format(const shmpool::ExitStatus& s, fmt::format_context& ctx) const {
        return fmt::formatter<std::string>::format(shmpool::to_string(s), ctx);
    }
};
