// WorkerProcess: Boost.Process v2 launch with a parent-death signal, or a fork server's fork;
// pidfd watch; wait4 reaping, or the fork server's report.
#include "parent/worker_process.hpp"

#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>  // environ

#include <boost/asio/io_context.hpp>
#include <boost/process/v2/environment.hpp>
#include <boost/process/v2/posix/vfork_launcher.hpp>
#include <boost/process/v2/process.hpp>
#include <boost/process/v2/stdio.hpp>
// Boost 1.81's header-only mode never includes the definition of
// process_environment::on_setup; this translation unit, alone in the project, provides it.
#include <fmt/format.h>

#include <boost/process/v2/impl/environment.ipp>
#include <cerrno>
#include <system_error>
#include <utility>

#include "parent/fork_server.hpp"
#include "posix/sys.hpp"

namespace shmpool::detail {
namespace {

namespace bp = boost::process::v2;

// Runs in the child between fork and exec.
struct WorkerSetup {
    pid_t parent;
    int inherited_fd = -1;
    // In the parent, before the fork: the launcher closes every descriptor it is not told of.
    template <class Launcher>
    boost::system::error_code on_setup(Launcher& launcher, const bp::filesystem::path&,
                                       const char* const*) {
        if (inherited_fd >= 0) launcher.fd_whitelist.push_back(inherited_fd);
        return {};
    }
    template <class Launcher>
    boost::system::error_code on_exec_setup(Launcher&, const bp::filesystem::path&,
                                            const char* const*) {
        // Dies with the parent: no orphan workers, even when the parent is SIGKILLed.
        sys::set_parent_death_signal(SIGKILL);
        if (::getppid() != parent) ::_exit(1);  // the parent died before the line above
        sys::set_own_process_group();           // a terminal's Ctrl-C is the parent's to handle
        // Every descriptor of the parent is close-on-exec; this one must reach the program.
        if (inherited_fd >= 0 && sys::set_close_on_exec(inherited_fd, false) != 0)
            return {errno, boost::system::system_category()};
        return {};
    }
    // After a failed exec in the vfork child. Boost would call exit(), running the parent's
    // atexit handlers in the memory the child shares with it; the error is already in the
    // launcher (shared too), so leave at once.
    template <class Launcher>
    void on_exec_error(Launcher&, const bp::filesystem::path&, const char* const*,
                       const boost::system::error_code&) {
        ::_exit(127);
    }
    // Boost 1.81 detects the hook with this (mistaken) five-argument form; never called.
    template <class Launcher>
    void on_exec_error(Launcher&, const boost::system::error_code&, const bp::filesystem::path&,
                       const char* const*, const boost::system::error_code&) {
        ::_exit(127);
    }
};

}  // namespace

ExitStatus wait_status(int status, long peak_rss_kb) noexcept {
    ExitStatus s;
    if (WIFSIGNALED(status)) {
        s.signal = WTERMSIG(status);
        s.core_dumped = WCOREDUMP(status);
    }
    if (WIFEXITED(status)) s.exit_code = WEXITSTATUS(status);
    s.peak_rss_kb = peak_rss_kb;
    return s;
}

WorkerProcess::WorkerProcess(const std::string& executable, const std::vector<std::string>& env,
                             int stderr_fd, const std::vector<std::string>& hidden,
                             int inherited_fd) {
    std::vector<std::string> full;
    for (char** e = environ; *e; ++e) {
        std::string entry = *e;
        bool dropped = false;
        for (const auto& o : env)
            dropped |= entry.compare(0, o.find('=') + 1, o, 0, o.find('=') + 1) == 0;
        for (const auto& prefix : hidden)
            dropped |= entry.starts_with(prefix);
        if (!dropped) full.push_back(std::move(entry));
    }
    full.insert(full.end(), env.begin(), env.end());
    boost::asio::io_context ctx;
    boost::system::error_code ec;
    // vfork: no copy of this process's page tables (a parent with big mappings spawns as fast as
    // a small one), and exec failures come back through the shared memory as errors.
    bp::posix::vfork_launcher launcher;
    bp::process proc = launcher(ctx.get_executor(), ec, executable, std::vector<std::string>{},
                                bp::process_environment(full), bp::process_stdio{{}, {}, stderr_fd},
                                WorkerSetup{::getpid(), inherited_fd});
    if (ec) {
        throw std::system_error(ec.value(), std::generic_category(),
                                fmt::format("cannot start pool worker '{}'", executable));
    }
    pid_ = proc.id();
    proc.detach();  // reaped here, through the pidfd, not by Boost
    pidfd_ = sys::FileDescriptor(sys::pidfd_open(pid_));
    if (!pidfd_.valid()) {
        const int err = errno;
        sys::kill(pid_, SIGKILL);
        int status = 0;
        sys::wait4(pid_, &status, nullptr);
        throw std::system_error(err, std::generic_category(),
                                fmt::format("pidfd_open({}) failed", pid_));
    }
}

WorkerProcess::WorkerProcess(ForkServer& server, const std::vector<std::string>& env, int stderr_fd)
    : server_(&server) {
    ForkServer::Worker worker = server.spawn(env, stderr_fd);
    pid_ = worker.pid;
    pidfd_ = std::move(worker.pidfd);
    server_generation_ = worker.generation;
}

WorkerProcess::WorkerProcess(WorkerProcess&& other) noexcept
    : pid_(std::exchange(other.pid_, -1)),
      pidfd_(std::move(other.pidfd_)),
      reaped_(std::exchange(other.reaped_, true)),
      server_(std::exchange(other.server_, nullptr)),
      server_generation_(other.server_generation_) {
}

WorkerProcess& WorkerProcess::operator=(WorkerProcess&& other) noexcept {
    if (this != &other) {
        reset();
        pid_ = std::exchange(other.pid_, -1);
        pidfd_ = std::move(other.pidfd_);
        reaped_ = std::exchange(other.reaped_, true);
        server_ = std::exchange(other.server_, nullptr);
        server_generation_ = other.server_generation_;
    }
    return *this;
}

WorkerProcess::~WorkerProcess() {
    reset();
}

void WorkerProcess::reset() noexcept {
    if (pid_ > 0 && !reaped_) {
        signal(SIGKILL);
        reap();
    }
    pidfd_.reset();
    pid_ = -1;
    server_ = nullptr;
}

void WorkerProcess::signal(int sig) noexcept {
    // Through the pidfd: never a reused pid.
    if (pidfd_.valid() && !reaped_) sys::pidfd_send_signal(pidfd_.get(), sig);
}

ExitStatus WorkerProcess::reap() noexcept {
    if (reaped_ || pid_ <= 0) return {};
    reaped_ = true;
    // Not our child: its parent, the server, reaped it and reports how it ended.
    if (server_ != nullptr) return server_->reap(pid_, server_generation_);
    int status = 0;
    struct rusage usage {};
    if (sys::wait4(pid_, &status, &usage) != pid_) return {};
    return wait_status(status, usage.ru_maxrss);
}

}  // namespace shmpool::detail
