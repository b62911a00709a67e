// Uses the installed headers, libraries and shmpool-tracker: a tracked ShareableList, and a pool.
#include <fmt/format.h>

#include <shmpool/framework/pool.hpp>
#include <shmpool/shm/shareable_list.hpp>
#include <shmpool/shm/tracker.hpp>

int triple(int x) {
    return 3 * x;
}
SHMPOOL_TASK(triple_task, triple);

int main(int argc, char** argv) {
    shmpool::init(argc, argv);
    auto list = shmpool::ShareableList::create({1, "installed", 2.5});
    auto again = shmpool::ShareableList::attach(list.name());
    auto tracked = shmpool::tracked_block(list.name());
    bool ok = again.get(1) == shmpool::Value("installed") && shmpool::Tracker::pid() > 0 &&
              tracked && tracked->owner_alive;
    list.unlink();
    shmpool::Pool pool({.workers = 2});
    ok = ok && pool.map(triple_task, std::vector<int>{1, 2, 3}) == std::vector<int>{3, 6, 9};
    fmt::print("{}\n", ok ? "consumer ok" : "consumer FAILED");
    return ok ? 0 : 1;
}
