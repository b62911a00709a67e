// A program that runs a pool, for tests that kill the parent: prints "ready <block> <pid>..."
// and waits until its stdin closes.
#include <fmt/format.h>

#include <iostream>
#include <string>

#include "shmpool/framework/pool.hpp"

int main(int argc, char** argv) {
    shmpool::init(argc, argv);
    shmpool::Pool pool({.workers = 2});
    fmt::print("ready {} {}\n", pool.control_block(), fmt::join(pool.worker_pids(), " "));
    std::cout.flush();
    std::fflush(stdout);
    std::string line;
    while (std::getline(std::cin, line)) {
    }
}
