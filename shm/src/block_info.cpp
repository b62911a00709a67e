// Listing and inspecting /dev/shm for `shmpool ls`; read-only: opens blocks O_RDONLY, never writes.
#include "shmpool/shm/block_info.hpp"

#include <fmt/format.h>
#include <pwd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <system_error>

#include "internal.hpp"
#include "posix/sys.hpp"
#include "registry.hpp"
#include "shmpool/shm/shareable_list.hpp"
#include "shmpool/shm/shared_heap.hpp"

namespace shmpool {
namespace {

std::string user_name(uid_t uid) {
    struct passwd pw {};
    struct passwd* result = nullptr;
    char buf[1024];
    if (::getpwuid_r(uid, &pw, buf, sizeof buf, &result) == 0 && result != nullptr) {
        return result->pw_name;
    }
    return std::to_string(uid);
}

// Reads what the block's contents say: list layout, lock trailer.
void inspect_contents(const std::string& name, BlockInfo& info) {
    try {
        SharedMemory shm = SharedMemory::attach(name, {.access = Access::read_only});
        info.shareable_list = ShareableList::is_valid_layout(shm.buf());
        info.heap = SharedHeap::is_heap(shm);
        info.guarded = shm.guarded();
        if (shm.guarded()) info.lock = shm.mutex().state();
    } catch (const std::system_error& e) {
        if (e.code() == std::errc::invalid_argument)
            info.shareable_list = info.heap = false;  // empty
        // otherwise not readable by us: unknown
    }
}

// Who owns which tracked block, from the registry (read once per listing).
struct Owners {
    std::vector<detail::NodeFile> nodes;
    Owners() {
        try {
            nodes = detail::read_nodes();
        } catch (const std::system_error&) {
            // No registry here (e.g. another user's runtime directory): nothing is tracked.
        }
    }
    void fill(BlockInfo& info, std::uint64_t dev, std::uint64_t ino) const {
        for (const auto& node : nodes) {
            for (const auto& e : node.entries) {
                if (e.kind == detail::EntryKind::owner && e.name == info.name && e.ino == ino &&
                    e.dev == dev) {
                    info.owner_pid = node.pid;
                    info.owner_alive = node.alive;
                }
            }
        }
    }
};

// The block's metadata; with `owners`, also what its contents and the registry say.
std::optional<BlockInfo> info_for(const std::string& name, const Owners* owners) {
    std::string path = fmt::format("{}/{}", shm_directory(), name);
    struct ::stat st {};
    if (sys::stat(path.c_str(), &st) != 0) {
        if (errno == ENOENT) return std::nullopt;
        detail::throw_errno(errno, fmt::format("stat('{}') failed", path));
    }
    if (!S_ISREG(st.st_mode)) return std::nullopt;
    BlockInfo info;
    info.name = name;
    info.size = static_cast<std::size_t>(st.st_size);
    info.uid = st.st_uid;
    info.mode = st.st_mode & 07777;
    info.inode = static_cast<std::uint64_t>(st.st_ino);
    info.modified = std::chrono::system_clock::time_point(
        std::chrono::duration_cast<std::chrono::system_clock::duration>(
            std::chrono::seconds(st.st_mtim.tv_sec) +
            std::chrono::nanoseconds(st.st_mtim.tv_nsec)));
    if (owners == nullptr) return info;
    info.owner = user_name(st.st_uid);
    inspect_contents(name, info);
    owners->fill(info, static_cast<std::uint64_t>(st.st_dev), info.inode);
    return info;
}

}  // namespace

std::string_view shm_directory() noexcept {
    return "/dev/shm";
}

std::vector<BlockInfo> list_blocks() {
    std::vector<BlockInfo> blocks;
    std::error_code ec;
    std::filesystem::directory_iterator it(shm_directory(), ec);
    if (ec) throw std::system_error(ec, fmt::format("cannot list {}", shm_directory()));
    Owners owners;
    for (const auto& entry : it) {
        std::string name = entry.path().filename().string();
        if (name.starts_with("sem.")) continue;  // POSIX semaphores live here too
        if (auto info = info_for(name, &owners)) blocks.push_back(std::move(*info));
    }
    std::sort(blocks.begin(), blocks.end(),
              [](const BlockInfo& a, const BlockInfo& b) { return a.name < b.name; });
    return blocks;
}

std::optional<BlockInfo> stat_block(std::string_view name, const StatOptions& options) {
    std::string bare(detail::strip_name(name));
    if (!options.inspect) return info_for(bare, nullptr);
    Owners owners;
    return info_for(bare, &owners);
}

}  // namespace shmpool
