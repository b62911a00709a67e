// shmpool-tracker: the resource tracker process, started by the shm library (see tracker.hpp).
#include "tracker_protocol.hpp"

int main(int argc, char** argv) {
    return shmpool::detail::tracker_main(argc, argv);
}
