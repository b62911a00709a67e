// A child process for the multiprocess tests: attaches, creates, owns, locks, and dies on demand.
//
// Commands that own or hold something print "ready <tracker-pid>" (or "locked") once done, then
// end the way HOW says: kill (SIGKILL itself), abort, segv, exit (exit status 3), throw (an
// uncaught exception), return (exit 0 without cleaning up), wait (until stdin closes, then exit 0).
#include <fmt/format.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <iostream>
#include <stdexcept>
#include <string>

#include "shmpool/shm/robust_mutex.hpp"
#include "shmpool/shm/shareable_list.hpp"
#include "shmpool/shm/tracker.hpp"

using shmpool::ShareableList;
using shmpool::SharedMemory;
using shmpool::Value;

namespace {

Value parse_value(const std::string& kind, const std::string& text) {
    if (kind == "int") return std::stoll(text);
    if (kind == "float") return std::stod(text);
    if (kind == "bool") return text == "true";
    if (kind == "str") return text;
    if (kind == "bytes") return shmpool::Bytes(text);
    return shmpool::none;
}

void ready(const char* word = "ready") {
    fmt::print("{} {}\n", word, shmpool::Tracker::pid());
    std::fflush(stdout);
}

[[noreturn]] void finish(const std::string& how) {
    std::fflush(stdout);
    if (how == "kill") ::kill(::getpid(), SIGKILL);
    if (how == "abort") std::abort();
    if (how == "segv") {
        volatile int* p = nullptr;
        *p = 1;  // NOLINT: the point is to crash
    }
    if (how == "exit") std::exit(3);
    if (how == "throw") throw std::runtime_error("uncaught on purpose");
    if (how == "wait") {
        std::string line;
        while (std::getline(std::cin, line)) {
        }
    }
    std::exit(0);
}

int run(int argc, char** argv) {
    if (argc < 3) return 2;
    std::string cmd = argv[1];
    std::string name = argv[2];
    std::string how = argc > 3 ? argv[argc - 1] : "return";
    if (cmd == "fill" && argc == 4) {  // fill NAME BYTE
        SharedMemory shm = SharedMemory::attach(name);
        std::memset(shm.data(), std::atoi(argv[3]), shm.size());
        return 0;
    }
    if (cmd == "list-set" && argc == 6) {  // list-set NAME INDEX KIND VALUE
        ShareableList list = ShareableList::attach(name);
        list.set(std::atoll(argv[3]), parse_value(argv[4], argv[5]));
        return 0;
    }
    if (cmd == "list-create" && argc == 3) {  // list-create NAME: left for the parent to unlink
        ShareableList::create(name, {1, "child", 2.5, shmpool::none}, {.track = false});
        return 0;
    }
    if (cmd == "list-repr" && argc == 3) {
        fmt::print("{}\n", ShareableList::attach(name));
        return 0;
    }
    if (cmd == "attach-exit" && argc == 3) {
        SharedMemory shm = SharedMemory::attach(name);
        return 0;
    }
    if (cmd == "own") {  // own NAME... HOW: tracked blocks owned by this process
        for (int i = 2; i < argc - 1; ++i)
            SharedMemory::create(argv[i], 64);
        ready();
        finish(how);
    }
    if (cmd == "own-untracked" && argc == 4) {
        SharedMemory::create(name, 64, {.track = false});
        ready();
        finish(how);
    }
    if (cmd == "own-shared" && argc == 4) {  // shared lifetime
        SharedMemory::create(name, 64, {.shared_lifetime = true});
        ready();
        finish(how);
    }
    if (cmd == "use-shared" && argc == 4) {
        SharedMemory shm = SharedMemory::attach(name, {.share_lifetime = true});
        ready();
        finish(how);
    }
    if (cmd == "attach" && argc == 4) {
        SharedMemory shm = SharedMemory::attach(name);
        ready();
        finish(how);
    }
    if (cmd == "transfer" && argc == 4) {  // transfer NAME PID
        SharedMemory::create(name, 64);
        shmpool::transfer_ownership(name, std::atoi(argv[3]));
        ready();
        return 0;
    }
    if (cmd == "release" && argc == 3) {
        SharedMemory::create(name, 64);
        shmpool::release_ownership(name);
        ready();
        return 0;
    }
    if (cmd == "unlink-recreate" && argc == 3) {  // tracked, unlinked, re-created untracked
        SharedMemory::create(name, 64).unlink();
        SharedMemory::create(name, 64, {.track = false});
        ready();
        return 0;
    }
    if (cmd == "lock" && argc == 4) {  // lock NAME HOW: take the lock of a guarded block
        SharedMemory shm = SharedMemory::attach(name);
        shmpool::LockResult r = shm.mutex().lock();
        std::memset(shm.data(), 0xab, shm.size());  // "torn" data the next holder must repair
        fmt::print("locked {}\n", r == shmpool::LockResult::owner_died ? "owner-died" : "clean");
        std::fflush(stdout);
        finish(how);
    }
    if (cmd == "wait-condition" && argc == 3) {  // waits until byte 0 of a guarded block is set
        SharedMemory shm = SharedMemory::attach(name);
        shmpool::RobustLock lock(shm.mutex());
        fmt::print("waiting\n");
        std::fflush(stdout);
        bool ok = shm.condition().wait_for(lock, std::chrono::seconds(10),
                                           [&] { return shm.data()[0] != std::byte{0}; });
        fmt::print("{}\n", ok ? "woken" : "timed out");
        return ok ? 0 : 1;
    }
    return 2;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        return run(argc, argv);
    } catch (const std::runtime_error& e) {
        if (std::string(e.what()) == "uncaught on purpose") throw;
        fmt::print(stderr, "shm_child: {}\n", e.what());
        return 1;
    } catch (const std::exception& e) {
        fmt::print(stderr, "shm_child: {}\n", e.what());
        return 1;
    }
}
