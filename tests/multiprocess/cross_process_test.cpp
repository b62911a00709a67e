// Real processes sharing real blocks: a child attaches and writes, the parent reads, and back.
#include <gtest/gtest.h>

#include <thread>

#include "shmpool/shm/shareable_list.hpp"
#include "test_support.hpp"

using shmpool::ShareableList;
using shmpool::SharedMemory;
using shmpool::Value;
using shmpool::test::helper_path;
using shmpool::test::run_process;
using shmpool::test::unique_name;

namespace {

void child(const std::vector<std::string>& args) {
    std::vector<std::string> argv{helper_path()};
    argv.insert(argv.end(), args.begin(), args.end());
    auto r = run_process(argv);
    ASSERT_EQ(r.exit_code, 0) << r.err;
}

}  // namespace

TEST(CrossProcess, ChildWritesTheBlockAndTheParentReadsIt) {
    std::string name = unique_name();
    SharedMemory shm = SharedMemory::create(name, 1 << 16);
    child({"fill", name, "171"});
    for (std::byte b : shm.buf())
        ASSERT_EQ(b, std::byte{171});
    shm.unlink();
}

TEST(CrossProcess, ChildSetsListItemsOfEveryTypeAndTheParentSeesThem) {
    std::string name = unique_name();
    ShareableList list = ShareableList::create(name, {0, "slot of sixteen.", 0.0, 0, 0, 0});
    child({"list-set", name, "0", "str", "8 bytes!"});
    child({"list-set", name, "1", "int", "-77"});
    child({"list-set", name, "2", "none", ""});
    child({"list-set", name, "3", "float", "2.25"});
    child({"list-set", name, "4", "bool", "true"});
    child({"list-set", name, "-1", "bytes", "raw"});
    EXPECT_EQ(list.to_vector(), (std::vector<Value>{"8 bytes!", -77, shmpool::none, 2.25, true,
                                                    shmpool::Bytes("raw")}));
    EXPECT_EQ(list.format(), "8sqxxxxxx?xdxxxxxxx?8s");
    list.unlink();
}

TEST(CrossProcess, ParentWritesAndTheChildReads) {
    std::string name = unique_name();
    ShareableList list = ShareableList::create(name, {1, 2});
    list.set(1, "parent");
    auto r = run_process({helper_path(), "list-repr", name});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(shmpool::test::chomp(r.out),
              fmt::format("ShareableList([1, 'parent'], name='{}')", name));
    list.unlink();
}

TEST(CrossProcess, ListCreatedByAChildOutlivesItAndIsReadByTheParent) {
    std::string name = unique_name();
    child({"list-create", name});
    ShareableList list = ShareableList::attach(name);
    EXPECT_EQ(list.to_vector(), (std::vector<Value>{1, "child", 2.5, shmpool::none}));
    list.unlink();
}

TEST(CrossProcess, AnAttachersExitNeverDestroysTheBlock) {
    std::string name = unique_name();
    SharedMemory shm = SharedMemory::create(name, 64);
    child({"attach-exit", name});
    EXPECT_TRUE(shmpool::test::block_exists(name));
    EXPECT_NO_THROW(SharedMemory::attach(name));
    shm.unlink();
}

TEST(CrossProcess, ConcurrentChildrenWriteTheirOwnItems) {
    std::string name = unique_name();
    ShareableList list = ShareableList::create(name, {0, 0, 0, 0});
    std::vector<std::thread> threads;
    std::vector<int> codes(4, -1);
    for (int i = 0; i < 4; ++i) {
        threads.emplace_back([&, i] {
            codes[i] = run_process({helper_path(), "list-set", name, std::to_string(i), "int",
                                    std::to_string(100 + i)})
                           .exit_code;
        });
    }
    for (auto& t : threads)
        t.join();
    EXPECT_EQ(codes, (std::vector<int>{0, 0, 0, 0}));
    EXPECT_EQ(list.to_vector(), (std::vector<Value>{100, 101, 102, 103}));
    list.unlink();
}
