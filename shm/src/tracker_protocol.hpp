// The tracker's line protocol over a Unix stream socket (client and server side helpers).
//
//   HELLO <node-id>   -> OK <tracker-node-id> <tracker-pid>   (the sender becomes a client)
//   LIST              -> BLOCK <name> <owner-pid> <owner-alive 0|1> <shared 0|1> <users|->  ... END
//   PING              -> PONG <tracker-pid>
// Anything else, or a line over max_line bytes, gets "ERR <reason>" and the connection closed.
#pragma once

#include <fmt/format.h>
#include <sys/types.h>

#include <charconv>
#include <string>
#include <string_view>
#include <vector>

#include "posix/sys.hpp"
#include "shmpool/shm/tracker.hpp"

namespace shmpool::detail {

constexpr std::size_t max_line = 1024;

/// A client connection to a tracker (blocking, bounded waits).
class TrackerConnection {
  public:
    explicit TrackerConnection(const std::string& socket_path);
    /// Sends one line, returns the first line of the answer.
    std::string request(const std::string& line);
    std::string read_line();
    /// LIST, parsed.
    std::vector<TrackedBlock> list();
    const std::string& path() const noexcept { return path_; }

    pid_t tracker_pid = 0;

  private:
    std::string path_;
    sys::FileDescriptor fd_;
    std::string buffer_;
};

inline std::string format_block_line(const TrackedBlock& b) {
    std::string users = b.users.empty() ? "-" : fmt::format("{}", fmt::join(b.users, ","));
    return fmt::format("BLOCK {} {} {} {} {}", b.name, b.owner_pid, b.owner_alive ? 1 : 0,
                       b.shared_lifetime ? 1 : 0, users);
}

inline std::vector<std::string_view> split_words(std::string_view line) {
    std::vector<std::string_view> words;
    while (!line.empty()) {
        auto sp = line.find(' ');
        words.push_back(line.substr(0, sp));
        if (sp == std::string_view::npos) break;
        line.remove_prefix(sp + 1);
    }
    return words;
}

template <class Int>
bool parse_int(std::string_view s, Int& out) {
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
    return ec == std::errc{} && p == s.data() + s.size();
}

inline bool parse_block_line(std::string_view line, TrackedBlock& b) {
    auto w = split_words(line);
    if (w.size() != 6 || w[0] != "BLOCK") return false;
    b.name = std::string(w[1]);
    int alive = 0;
    int shared = 0;
    if (!parse_int(w[2], b.owner_pid) || !parse_int(w[3], alive) || !parse_int(w[4], shared))
        return false;
    b.owner_alive = alive != 0;
    b.shared_lifetime = shared != 0;
    if (w[5] != "-") {
        for (std::string_view rest = w[5]; !rest.empty();) {
            auto comma = rest.find(',');
            pid_t pid = 0;
            if (!parse_int(rest.substr(0, comma), pid)) return false;
            b.users.push_back(pid);
            if (comma == std::string_view::npos) break;
            rest.remove_prefix(comma + 1);
        }
    }
    return true;
}

inline bool parse_ok_line(std::string_view line, std::string& tracker_id, pid_t& pid) {
    auto w = split_words(line);
    if (w.size() != 3 || w[0] != "OK") return false;
    tracker_id = std::string(w[1]);
    return parse_int(w[2], pid);
}

/// Connects this process's node to its tracker (inherited through SHMPOOL_TRACKER, or started).
class LocalNode;
void connect_tracker(LocalNode& node);

/// The tracker process's main loop (shmpool-tracker).
int tracker_main(int argc, char** argv);

}  // namespace shmpool::detail
