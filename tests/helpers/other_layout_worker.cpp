// A worker program of "another shmpool": built with another protocol layout version (see
// tests/CMakeLists.txt). It only ever runs as a pool's worker, and refuses the pool's block.
#include "shmpool/framework/pool.hpp"

int main(int argc, char** argv) {
    shmpool::init(argc, argv);
    return 1;  // not a worker: nothing to do
}
