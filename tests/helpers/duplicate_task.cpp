// A program that registers two different functions under one task name: Pool's constructor must
// refuse to start with a std::logic_error naming it (registration itself cannot throw, since it
// runs before main).
#include <cstdio>
#include <shmpool/framework/pool.hpp>
#include <stdexcept>
#include <string>

namespace {
int one(int x) {
    return x;
}
int two(int x) {
    return 2 * x;
}
}  // namespace

const shmpool::Task<&one> first_task{"same_name"};
const shmpool::Task<&two> second_task{"same_name"};

int main(int argc, char** argv) {
    shmpool::init(argc, argv);
    try {
        shmpool::Pool pool({.workers = 1});
        std::puts("FAIL: the pool started");
        return 1;
    } catch (const std::logic_error& e) {
        std::printf("refused: %s\n", e.what());
        return std::string(e.what()).find("'same_name'") == std::string::npos;
    }
}
