// libFuzzer target: attach a ShareableList to arbitrary block contents, then read and write it.
// Every input must give either a list or CorruptedBlock, and every item a value or an error.
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <string>

#include "shmpool/shm/shareable_list.hpp"

using shmpool::ShareableList;
using shmpool::SharedMemory;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size == 0) return 0;
    static const std::string name = "shmpool_fuzz_" + std::to_string(::getpid());
    {
        SharedMemory shm = SharedMemory::create(name, size, {.track = false, .reserve = false});
        std::memcpy(shm.data(), data, size);
    }
    try {
        ShareableList list = ShareableList::attach(name);
        SharedMemory::remove(name);  // before anything else can fail: no block outlives the input
        (void)list.format();
        for (std::size_t i = 0; i < list.size(); ++i) {
            auto index = static_cast<std::ptrdiff_t>(i);
            try {
                shmpool::Value v = list.get(index);
                (void)list.type_at(index);
                (void)shmpool::repr(v);
                list.set(index, v);  // writing back what was read must succeed
                if (list.get(index) != v && v == v) __builtin_trap();
            } catch (const shmpool::CorruptedBlock&) {
            }
            list.set(index, "x");
        }
        (void)list.count(1);
    } catch (const shmpool::CorruptedBlock&) {
        SharedMemory::remove(name);
    }
    return 0;
}
