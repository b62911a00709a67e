// The durable registry: node files with OFD-lock liveness, and the one cleanup rule (registry.hpp).
#include "registry.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <set>
#include <tuple>

#include "internal.hpp"
#include "shmpool/shm/block_info.hpp"
#include "shmpool/shm/shared_memory.hpp"

namespace shmpool::detail {
namespace {

constexpr char node_magic[8] = {'S', 'H', 'M', 'P', 'N', 'O', 'D', '1'};
constexpr std::uint32_t initial_capacity = 64;
constexpr std::uint32_t role_client = 0;
constexpr std::uint32_t role_tracker = 1;

// The node file: a header, then `capacity` entries. Written through shared mappings by the node
// itself and (under the registry lock) by processes handing it a block; read by cleaners.
struct NodeHeader {
    char magic[8];
    std::uint32_t entry_size;
    std::int32_t pid;
    std::uint32_t capacity;  // atomic: entries the file holds (grown, never shrunk)
    std::uint32_t role;
    char tracker[64];  // id of the tracker serving this node, NUL-terminated
    char reserved[32];
};
static_assert(sizeof(NodeHeader) == 120);

struct Entry {
    std::uint32_t state;  // atomic EntryKind: free -> claiming -> owner|user -> free
    std::uint32_t flags;
    std::uint64_t dev;
    std::uint64_t ino;
    char name[256];  // NUL-terminated
};
static_assert(sizeof(Entry) == 280 && std::is_standard_layout_v<Entry>,
              "the node file layout is shared between processes");

constexpr std::size_t header_size = 128;  // NodeHeader padded to keep entries 8-aligned

std::size_t file_size_for(std::uint32_t capacity) {
    return header_size + std::size_t{capacity} * sizeof(Entry);
}

NodeHeader* header_of(std::byte* base) {
    return reinterpret_cast<NodeHeader*>(base);
}
Entry* entries_of(std::byte* base) {
    return reinterpret_cast<Entry*>(base + header_size);
}

std::atomic_ref<std::uint32_t> state_of(Entry& e) {
    return std::atomic_ref<std::uint32_t>(e.state);
}

std::string random_hex8() {
    unsigned char b[4];
    if (sys::getrandom(b, sizeof b) != 0) throw_errno(errno, "getrandom() failed");
    return fmt::format("{:02x}{:02x}{:02x}{:02x}", b[0], b[1], b[2], b[3]);
}

void check_private_dir(const std::string& dir) {
    struct ::stat st {};
    if (sys::lstat(dir.c_str(), &st) != 0)
        throw_errno(errno, fmt::format("lstat('{}') failed", dir));
    if (!S_ISDIR(st.st_mode) || st.st_uid != ::geteuid() || (st.st_mode & 077) != 0) {
        throw_errno(EPERM,
                    fmt::format("the shmpool runtime directory '{}' must be a directory owned "
                                "by uid {} with mode 0700",
                                dir, ::geteuid()));
    }
}

// Parses "node.<pid>.<hex>" into its id and pid.
bool parse_node_file(const std::string& file, std::string& id, pid_t& pid) {
    if (file.rfind("node.", 0) != 0) return false;
    id = file.substr(5);
    auto dot = id.find('.');
    if (dot == std::string::npos) return false;
    auto [p, ec] = std::from_chars(id.data(), id.data() + dot, pid);
    return ec == std::errc{} && p == id.data() + dot && pid > 0;
}

// Reads a node file (through a private read-only mapping). False if it is not one.
bool read_node(const std::string& path, NodeFile& out) {
    sys::FileDescriptor fd(sys::open(path.c_str(), O_RDONLY));
    if (!fd.valid()) return false;
    struct ::stat st {};
    if (sys::fstat(fd.get(), &st) != 0 || st.st_size < static_cast<off_t>(header_size))
        return false;
    int locked = sys::ofd_locked(fd.get());
    out.alive = locked == 1;
    auto size = static_cast<std::size_t>(st.st_size);
    void* p = sys::mmap_shared(size, PROT_READ, fd.get());
    if (p == nullptr) return false;
    Mapping map(p, size);
    auto* base = static_cast<std::byte*>(p);
    const NodeHeader* h = header_of(base);
    if (std::memcmp(h->magic, node_magic, sizeof node_magic) != 0 ||
        h->entry_size != sizeof(Entry)) {
        return false;
    }
    out.tracker = h->role == role_tracker;
    out.tracker_id.assign(h->tracker, strnlen(h->tracker, sizeof h->tracker));
    // Never trust the header's capacity beyond the file's size: the file is shared data.
    std::size_t capacity = std::min<std::size_t>(
        std::atomic_ref<const std::uint32_t>(h->capacity).load(std::memory_order_acquire),
        (size - header_size) / sizeof(Entry));
    const Entry* e = entries_of(base);
    for (std::size_t i = 0; i < capacity; ++i) {
        auto kind = static_cast<EntryKind>(
            std::atomic_ref<const std::uint32_t>(e[i].state).load(std::memory_order_acquire));
        if (kind != EntryKind::owner && kind != EntryKind::user) continue;
        NodeEntry entry;
        entry.name.assign(e[i].name, strnlen(e[i].name, sizeof e[i].name));
        try {
            SharedMemory::validate_name(entry.name);
        } catch (const std::invalid_argument&) {
            continue;  // a hostile or torn entry names nothing we may touch
        }
        entry.dev = e[i].dev;
        entry.ino = e[i].ino;
        entry.kind = kind;
        entry.refcounted = (e[i].flags & entry_refcounted) != 0;
        out.entries.push_back(std::move(entry));
    }
    return true;
}

// Maps another node's file read-write (under the registry lock) to hand it an entry.
struct WritableNode {
    sys::FileDescriptor fd;
    Mapping map;
    std::byte* base = nullptr;
    std::uint32_t capacity = 0;

    explicit WritableNode(const NodeFile& node) : fd(sys::open(node.path.c_str(), O_RDWR)) {
        if (!fd.valid()) throw_errno(errno, fmt::format("open('{}') failed", node.path));
        remap();
    }
    void remap() {
        struct ::stat st {};
        if (sys::fstat(fd.get(), &st) != 0) throw_errno(errno, "fstat of a node file failed");
        auto size = static_cast<std::size_t>(st.st_size);
        void* p = sys::mmap_shared(size, PROT_READ | PROT_WRITE, fd.get());
        if (p == nullptr) throw_errno(errno, "mmap of a node file failed");
        map = Mapping(p, size);
        base = static_cast<std::byte*>(p);
        capacity = static_cast<std::uint32_t>(
            std::min<std::size_t>(std::atomic_ref<std::uint32_t>(header_of(base)->capacity).load(),
                                  (size - header_size) / sizeof(Entry)));
    }
};

// Claims a free entry of a table of `capacity` and fills it; false if the table is full.
bool claim_entry(std::byte* base, std::uint32_t capacity, std::uint32_t& hint,
                 std::string_view name, std::uint64_t dev, std::uint64_t ino, EntryKind kind,
                 std::uint32_t flags, std::uint32_t* slot_out) {
    Entry* e = entries_of(base);
    for (std::uint32_t n = 0; n < capacity; ++n) {
        std::uint32_t i = (hint + n) % capacity;
        std::uint32_t expected = static_cast<std::uint32_t>(EntryKind::free);
        if (!state_of(e[i]).compare_exchange_strong(
                expected, static_cast<std::uint32_t>(EntryKind::claiming))) {
            continue;
        }
        std::size_t len = std::min(name.size(), sizeof e[i].name - 1);
        std::memcpy(e[i].name, name.data(), len);
        std::memset(e[i].name + len, 0, sizeof e[i].name - len);
        e[i].dev = dev;
        e[i].ino = ino;
        e[i].flags = flags;
        state_of(e[i]).store(static_cast<std::uint32_t>(kind), std::memory_order_release);
        hint = i + 1;
        if (slot_out) *slot_out = i;
        return true;
    }
    return false;
}

std::atomic<LocalNode*> local_node{nullptr};
std::mutex local_mutex;

}  // namespace

// After fork() the child shares its parent's node file description (and so its lock), and
// must not write into the parent's table: it gets a node of its own on first use.
void adopt_after_fork_child() noexcept {
    forget_tracker_after_fork();
    if (LocalNode* old = local_node.exchange(nullptr)) {
        // Drop the child's references only; the parent keeps its lock and mapping. The object
        // itself is leaked on purpose: its mutex may have been held by another thread.
        sys::close(old->fd_.release());
        old->mapping_ = Mapping();
    }
}

const std::string& runtime_dir() {
    static const std::string dir = [] {
        // Read once; concurrent setenv() by the application is its own race.
        const char* env = std::getenv("SHMPOOL_RUNTIME_DIR");  // NOLINT(concurrency-mt-unsafe)
        std::string d =
            env && *env ? env : fmt::format("{}/.shmpool-{}", shm_directory(), ::geteuid());
        if (sys::mkdir(d.c_str(), 0700) != 0 && errno != EEXIST) {
            throw_errno(errno, fmt::format("cannot create the shmpool runtime directory '{}'", d));
        }
        check_private_dir(d);
        return d;
    }();
    return dir;
}

RegistryLock::RegistryLock() {
    std::string path = runtime_dir() + "/registry.lock";
    fd_ = sys::FileDescriptor(sys::open(path.c_str(), O_RDWR | O_CREAT, 0600));
    if (!fd_.valid()) throw_errno(errno, fmt::format("open('{}') failed", path));
    if (sys::lock_exclusive(fd_.get()) != 0)
        throw_errno(errno, fmt::format("flock('{}') failed", path));
}

RegistryLock::~RegistryLock() = default;  // closing the descriptor releases the flock

std::vector<NodeFile> read_nodes() {
    std::vector<NodeFile> nodes;
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(runtime_dir(), ec)) {
        NodeFile node;
        std::string file = e.path().filename().string();
        if (!parse_node_file(file, node.id, node.pid)) continue;
        node.path = e.path().string();
        if (read_node(node.path, node)) nodes.push_back(std::move(node));
    }
    return nodes;
}

bool node_alive(const std::string& id) {
    if (id.empty()) return false;
    std::string path = fmt::format("{}/node.{}", runtime_dir(), id);
    sys::FileDescriptor fd(sys::open(path.c_str(), O_RDONLY));
    return fd.valid() && sys::ofd_locked(fd.get()) == 1;
}

BlockId block_id(std::string_view name) {
    std::string path = fmt::format("{}/{}", shm_directory(), strip_name(name));
    struct ::stat st {};
    if (sys::stat(path.c_str(), &st) != 0) return {};
    return {static_cast<std::uint64_t>(st.st_dev), static_cast<std::uint64_t>(st.st_ino)};
}

// --- this process's node --------------------------------------------------------------------

LocalNode::LocalNode(bool tracker) {
    const std::string& dir = runtime_dir();
    id_ = fmt::format("{}.{}", ::getpid(), random_hex8());
    path_ = fmt::format("{}/node.{}", dir, id_);
    fd_ = sys::FileDescriptor(sys::open(path_.c_str(), O_RDWR | O_CREAT | O_EXCL, 0600));
    if (!fd_.valid())
        throw_errno(errno, fmt::format("cannot create the registry file '{}'", path_));
    try {
        if (sys::ofd_lock(fd_.get()) != 0)
            throw_errno(errno, fmt::format("cannot lock '{}'", path_));
        if (sys::grow_file(fd_.get(), static_cast<off_t>(file_size_for(initial_capacity))) != 0) {
            throw_errno(errno, fmt::format("cannot size '{}'", path_));
        }
        void* p =
            sys::mmap_shared(file_size_for(initial_capacity), PROT_READ | PROT_WRITE, fd_.get());
        if (p == nullptr) throw_errno(errno, fmt::format("cannot map '{}'", path_));
        mapping_ = Mapping(p, file_size_for(initial_capacity));
        NodeHeader* h = header_of(mapping_.bytes().data());
        h->entry_size = sizeof(Entry);
        h->pid = ::getpid();
        h->role = tracker ? role_tracker : role_client;
        std::atomic_ref<std::uint32_t>(h->capacity)
            .store(initial_capacity, std::memory_order_release);
        capacity_ = initial_capacity;
        // The magic last: a reader never takes a half-written header for a node.
        std::atomic_thread_fence(std::memory_order_release);
        std::memcpy(h->magic, node_magic, sizeof node_magic);
    } catch (...) {
        sys::unlink(path_.c_str());
        throw;
    }
}

LocalNode* LocalNode::existing() noexcept {
    LocalNode* node = local_node.load(std::memory_order_acquire);
    return node;
}

namespace {
void install_fork_handler() {
    static std::once_flag once;
    std::call_once(once, [] { ::pthread_atfork(nullptr, nullptr, adopt_after_fork_child); });
}
}  // namespace

LocalNode& LocalNode::get() {
    if (LocalNode* node = local_node.load(std::memory_order_acquire)) return *node;
    std::lock_guard<std::mutex> guard(local_mutex);
    if (LocalNode* node = local_node.load(std::memory_order_acquire)) return *node;
    install_fork_handler();
    auto* node = new LocalNode(false);  // lives until the process exits: its lock is its life
    local_node.store(node, std::memory_order_release);
    return *node;
}

LocalNode& LocalNode::get_as_tracker() {
    std::lock_guard<std::mutex> guard(local_mutex);
    install_fork_handler();
    auto* node = new LocalNode(true);
    local_node.store(node, std::memory_order_release);
    return *node;
}

void LocalNode::set_tracker(std::string_view tracker_id) noexcept {
    std::lock_guard<std::mutex> guard(mutex_);
    NodeHeader* h = header_of(mapping_.bytes().data());
    std::memset(h->tracker, 0, sizeof h->tracker);
    std::memcpy(h->tracker, tracker_id.data(), std::min(tracker_id.size(), sizeof h->tracker - 1));
}

void LocalNode::grow() {
    // Another process handing us a block may have grown the file already: never shrink.
    struct ::stat st {};
    if (sys::fstat(fd_.get(), &st) != 0) throw_errno(errno, "fstat of the registry file failed");
    auto file_capacity = static_cast<std::uint32_t>(
        (static_cast<std::size_t>(st.st_size) - header_size) / sizeof(Entry));
    std::uint32_t capacity = std::max(capacity_ * 2, file_capacity);
    if (sys::grow_file(fd_.get(), static_cast<off_t>(file_size_for(capacity))) != 0) {
        throw_errno(errno, fmt::format("cannot grow the registry file '{}'", path_));
    }
    void* p = sys::mmap_shared(file_size_for(capacity), PROT_READ | PROT_WRITE, fd_.get());
    if (p == nullptr) throw_errno(errno, fmt::format("cannot map '{}'", path_));
    mapping_ = Mapping(p, file_size_for(capacity));
    std::atomic_ref<std::uint32_t>(header_of(mapping_.bytes().data())->capacity).store(capacity);
    capacity_ = capacity;
}

void LocalNode::add(std::string_view name, std::uint64_t dev, std::uint64_t ino, EntryKind kind,
                    std::uint32_t flags) {
    std::lock_guard<std::mutex> guard(mutex_);
    std::uint32_t slot = 0;
    if (!claim_entry(mapping_.bytes().data(), capacity_, hint_, name, dev, ino, kind, flags,
                     &slot)) {
        grow();
        hint_ = capacity_ / 2;
        if (!claim_entry(mapping_.bytes().data(), capacity_, hint_, name, dev, ino, kind, flags,
                         &slot)) {
            throw_errno(ENOSPC, "the registry table is full");
        }
    }
    slots_.emplace(name, slot);
}

bool LocalNode::remove(std::string_view name) noexcept {
    std::lock_guard<std::mutex> guard(mutex_);
    auto [first, last] = slots_.equal_range(std::string(name));
    if (first == last) return false;
    Entry* e = entries_of(mapping_.bytes().data());
    bool any = false;
    for (auto it = first; it != last; ++it) {
        std::uint32_t slot = it->second;
        // Another process may have taken the entry (adoption) and the slot may hold a new name.
        if (slot < capacity_ && std::string_view(e[slot].name) == name) {
            auto kind = state_of(e[slot]).load();
            if (kind == static_cast<std::uint32_t>(EntryKind::owner) ||
                kind == static_cast<std::uint32_t>(EntryKind::user)) {
                state_of(e[slot]).store(static_cast<std::uint32_t>(EntryKind::free),
                                        std::memory_order_release);
                any = true;
            }
        }
    }
    slots_.erase(first, last);
    return any;
}

bool LocalNode::has(std::string_view name, EntryKind kind) noexcept {
    std::lock_guard<std::mutex> guard(mutex_);
    Entry* e = entries_of(mapping_.bytes().data());
    auto [first, last] = slots_.equal_range(std::string(name));
    for (auto it = first; it != last; ++it) {
        std::uint32_t slot = it->second;
        if (slot < capacity_ && std::string_view(e[slot].name) == name &&
            state_of(e[slot]).load() == static_cast<std::uint32_t>(kind)) {
            return true;
        }
    }
    return false;
}

// --- other nodes (under the registry lock) --------------------------------------------------

void add_to_node(const NodeFile& node, const NodeEntry& entry) {
    WritableNode w(node);
    std::uint32_t hint = 0;
    std::uint32_t flags = entry.refcounted ? entry_refcounted : 0;
    if (claim_entry(w.base, w.capacity, hint, entry.name, entry.dev, entry.ino, entry.kind, flags,
                    nullptr))
        return;
    std::uint32_t capacity = std::max<std::uint32_t>(w.capacity * 2, initial_capacity);
    if (sys::grow_file(w.fd.get(), static_cast<off_t>(file_size_for(capacity))) != 0) {
        throw_errno(errno, fmt::format("cannot grow '{}'", node.path));
    }
    w.remap();
    std::atomic_ref<std::uint32_t> cap(header_of(w.base)->capacity);
    std::uint32_t old = cap.load();
    while (old < capacity && !cap.compare_exchange_weak(old, capacity)) {
    }
    w.capacity = capacity;
    hint = capacity / 2;
    if (!claim_entry(w.base, w.capacity, hint, entry.name, entry.dev, entry.ino, entry.kind, flags,
                     nullptr)) {
        throw_errno(ENOSPC, fmt::format("the registry table '{}' is full", node.path));
    }
}

void clear_in_node(const NodeFile& node, std::string_view name, std::uint64_t ino, EntryKind kind) {
    WritableNode w(node);
    Entry* e = entries_of(w.base);
    for (std::uint32_t i = 0; i < w.capacity; ++i) {
        if (e[i].ino == ino &&
            std::string_view(e[i].name, strnlen(e[i].name, sizeof e[i].name)) == name) {
            std::uint32_t expected = static_cast<std::uint32_t>(kind);
            state_of(e[i]).compare_exchange_strong(expected,
                                                   static_cast<std::uint32_t>(EntryKind::free));
        }
    }
}

std::vector<CollectedBlock> clean_node(const NodeFile& node, const std::vector<NodeFile>& all,
                                       bool everything, bool dry_run) {
    // What live nodes keep: (name, ino) as owner, and as any registered user.
    std::set<std::pair<std::string, std::uint64_t>> owned_by_live;
    std::set<std::pair<std::string, std::uint64_t>> used_by_live;
    for (const NodeFile& other : all) {
        if (!other.alive || other.path == node.path) continue;
        for (const NodeEntry& e : other.entries) {
            used_by_live.emplace(e.name, e.ino);
            if (e.kind == EntryKind::owner) owned_by_live.emplace(e.name, e.ino);
        }
    }
    std::vector<CollectedBlock> removed;
    std::set<std::string> done;
    for (const NodeEntry& e : node.entries) {
        if (done.count(e.name)) continue;
        BlockId id = block_id(e.name);
        if (!id.exists() || id.ino != e.ino || id.dev != e.dev) continue;  // gone or re-created
        auto key = std::make_pair(e.name, e.ino);
        bool keep = false;
        if (!everything) {
            if (e.refcounted) {
                keep = used_by_live.count(key) > 0;
            } else {
                keep = e.kind != EntryKind::owner || owned_by_live.count(key) > 0;
            }
        }
        if (keep) continue;
        if (dry_run || sys::shm_unlink(("/" + e.name).c_str()) == 0) {
            removed.push_back({e.name, node.pid});
            done.insert(e.name);
        }
    }
    if (!dry_run) sys::unlink(node.path.c_str());
    return removed;
}

}  // namespace shmpool::detail
