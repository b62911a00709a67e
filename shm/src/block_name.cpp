// Block names: validation, CPython's "psm_" random names, and the form shm_open wants.
#include <fmt/format.h>
#include <pthread.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <mutex>
#include <stdexcept>

#include "internal.hpp"
#include "posix/sys.hpp"
#include "shmpool/shm/shared_memory.hpp"

namespace shmpool {

void SharedMemory::validate_name(std::string_view name) {
    std::string_view bare = name;
    if (!bare.empty() && bare.front() == '/') bare.remove_prefix(1);
    if (bare.empty()) throw std::invalid_argument("invalid block name: the name is empty");
    if (bare.size() > max_name_length) {
        throw std::invalid_argument(
            fmt::format("invalid block name '{}...': {} characters, at most {}", bare.substr(0, 32),
                        bare.size(), max_name_length));
    }
    if (bare.find('\0') != std::string_view::npos) {
        throw std::invalid_argument("invalid block name: it contains a NUL character");
    }
    if (bare.find('/') != std::string_view::npos) {
        throw std::invalid_argument(
            fmt::format("invalid block name '{}': it contains '/' past the leading one", name));
    }
    if (bare == "." || bare == "..") {
        throw std::invalid_argument(fmt::format("invalid block name '{}'", name));
    }
}

namespace detail {

std::string_view strip_name(std::string_view name) {
    SharedMemory::validate_name(name);
    if (name.front() == '/') name.remove_prefix(1);
    return name;
}

std::string os_name(std::string_view name) {
    std::string result;
    result.reserve(name.size() + 1);
    result += '/';
    result += strip_name(name);
    return result;
}

namespace {
// Bumped in the child after fork(): a child must not reuse its parent's random bytes.
std::atomic<unsigned> fork_generation{0};
}  // namespace

std::string random_block_name() {
    // Random bytes are drawn from the kernel in batches to keep getrandom() off the create path;
    // the batch is per thread and dropped after fork() so a child never repeats its parent's names.
    static std::once_flag once;
    std::call_once(
        once, [] { ::pthread_atfork(nullptr, nullptr, [] { fork_generation.fetch_add(1); }); });
    struct Pool {
        std::array<unsigned char, 256> bytes{};
        std::size_t used = 256;
        unsigned generation = 0;
    };
    thread_local Pool pool;
    unsigned generation = fork_generation.load(std::memory_order_relaxed);
    if (pool.used + 4 > pool.bytes.size() || pool.generation != generation) {
        if (sys::getrandom(pool.bytes.data(), pool.bytes.size()) != 0) {
            throw_errno(errno, "getrandom() failed while making a block name");
        }
        pool.used = 0;
        pool.generation = generation;
    }
    static constexpr char hex[] = "0123456789abcdef";
    std::string name = "psm_";
    for (int i = 0; i < 4; ++i) {
        unsigned char b = pool.bytes[pool.used++];
        name += hex[b >> 4];
        name += hex[b & 0xf];
    }
    return name;
}

}  // namespace detail
}  // namespace shmpool
