// A child process for the multiprocess tests: attaches blocks and lists and reads or writes them.
#include <fmt/format.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>

#include "shmpool/shm/shareable_list.hpp"

using shmpool::ShareableList;
using shmpool::SharedMemory;
using shmpool::Value;

namespace {

Value parse_value(const std::string& kind, const std::string& text) {
    if (kind == "int") return std::stoll(text);
    if (kind == "float") return std::stod(text);
    if (kind == "bool") return text == "true";
    if (kind == "str") return text;
    if (kind == "bytes") return shmpool::Bytes(text);
    return shmpool::none;
}

int run(int argc, char** argv) {
    if (argc < 3) return 2;
    std::string cmd = argv[1];
    std::string name = argv[2];
    if (cmd == "fill" && argc == 4) {  // fill NAME BYTE
        SharedMemory shm = SharedMemory::attach(name);
        std::memset(shm.data(), std::atoi(argv[3]), shm.size());
        return 0;
    }
    if (cmd == "list-set" && argc == 6) {  // list-set NAME INDEX KIND VALUE
        ShareableList list = ShareableList::attach(name);
        list.set(std::atoll(argv[3]), parse_value(argv[4], argv[5]));
        return 0;
    }
    if (cmd == "list-create" && argc == 3) {  // list-create NAME: left for the parent to unlink
        ShareableList::create(name, {1, "child", 2.5, shmpool::none}, {.track = false});
        return 0;
    }
    if (cmd == "list-repr" && argc == 3) {
        fmt::print("{}\n", ShareableList::attach(name));
        return 0;
    }
    if (cmd == "attach-exit" && argc == 3) {
        SharedMemory shm = SharedMemory::attach(name);
        return 0;
    }
    return 2;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        return run(argc, argv);
    } catch (const std::exception& e) {
        fmt::print(stderr, "shm_child: {}\n", e.what());
        return 1;
    }
}
