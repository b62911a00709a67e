// SharedMemory: creation, attachment, names, errors, and the ENOSPC-instead-of-SIGBUS promise.
#include "shmpool/shm/shared_memory.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <regex>
#include <vector>

#include "posix/sys.hpp"
#include "shmpool/shm/block_info.hpp"
#include "test_support.hpp"

using shmpool::SharedMemory;
using shmpool::test::block_exists;
using shmpool::test::unique_name;

namespace {

class SharedMemoryTest : public ::testing::Test {
  protected:
    void TearDown() override { shmpool::sys::clear_injected_failures(); }
};

// Runs f, expects std::system_error with `err`, and returns its message.
template <class F>
std::string expect_errno(F f, int err) {
    try {
        f();
    } catch (const std::system_error& e) {
        EXPECT_EQ(e.code().value(), err) << e.what();
        EXPECT_EQ(e.code().category(), std::generic_category());
        return e.what();
    }
    ADD_FAILURE() << "no std::system_error thrown";
    return {};
}

}  // namespace

TEST_F(SharedMemoryTest, RandomNameIsPsmAndEightHexDigits) {
    SharedMemory shm = SharedMemory::create(64);
    EXPECT_TRUE(std::regex_match(shm.name(), std::regex("psm_[0-9a-f]{8}")));
    EXPECT_LE(shm.name().size(), 14u);
    EXPECT_TRUE(block_exists(shm.name()));
    shm.unlink();
}

TEST_F(SharedMemoryTest, RandomNamesDiffer) {
    SharedMemory a = SharedMemory::create(8);
    SharedMemory b = SharedMemory::create(8);
    EXPECT_NE(a.name(), b.name());
    a.unlink();
    b.unlink();
}

TEST_F(SharedMemoryTest, AttachSeesTheCreatorsBytesAndSize) {
    std::string name = unique_name();
    SharedMemory owner = SharedMemory::create(name, 5000);
    EXPECT_EQ(owner.size(), 5000u);
    std::memcpy(owner.data(), "hello", 5);
    SharedMemory reader = SharedMemory::attach(name);
    EXPECT_EQ(reader.size(), 5000u);
    EXPECT_EQ(std::memcmp(reader.data(), "hello", 5), 0);
    reader.data()[5] = std::byte{'!'};
    EXPECT_EQ(owner.data()[5], std::byte{'!'});
    owner.unlink();
}

TEST_F(SharedMemoryTest, NewBlockIsZeroFilledWithModeSixHundred) {
    std::string name = unique_name();
    SharedMemory shm = SharedMemory::create(name, 100);
    for (std::byte b : shm.buf())
        ASSERT_EQ(b, std::byte{0});
    auto info = shmpool::stat_block(name);
    ASSERT_TRUE(info);
    EXPECT_EQ(info->mode, 0600u);
    EXPECT_EQ(info->size, 100u);
    shm.unlink();
}

TEST_F(SharedMemoryTest, CreateFailsWithExistsForATakenName) {
    std::string name = unique_name();
    SharedMemory shm = SharedMemory::create(name, 16);
    std::string what = expect_errno([&] { SharedMemory::create(name, 16); }, EEXIST);
    EXPECT_NE(what.find(name), std::string::npos) << what;
    shm.unlink();
}

TEST_F(SharedMemoryTest, AttachFailsWithNotFoundAfterUnlink) {
    std::string name = unique_name();
    SharedMemory shm = SharedMemory::create(name, 16);
    shm.unlink();
    std::string what = expect_errno([&] { SharedMemory::attach(name); }, ENOENT);
    EXPECT_NE(what.find(name), std::string::npos) << what;
    // The creator's mapping stays usable after unlink, as with POSIX.
    shm.data()[0] = std::byte{1};
    expect_errno([&] { shm.unlink(); }, ENOENT);
}

TEST_F(SharedMemoryTest, ZeroSizeIsInvalidArgument) {
    std::string name = unique_name();
    EXPECT_THROW(SharedMemory::create(name, 0), std::invalid_argument);
    EXPECT_THROW(SharedMemory::create(0), std::invalid_argument);
    EXPECT_FALSE(block_exists(name));
}

TEST_F(SharedMemoryTest, BadNamesAreInvalidArgument) {
    for (std::string bad :
         {std::string(""), std::string("/"), std::string("a/b"), std::string("a\0b", 3),
          std::string(256, 'x'), std::string("."), std::string(".."), std::string("//x")}) {
        EXPECT_THROW(SharedMemory::create(bad, 8), std::invalid_argument) << bad;
        EXPECT_THROW(SharedMemory::attach(bad), std::invalid_argument) << bad;
        EXPECT_THROW(SharedMemory::remove(bad), std::invalid_argument) << bad;
    }
}

TEST_F(SharedMemoryTest, LeadingSlashIsAcceptedAndDropped) {
    std::string name = unique_name();
    SharedMemory shm = SharedMemory::create("/" + name, 8);
    EXPECT_EQ(shm.name(), name);
    SharedMemory::remove("/" + name);
    EXPECT_FALSE(block_exists(name));
}

TEST_F(SharedMemoryTest, CloseIsIdempotentKeepsTheNameAndNeverUnlinks) {
    std::string name = unique_name();
    SharedMemory shm = SharedMemory::create(name, 8);
    shm.close();
    shm.close();
    EXPECT_FALSE(shm.is_open());
    EXPECT_EQ(shm.size(), 0u);
    EXPECT_EQ(shm.name(), name);
    EXPECT_TRUE(block_exists(name));
    shm.unlink();
    EXPECT_FALSE(block_exists(name));
}

TEST_F(SharedMemoryTest, DestructorDoesNotUnlink) {
    std::string name = unique_name();
    { SharedMemory shm = SharedMemory::create(name, 8); }
    EXPECT_TRUE(block_exists(name));
    SharedMemory::remove(name);
}

TEST_F(SharedMemoryTest, MoveLeavesTheSourceEmpty) {
    std::string name = unique_name();
    SharedMemory a = SharedMemory::create(name, 8);
    std::byte* data = a.data();
    SharedMemory b = std::move(a);
    EXPECT_FALSE(
        a.is_open());  // NOLINT(bugprone-use-after-move): the moved-from state is specified
    EXPECT_EQ(b.data(), data);
    SharedMemory c;
    c = std::move(b);
    EXPECT_EQ(c.data(), data);
    c.unlink();
}

TEST_F(SharedMemoryTest, ReadOnlyAttachReadsAndReportsReadOnly) {
    std::string name = unique_name();
    SharedMemory shm = SharedMemory::create(name, 8);
    shm.data()[0] = std::byte{7};
    SharedMemory ro = SharedMemory::attach(name, {.access = shmpool::Access::read_only});
    EXPECT_TRUE(ro.read_only());
    EXPECT_EQ(ro.data()[0], std::byte{7});
    shm.unlink();
}

TEST_F(SharedMemoryTest, EmptyBlockCannotBeAttached) {
    std::string name = unique_name();
    int fd = ::shm_open(("/" + name).c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
    ASSERT_GE(fd, 0);
    ::close(fd);
    std::string what = expect_errno([&] { SharedMemory::attach(name); }, EINVAL);
    EXPECT_NE(what.find("empty"), std::string::npos);
    SharedMemory::remove(name);
}

TEST_F(SharedMemoryTest, TrackOptionIsRecorded) {
    SharedMemory tracked = SharedMemory::create(8);
    SharedMemory untracked = SharedMemory::create(8, {.track = false});
    EXPECT_TRUE(tracked.tracked());
    EXPECT_FALSE(untracked.tracked());
    tracked.unlink();
    untracked.unlink();
}

TEST_F(SharedMemoryTest, FullShmIsEnospcNamingSizeFreeSpaceAndHint) {
    struct statvfs st {};
    ASSERT_EQ(::statvfs("/dev/shm", &st), 0);
    std::size_t too_big =
        static_cast<std::size_t>(st.f_bavail) * st.f_frsize + (std::size_t{1} << 30);
    std::string name = unique_name();
    std::string what = expect_errno([&] { SharedMemory::create(name, too_big); }, ENOSPC);
    EXPECT_NE(what.find(name), std::string::npos) << what;
    EXPECT_NE(what.find(std::to_string(too_big)), std::string::npos) << what;
    EXPECT_NE(what.find("free"), std::string::npos) << what;
    EXPECT_NE(what.find("--shm-size"), std::string::npos) << what;
    EXPECT_FALSE(block_exists(name));
}

TEST_F(SharedMemoryTest, EnospcFromReservationRemovesTheNewBlock) {
    std::string name = unique_name();
    shmpool::sys::inject_failure(shmpool::sys::Call::fallocate, ENOSPC);
    expect_errno([&] { SharedMemory::create(name, 4096); }, ENOSPC);
    EXPECT_FALSE(block_exists(name));
}

TEST_F(SharedMemoryTest, WithoutReservationTheBlockIsSizedSparsely) {
    std::string name = unique_name();
    shmpool::sys::inject_failure(shmpool::sys::Call::fallocate, ENOSPC);  // must not be called
    SharedMemory shm = SharedMemory::create(name, std::size_t{1} << 30, {.reserve = false});
    EXPECT_EQ(shm.size(), std::size_t{1} << 30);
    struct stat st {};
    ASSERT_EQ(::stat(("/dev/shm/" + name).c_str(), &st), 0);
    EXPECT_LT(st.st_blocks * 512, 1 << 20);  // nothing allocated yet
    shm.unlink();
}

TEST_F(SharedMemoryTest, PrefaultMapsEveryPageAndKeepsTheData) {
    std::string name = unique_name();
    const std::size_t size = std::size_t{8} << 20;
    SharedMemory shm = SharedMemory::create(name, size, {.reserve = false});
    shmpool::test::Unlinker u{name};
    const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
    std::vector<unsigned char> resident(size / page);
    auto count_resident = [&] {
        EXPECT_EQ(::mincore(shm.data(), size, resident.data()), 0);
        return std::count_if(resident.begin(), resident.end(),
                             [](unsigned char r) { return r & 1; });
    };
    shm.data()[5] = std::byte{42};
    const auto before = count_resident();  // sparse: the page just written, about
    ASSERT_LT(before, static_cast<std::ptrdiff_t>(resident.size()) / 2);
    shm.prefault();
    // A hint: kernels before 5.14 (no MADV_POPULATE_WRITE) leave the other pages alone.
    if (count_resident() == before) GTEST_SKIP() << "this kernel does not pre-fault on request";
    EXPECT_EQ(count_resident(), static_cast<std::ptrdiff_t>(resident.size()));
    EXPECT_EQ(shm.data()[5], std::byte{42});
    SharedMemory reader = SharedMemory::attach(name, {.access = shmpool::Access::read_only});
    reader.prefault();
    EXPECT_EQ(reader.data()[5], std::byte{42});
    reader.close();
    reader.prefault();  // closed: nothing to do
}

TEST_F(SharedMemoryTest, ReservationAllocatesThePages) {
    std::string name = unique_name();
    SharedMemory shm = SharedMemory::create(name, std::size_t{4} << 20);
    struct stat st {};
    ASSERT_EQ(::stat(("/dev/shm/" + name).c_str(), &st), 0);
    EXPECT_GE(st.st_blocks * 512, std::size_t{4} << 20);
    shm.unlink();
}

TEST_F(SharedMemoryTest, EintrIsRetried) {
    std::string name = unique_name();
    shmpool::sys::inject_failure(shmpool::sys::Call::fallocate, EINTR, 3);
    SharedMemory shm = SharedMemory::create(name, 4096);
    EXPECT_EQ(shm.size(), 4096u);
    shm.unlink();
}

TEST_F(SharedMemoryTest, EmfileIsASystemErrorNamingTheBlock) {
    std::string name = unique_name();
    shmpool::sys::inject_failure(shmpool::sys::Call::shm_open, EMFILE);
    std::string what = expect_errno([&] { SharedMemory::attach(name); }, EMFILE);
    EXPECT_NE(what.find(name), std::string::npos);
}

TEST_F(SharedMemoryTest, MmapFailureRemovesTheNewBlock) {
    std::string name = unique_name();
    shmpool::sys::inject_failure(shmpool::sys::Call::mmap, ENOMEM);
    expect_errno([&] { SharedMemory::create(name, 4096); }, ENOMEM);
    EXPECT_FALSE(block_exists(name));
}

TEST_F(SharedMemoryTest, RandomNameCollisionIsRetried) {
    shmpool::sys::inject_failure(shmpool::sys::Call::shm_open, EEXIST, 2);
    SharedMemory shm = SharedMemory::create(8);
    EXPECT_TRUE(block_exists(shm.name()));
    shm.unlink();
}

TEST_F(SharedMemoryTest, StatBlockFindsOnlyExistingBlocks) {
    std::string name = unique_name();
    EXPECT_FALSE(shmpool::stat_block(name));
    SharedMemory shm = SharedMemory::create(name, 24);
    auto info = shmpool::stat_block(name);
    ASSERT_TRUE(info);
    EXPECT_EQ(info->size, 24u);
    EXPECT_EQ(info->uid, ::getuid());
    ASSERT_TRUE(info->shareable_list.has_value());
    EXPECT_TRUE(*info->shareable_list);  // zeros read as an empty list, as CPython would read them
    std::memset(shm.data(), 0xff, 8);    // a negative item count
    EXPECT_FALSE(*shmpool::stat_block(name)->shareable_list);
    shm.unlink();
}

TEST_F(SharedMemoryTest, AForkedChildNeverRepeatsItsParentsRandomNames) {
    SharedMemory first = SharedMemory::create(8, {.track = false});  // fills this thread's batch
    int fds[2];
    ASSERT_EQ(::pipe(fds), 0);
    pid_t pid = ::fork();
    if (pid == 0) {
        ::close(fds[0]);
        try {
            SharedMemory child = SharedMemory::create(8, {.track = false});
            child.unlink();
            (void)!::write(fds[1], child.name().data(), child.name().size());
        } catch (...) {
        }
        ::_exit(0);
    }
    ::close(fds[1]);
    char buf[64] = {};
    ssize_t n = ::read(fds[0], buf, sizeof buf - 1);
    ::close(fds[0]);
    int status = 0;
    ::waitpid(pid, &status, 0);
    SharedMemory next = SharedMemory::create(8, {.track = false});
    ASSERT_GT(n, 0);
    EXPECT_NE(std::string(buf, static_cast<std::size_t>(n)), next.name());
    first.unlink();
    next.unlink();
}
