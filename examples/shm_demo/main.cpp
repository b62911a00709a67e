// shm_demo: a ShareableList shared with a child process and with CPython, in a few lines.
//
// The parent creates a list, a child process (this program re-executed) attaches it by name and
// updates it, and, if python3 is available, CPython reads the very same bytes.
#include <fmt/format.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <exception>
#include <shmpool/shm/shareable_list.hpp>
#include <string>
#include <vector>

namespace {

// The child's side: attach by name, square the number, append a greeting.
int child(const char* name) {
    auto list = shmpool::ShareableList::attach(name);
    auto n = list.get(0).get<std::int64_t>();
    list[0] = n * n;
    list[1] = fmt::format("hello from pid {}", ::getpid());
    return 0;
}

// Runs a program and waits for it: its exit status, or -1 if it could not start or was killed.
// No shell: the arguments reach it as they are, whatever characters a path holds.
int run_and_wait(std::vector<std::string> args) {
    std::fflush(stdout);  // our lines before the child's, also when stdout is a pipe
    std::vector<char*> argv;
    for (auto& a : args)
        argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_t pid = 0;
    if (::posix_spawnp(&pid, argv[0], nullptr, nullptr, argv.data(), environ) != 0) return -1;
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0) {  // this child only: the tracker is a child too
        if (errno != EINTR) return -1;
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

int run(int argc, char** argv) {
    if (argc == 3 && std::string(argv[1]) == "--child") return child(argv[2]);

    // Slot 1 is sized for the child's longest greeting: slots never grow after creation.
    auto list = shmpool::ShareableList::create({12, std::string(32, '.'), 2.5, shmpool::none});
    fmt::print("parent created  {}\n", list);

    if (run_and_wait({argv[0], "--child", list.name()}) != 0) {
        fmt::print(stderr, "child failed\n");
        list.unlink();
        return 1;
    }
    fmt::print("child updated   {}\n", list);

    // CPython attaches the same block; unregister() keeps its tracker from unlinking our block.
    std::string python = fmt::format(
        "from multiprocessing import shared_memory as s, resource_tracker as r; "
        "l = s.ShareableList(name='{}'); r.unregister(l.shm._name, 'shared_memory'); "
        "print('CPython reads  ', l)",
        list.name());
    if (run_and_wait({"python3", "-c", python}) != 0)
        fmt::print("(python3 not available: skipped the CPython step)\n");

    bool ok = list.get(0) == shmpool::Value(144);
    list.unlink();
    fmt::print("{}\n", ok ? "demo ok" : "demo FAILED");
    return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        return run(argc, argv);
    } catch (const std::exception& e) {  // what run() does not handle itself: a bug, or no memory
        std::fprintf(stderr, "shm_demo: error: %s\n", e.what());
    } catch (...) {
        std::fprintf(stderr, "shm_demo: error: unknown exception\n");
    }
    return 1;
}
