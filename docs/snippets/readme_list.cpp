// The README's first example, compiled and run by the test suite (docs cannot rot).
#include <fmt/format.h>

// [readme-list]
#include <shmpool/shm/shareable_list.hpp>

int main() {
    // Create a list; its name is how other processes, C++ or Python, find it.
    auto list = shmpool::ShareableList::create(
        {42, "hé", shmpool::Bytes("\x01"), shmpool::none, true, 2.5});
    fmt::print("{}\n", list);  // ShareableList([42, 'hé', b'\x01', None, True, 2.5], name='psm_…')

    // Any other process attaches by name, and reads and writes in place.
    auto same = shmpool::ShareableList::attach(list.name());
    same[0] = same.get(0).get<std::int64_t>() + 1;

    // Python attaches the same bytes:
    //   shared_memory.ShareableList(name="psm_…")   ->   ShareableList([43, 'hé', ...])
    fmt::print("{}\n", same);
    list.unlink();  // as in CPython, closing never removes a block; unlink() does
}
// [readme-list]
