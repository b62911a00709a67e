// Creates, reads and removes a ShareableList through the installed headers and library.
#include <fmt/format.h>

#include <shmpool/shm/shareable_list.hpp>

int main() {
    auto list = shmpool::ShareableList::create({1, "installed", 2.5}, {.track = false});
    auto again = shmpool::ShareableList::attach(list.name());
    bool ok = again.get(1) == shmpool::Value("installed");
    list.unlink();
    fmt::print("{}\n", ok ? "consumer ok" : "consumer FAILED");
    return ok ? 0 : 1;
}
