// main() of the framework test programs: the same program is re-executed as pool workers.
#include <gtest/gtest.h>

#include "gate.hpp"
#include "shmpool/framework/pool.hpp"
#include "test_support.hpp"

int main(int argc, char** argv) {
    shmpool::test::at_worker_start();  // a test may kill workers during start-up (gate.hpp)
    shmpool::init(argc, argv);         // in a worker, runs the worker and never returns
    ::testing::InitGoogleTest(&argc, argv);
    ::testing::AddGlobalTestEnvironment(shmpool::test::make_block_leak_check());
    return RUN_ALL_TESTS();
}
