// Node identity from /proc and the shared-memory directory (through the system-call seam).
#include "node_identity.hpp"

#include <fmt/format.h>
#include <sys/stat.h>

#include <fstream>

#include "posix/sys.hpp"
#include "shmpool/shm/block_info.hpp"

namespace shmpool::cluster {
namespace {

std::string first_line(const char* path) {
    std::ifstream in(path);
    std::string line;
    std::getline(in, line);
    return line;
}

}  // namespace

std::string shm_identity() {
    struct ::stat st {};
    const std::string dir(shm_directory());
    if (sys::stat(dir.c_str(), &st) != 0) return first_line("/proc/sys/kernel/random/boot_id");
    return fmt::format("{}:{}:{}", first_line("/proc/sys/kernel/random/boot_id"), st.st_dev,
                       st.st_ino);
}

std::string host_name() {
    return first_line("/proc/sys/kernel/hostname");
}

}  // namespace shmpool::cluster
