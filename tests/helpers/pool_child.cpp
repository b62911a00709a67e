// A program that runs a pool, for tests that kill the parent: prints "ready <block> <pid>..."
// and waits until its stdin closes. With "fork_server" last, its pool forks its workers from a
// fork server, whose pid the ready line ends with ("server <pid>").
#include <fmt/format.h>
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <string>

#include "shmpool/framework/pool.hpp"

void say(std::string words) {
    std::fprintf(stderr, "%s\nand a last line without newline", words.c_str());
}
SHMPOOL_TASK(say_task, say);

// The pid of the worker's parent: the fork server for a forked worker.
int parent_of_worker(int) {
    return ::getppid();
}
SHMPOOL_TASK(parent_of_worker_task, parent_of_worker);

int main(int argc, char** argv) {
    shmpool::init(argc, argv);
    const bool forked = argc >= 2 && std::string(argv[argc - 1]) == "fork_server";
    const shmpool::StartMethod method =
        forked ? shmpool::StartMethod::fork_server : shmpool::StartMethod::exec;
    if (argc >= 3 && std::string(argv[1]) == "say") {  // say WORDS: a task writes to stderr
        shmpool::Pool pool({.workers = 1, .start_method = method});
        pool.submit(say_task, std::string(argv[2])).get();
        return 0;
    }
    shmpool::Pool pool({.workers = 2, .start_method = method});
    fmt::print("ready {} {}", pool.control_block(), fmt::join(pool.worker_pids(), " "));
    if (forked) fmt::print(" server {}", pool.submit(parent_of_worker_task, 0).get());
    fmt::print("\n");
    std::cout.flush();
    std::fflush(stdout);
    std::string line;
    while (std::getline(std::cin, line)) {
    }
}
