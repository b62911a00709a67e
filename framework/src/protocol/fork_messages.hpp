// The messages between a pool and its fork server (PoolOptions::start_method = fork_server), one
// per SOCK_SEQPACKET datagram on the socket pair between them: the only code both sides share.
//
// pool → server: a spawn request (the worker's own environment entries, its stderr pipe attached
// with SCM_RIGHTS). server → pool: hello once it is up; per request, spawned (the worker's pid, a
// pidfd attached) or spawn_failed (errno); and, unasked, exited (pid and wait status) for every
// worker it reaps. Requests are answered in order, one at a time.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace shmpool::detail::fork_protocol {

inline constexpr std::uint32_t magic = 0x53'4b'52'46;  // "FRKS"
/// Bumped whenever a message's bytes change: a server of another version is refused.
inline constexpr std::uint32_t version = 1;
/// The largest request (environment entries); the pool refuses longer ones before sending.
inline constexpr std::size_t max_request_bytes = std::size_t{64} << 10;
/// The variable that tells the server which descriptor is its end of the socket pair.
inline constexpr std::string_view socket_variable = "SHMPOOL_FORK_SERVER_FD";

enum class Kind : std::uint32_t { hello = 1, spawn = 2, spawned = 3, spawn_failed = 4, exited = 5 };

/// Every message from the server: one fixed-size record.
struct Reply {
    std::uint32_t magic = fork_protocol::magic;
    Kind kind = Kind::hello;
    std::int32_t pid = 0;    // hello: the server; spawned, exited: the worker
    std::int32_t value = 0;  // hello: the protocol version; spawn_failed: errno; exited: status
    std::int64_t peak_rss_kb = 0;  // exited: ru_maxrss of the worker
};
static_assert(std::is_trivially_copyable_v<Reply> && sizeof(Reply) == 24,
              "sent as raw bytes between two builds of the same version");

/// The head of a spawn request; `count` NUL-terminated "NAME=value" entries follow it.
struct RequestHead {
    std::uint32_t magic = fork_protocol::magic;
    Kind kind = Kind::spawn;
    std::uint32_t count = 0;
    std::uint32_t reserved = 0;
};
static_assert(std::is_trivially_copyable_v<RequestHead> && sizeof(RequestHead) == 16,
              "sent as raw bytes between two builds of the same version");

/// A spawn request's bytes.
inline std::string encode_request(const std::vector<std::string>& environment) {
    RequestHead head;
    head.count = static_cast<std::uint32_t>(environment.size());
    std::string out(reinterpret_cast<const char*>(&head), sizeof head);
    for (const std::string& entry : environment) {
        out += entry;
        out += '\0';
    }
    return out;
}

/// The entries of a spawn request; false if the bytes are not one.
inline bool decode_request(std::string_view bytes, std::vector<std::string_view>& environment) {
    RequestHead head;
    if (bytes.size() < sizeof head) return false;
    std::memcpy(&head, bytes.data(), sizeof head);
    if (head.magic != magic || head.kind != Kind::spawn) return false;
    bytes.remove_prefix(sizeof head);
    environment.clear();
    for (std::uint32_t i = 0; i < head.count; ++i) {
        const std::size_t end = bytes.find('\0');
        if (end == std::string_view::npos) return false;
        environment.push_back(bytes.substr(0, end));
        bytes.remove_prefix(end + 1);
    }
    return bytes.empty();
}

}  // namespace shmpool::detail::fork_protocol
