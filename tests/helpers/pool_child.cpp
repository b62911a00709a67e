// A program that runs a pool, for tests that kill the parent: prints "ready <block> <pid>..."
// and waits until its stdin closes.
#include <fmt/format.h>

#include <cstdio>
#include <iostream>
#include <string>

#include "shmpool/framework/pool.hpp"

void say(std::string words) {
    std::fprintf(stderr, "%s\nand a last line without newline", words.c_str());
}
SHMPOOL_TASK(say_task, say);

int main(int argc, char** argv) {
    shmpool::init(argc, argv);
    if (argc == 3 && std::string(argv[1]) == "say") {  // say WORDS: a task writes to stderr
        shmpool::Pool pool({.workers = 1});
        pool.submit(say_task, std::string(argv[2])).get();
        return 0;
    }
    shmpool::Pool pool({.workers = 2});
    fmt::print("ready {} {}\n", pool.control_block(), fmt::join(pool.worker_pids(), " "));
    std::cout.flush();
    std::fflush(stdout);
    std::string line;
    while (std::getline(std::cin, line)) {
    }
}
