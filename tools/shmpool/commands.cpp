// Implementation of the shmpool subcommands (contract in docs/cli.md).
#include "commands.hpp"

#include <fmt/chrono.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdio>
#include <ctime>
#include <system_error>
#include <utility>

#include "json_codec.hpp"
#include "shmpool/shm/block_info.hpp"
#include "shmpool/shm/shareable_list.hpp"
#include "shmpool/shm/shared_heap.hpp"
#include "shmpool/shm/tracker.hpp"

namespace shmpool::cli {
namespace {

std::ptrdiff_t parse_index(const std::string& text) {
    std::ptrdiff_t index = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), index);
    if (ec != std::errc{} || end != text.data() + text.size()) {
        throw CommandError(fmt::format("invalid index '{}': expected an integer", text));
    }
    return index;
}

std::string mode_string(unsigned mode) {
    return fmt::format("{:04o}", mode);
}

std::string yes_no(const std::optional<bool>& b) {
    if (!b) return "?";
    return *b ? "yes" : "no";
}

// One word for a lock's state: free, held:<tid>, owner-died, inconsistent:<tid>, not-recoverable.
std::string lock_word(const RobustMutex::State& s) {
    if (s.not_recoverable) return "not-recoverable";
    if (s.inconsistent) return fmt::format("inconsistent:{}", s.holder_tid);
    if (s.locked) return fmt::format("held:{}", s.holder_tid);
    if (s.owner_died) return "owner-died";
    return "free";
}

void warn(const std::string& message) {
    std::fflush(stdout);
    fmt::print(stderr, "shmpool: warning: {}\n", message);
}

// Holds a guarded block's lock for a CLI command. The lock is taken before the list is read,
// because a holder that died mid-write may have torn exactly what reading validates: after an
// owner death the layout is checked; intact, the lock is marked consistent (with one warning);
// broken, the lock is released unrepaired, which marks it not recoverable, and the command fails.
class CommandLock {
  public:
    CommandLock(const SharedMemory& shm, double timeout_seconds) {
        if (!shm.guarded() || shm.read_only()) return;
        RobustMutex& m = shm.mutex();
        auto timeout = std::chrono::duration_cast<std::chrono::nanoseconds>(
            std::chrono::duration<double>(timeout_seconds));
        std::optional<LockResult> r;
        try {
            r = m.try_lock_for(timeout);
        } catch (const std::system_error& e) {
            throw CommandError(fmt::format("cannot lock list '{}': {}", shm.name(), e.what()));
        }
        if (!r) {
            throw CommandError(
                fmt::format("the lock of list '{}' is held by thread {}; gave up after {} s",
                            shm.name(), m.state().holder_tid, timeout_seconds));
        }
        mutex_ = &m;
        if (*r == LockResult::owner_died) {
            if (!ShareableList::is_valid_layout(shm.buf())) {
                std::exchange(mutex_, nullptr)->unlock();  // unrepaired: marks it not recoverable
                throw CommandError(
                    fmt::format("the previous holder of the lock of list '{}' died and left its "
                                "layout broken; the lock is left marked not recoverable",
                                shm.name()));
            }
            warn(fmt::format(
                "the previous holder of the lock of list '{}' died holding it; the list's layout "
                "is intact, so the lock was marked consistent",
                shm.name()));
            m.make_consistent();
        }
    }
    CommandLock(const CommandLock&) = delete;
    CommandLock& operator=(const CommandLock&) = delete;
    ~CommandLock() {
        if (mutex_) mutex_->unlock();
    }

  private:
    RobustMutex* mutex_ = nullptr;
};

// Waits until stdin reaches EOF or SIGINT/SIGTERM arrives (blocked beforehand, taken here).
void wait_for_release() {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    int sfd = ::signalfd(-1, &set, SFD_CLOEXEC);
    pollfd fds[2] = {{STDIN_FILENO, POLLIN, 0}, {sfd, POLLIN, 0}};
    for (;;) {
        int n = ::poll(fds, 2, -1);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 || (fds[1].revents & POLLIN)) break;
        if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
            char buf[4096];
            ssize_t got = ::read(STDIN_FILENO, buf, sizeof buf);
            if (got <= 0) break;  // EOF: the caller closed our stdin
        }
    }
    ::close(sfd);
}

}  // namespace

void block_termination_signals() {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    ::pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

void new_list(const std::string& json_text, const NewListOptions& options) {
    std::vector<Value> values = values_from_json(parse_json(json_text));
    // Untracked unless --own: the list outlives this short-lived process, as the user asked.
    CreateOptions create{.track = options.own, .guarded = options.guarded};
    ShareableList list = options.name.empty() ? ShareableList::create(values, create)
                                              : ShareableList::create(options.name, values, create);
    fmt::print("{}\n", list.name());
    std::fflush(stdout);
    if (!options.own) return;
    wait_for_release();
    list.unlink();
}

namespace {

// `show` of a SharedHeap: its state, free space and named objects; never its contents (their
// types are the program's).
void show_heap(const std::string& name, bool as_json, double lock_timeout) {
    SharedHeap heap;
    try {
        heap = SharedHeap::attach(name);
    } catch (const std::system_error& e) {
        if (e.code() != std::errc::permission_denied) throw;
        heap = SharedHeap::attach(name, Access::read_only);  // a frozen heap needs no lock
    }
    std::optional<std::vector<SharedHeap::NamedObject>> objects;
    try {
        if (heap.state() != HeapState::index_inconsistent)
            objects = heap.named_objects(
                std::chrono::milliseconds(static_cast<std::int64_t>(lock_timeout * 1000)));
    } catch (const HeapInconsistent&) {  // found torn just now: shown as such
    }
    const HeapState state = heap.state();
    if (as_json) {
        nlohmann::json list = nullptr;
        if (objects) {
            list = nlohmann::json::array();
            for (const auto& o : *objects)
                list.push_back({{"name", o.name}, {"bytes", o.bytes}});
        }
        nlohmann::json out = {
            {"heap", heap.name()},
            {"size", heap.size()},
            {"free", heap.free_bytes()},
            {"state", std::string(to_string(state))},
            {"dead_pid", heap.dead_pid() ? nlohmann::json(heap.dead_pid()) : nlohmann::json()},
            {"objects", list}};
        fmt::print("{}\n", out.dump(-1));
        return;
    }
    fmt::print("heap {}: {} bytes, {} free, {}", heap.name(), heap.size(), heap.free_bytes(),
               to_string(state));
    if (heap.dead_pid() != 0) fmt::print(" (process {} died holding its lock)", heap.dead_pid());
    fmt::print("\n");
    if (!objects) {
        fmt::print("named objects: cannot be listed (the index may be torn)\n");
        return;
    }
    for (const auto& o : *objects)
        fmt::print("  {}  {} bytes\n", o.name, o.bytes);
}

}  // namespace

void show(const std::string& name, bool as_json, double lock_timeout) {
    {
        std::optional<BlockInfo> info = stat_block(name);
        if (info && info->heap.value_or(false)) return show_heap(name, as_json, lock_timeout);
    }
    // Read-write only to take a guarded list's lock; the list itself is never written.
    SharedMemory shm;
    try {
        shm = SharedMemory::attach(name);
    } catch (const std::system_error& e) {
        if (e.code() != std::errc::permission_denied) throw;
        shm = SharedMemory::attach(name, {.access = Access::read_only});
        if (shm.guarded())
            warn(fmt::format("no write access to list '{}': shown without taking its lock", name));
    }
    std::optional<RobustMutex::State> before;
    if (shm.guarded()) before = shm.mutex().state();
    std::vector<Value> values;
    ShareableList list;
    {
        CommandLock lock(shm, lock_timeout);
        list = ShareableList::attach(std::move(shm));
        values = list.to_vector();
    }
    if (as_json) {
        nlohmann::json array = nlohmann::json::array();
        for (const Value& v : values)
            array.push_back(value_to_json(v));
        fmt::print("{}\n", array.dump(-1, ' ', false, nlohmann::json::error_handler_t::strict));
    } else {
        fmt::print("{}\n", repr(list));
        if (before) fmt::print("lock: {}\n", lock_word(*before));
    }
}

void set(const std::string& name, const std::string& index_text, const std::string& json_text,
         double lock_timeout) {
    std::ptrdiff_t index = parse_index(index_text);
    // Parse and check everything before touching the block.
    Value value = value_from_json(parse_json(json_text));
    ShareableList list;  // declared first: it must outlive the lock that lives in its mapping
    SharedMemory shm = SharedMemory::attach(name);
    CommandLock lock(shm, lock_timeout);
    list = ShareableList::attach(std::move(shm));
    list.set(index, value);
}

void lock(const std::string& name, double lock_timeout) {
    SharedMemory shm = SharedMemory::attach(name);
    if (!shm.guarded())
        throw CommandError(
            fmt::format("list '{}' carries no lock (create it with --guarded)", name));
    CommandLock held(shm, lock_timeout);
    fmt::print("locked\n");
    std::fflush(stdout);
    wait_for_release();
}

void rm(const std::vector<std::string>& names) {
    // All or nothing: every name is checked before any block is removed.
    for (const std::string& name : names) {
        if (!stat_block(name)) {
            throw CommandError(fmt::format("no shared memory block named '{}'", name));
        }
    }
    for (const std::string& name : names)
        SharedMemory::remove(name);
}

void ls(bool as_json) {
    std::vector<BlockInfo> blocks = list_blocks();
    if (as_json) {
        nlohmann::json array = nlohmann::json::array();
        for (const BlockInfo& b : blocks) {
            auto opt = [](const auto& o) { return o ? nlohmann::json(*o) : nlohmann::json(); };
            nlohmann::json entry = {
                {"name", b.name},
                {"size", b.size},
                {"owner", b.owner},
                {"uid", b.uid},
                {"mode", mode_string(b.mode)},
                {"modified",
                 fmt::format("{:%Y-%m-%dT%H:%M:%S}Z",
                             fmt::gmtime(std::chrono::system_clock::to_time_t(b.modified)))},
                {"shareable_list", opt(b.shareable_list)},
                {"heap", opt(b.heap)},
                {"owner_pid", opt(b.owner_pid)},
                {"owner_alive", opt(b.owner_alive)},
                {"guarded", b.guarded},
                {"lock", b.lock ? nlohmann::json(lock_word(*b.lock)) : nlohmann::json()},
            };
            array.push_back(std::move(entry));
        }
        fmt::print("{}\n", array.dump(2));
        return;
    }
    std::size_t name_width = 4;
    std::size_t owner_width = 5;
    for (const BlockInfo& b : blocks) {
        name_width = std::max(name_width, b.name.size());
        owner_width = std::max(owner_width, b.owner.size());
    }
    fmt::print("{:<{}}  {:>12}  {:<{}}  {:<4}  {:<19}  {:<4}  {:<4}  {:>7}  {:<5}  {}\n", "NAME",
               name_width, "SIZE", "OWNER", owner_width, "MODE", "MODIFIED", "LIST", "HEAP", "PID",
               "ALIVE", "LOCK");
    for (const BlockInfo& b : blocks) {
        fmt::print(
            "{:<{}}  {:>12}  {:<{}}  {:<4}  {:%Y-%m-%d %H:%M:%S}  {:<4}  {:<4}  {:>7}  {:<5}  "
            "{}\n",
            b.name, name_width, b.size, b.owner, owner_width, mode_string(b.mode),
            fmt::localtime(std::chrono::system_clock::to_time_t(b.modified)),
            yes_no(b.shareable_list), yes_no(b.heap),
            b.owner_pid ? std::to_string(*b.owner_pid) : "-",
            b.owner_alive ? yes_no(b.owner_alive) : "-", b.lock ? lock_word(*b.lock) : "-");
    }
}

void tracker(bool as_json) {
    auto trackers = Tracker::list_all();
    if (as_json) {
        nlohmann::json array = nlohmann::json::array();
        for (const auto& t : trackers) {
            nlohmann::json blocks = nlohmann::json::array();
            for (const auto& b : t.blocks) {
                blocks.push_back({{"name", b.name},
                                  {"owner_pid", b.owner_pid},
                                  {"owner_alive", b.owner_alive},
                                  {"shared_lifetime", b.shared_lifetime},
                                  {"users", b.users}});
            }
            array.push_back({{"pid", t.pid}, {"socket", t.socket}, {"blocks", blocks}});
        }
        fmt::print("{}\n", array.dump(2));
        return;
    }
    for (const auto& t : trackers) {
        fmt::print("tracker {} ({} blocks)\n", t.pid, t.blocks.size());
        for (const auto& b : t.blocks) {
            fmt::print("  {}  owner {} ({}){}\n", b.name, b.owner_pid,
                       b.owner_alive ? "alive" : "dead",
                       b.shared_lifetime
                           ? fmt::format(", shared lifetime, users {}", fmt::join(b.users, ","))
                           : std::string());
        }
    }
}

void gc(bool dry_run) {
    for (const auto& b : collect_garbage(dry_run)) {
        fmt::print("{} {} (owner pid {})\n", dry_run ? "would remove" : "removed", b.name,
                   b.owner_pid);
    }
}

std::vector<std::string> mpirun_command(const RunOptions& options,
                                        const std::vector<std::string>& program) {
    if (program.empty()) throw CommandError("run: no program given (shmpool run ... -- ./app)");
    if (options.hosts.empty() == (options.local == 0))
        throw CommandError("run: give either --hosts a,b,c or --local N");
    std::vector<std::string> cmd{"mpirun"};
    if (!options.hosts.empty()) {
        std::string hosts;
        for (const std::string& h : options.hosts) {
            if (h.empty() || h.find_first_of(", \t") != std::string::npos)
                throw CommandError(fmt::format("run: '{}' is not a host name", h));
            hosts += (hosts.empty() ? "" : ",") + h;
        }
        // One rank per machine: rank 0 runs main(), every other rank a node's supervisor.
        cmd.insert(cmd.end(), {"-n", std::to_string(options.hosts.size()), "--host", hosts,
                               "--map-by", "ppr:1:node"});
    } else {
        cmd.insert(cmd.end(), {"-n", std::to_string(options.local), "--oversubscribe"});
    }
    // A node's workers would inherit a rank's core binding.
    cmd.insert(cmd.end(), {"--bind-to", "none"});
    cmd.insert(cmd.end(), options.mpirun_args.begin(), options.mpirun_args.end());
    cmd.insert(cmd.end(), program.begin(), program.end());
    return cmd;
}

void run_job(const RunOptions& options, const std::vector<std::string>& program) {
    const std::vector<std::string> cmd = mpirun_command(options, program);
    if (options.dry_run) {
        fmt::print("{}\n", fmt::join(cmd, " "));
        return;
    }
    std::vector<char*> argv;
    argv.reserve(cmd.size() + 1);
    for (const std::string& a : cmd)
        argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    std::fflush(stdout);
    ::execvp(argv[0], argv.data());
    throw CommandError(fmt::format("run: cannot start mpirun ({}): is openmpi-bin installed?",
                                   std::error_code(errno, std::generic_category()).message()));
}

}  // namespace shmpool::cli
