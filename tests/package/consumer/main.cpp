// Creates, reads and removes a tracked ShareableList through the installed headers, library and
// shmpool-tracker.
#include <fmt/format.h>

#include <shmpool/shm/shareable_list.hpp>
#include <shmpool/shm/tracker.hpp>

int main() {
    auto list = shmpool::ShareableList::create({1, "installed", 2.5});
    auto again = shmpool::ShareableList::attach(list.name());
    auto tracked = shmpool::tracked_block(list.name());
    bool ok = again.get(1) == shmpool::Value("installed") && shmpool::Tracker::pid() > 0 &&
              tracked && tracked->owner_alive;
    list.unlink();
    fmt::print("{}\n", ok ? "consumer ok" : "consumer FAILED");
    return ok ? 0 : 1;
}
