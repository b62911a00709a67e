// main() of the shm test programs: GoogleTest plus the /dev/shm leak check.
#include <gtest/gtest.h>

#include "test_support.hpp"

int main(int argc, char** argv) {
    ::testing::InitGoogleTest(&argc, argv);
    ::testing::AddGlobalTestEnvironment(shmpool::test::make_block_leak_check());
    return RUN_ALL_TESTS();
}
