// The resource tracker and ownership, with real processes dying in every way and real blocks.
#include "shmpool/shm/tracker.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <system_error>

#include "posix/sys.hpp"
#include "shmpool/shm/shared_memory.hpp"
#include "test_support.hpp"

using shmpool::SharedMemory;
using shmpool::test::block_exists;
using shmpool::test::Child;
using shmpool::test::hang_guard;
using shmpool::test::unique_name;
using shmpool::test::Unlinker;
using shmpool::test::wait_for_removal;
using namespace std::chrono_literals;

namespace {

std::vector<std::string> child_args(std::initializer_list<std::string> args) {
    std::vector<std::string> argv{shmpool::test::helper_path()};
    argv.insert(argv.end(), args);
    return argv;
}

// The tracker pid a child announced in its "ready <pid>" line.
pid_t ready_tracker(Child& child) {
    auto line = child.read_line();
    EXPECT_TRUE(line && line->rfind("ready ", 0) == 0)
        << (line ? *line : "<no line>") << child.read_stderr(1s);
    return line ? std::atoi(line->c_str() + 6) : 0;
}

// Returns once the tracker has handled every death before this call: a sentinel owner dies, and
// the tracker handles deaths in the order their pidfds became ready. Waits as long as it takes
// (up to the hang guard): a block still there afterwards is one the tracker decided to keep.
void settle() {
    std::string sentinel = unique_name();
    Child child(child_args({"own", sentinel, "kill"}));
    ready_tracker(child);
    ASSERT_TRUE(child.wait());
    ASSERT_TRUE(wait_for_removal(sentinel, hang_guard));
}

class TrackerTest : public ::testing::Test {
  protected:
    // This test process is the root; children inherit its tracker through SHMPOOL_TRACKER.
    void SetUp() override { tracker_ = shmpool::Tracker::ensure(); }
    pid_t tracker_ = 0;
};

class OwnerDeath : public TrackerTest, public ::testing::WithParamInterface<const char*> {};

}  // namespace

TEST_P(OwnerDeath, UnlinksTheOwnersBlocks) {
    std::string a = unique_name();
    std::string b = unique_name();
    Unlinker cleanup{a, b};
    Child child(child_args({"own", a, b, GetParam()}));
    EXPECT_EQ(ready_tracker(child), tracker_);  // the inherited tracker, not a new one
    ASSERT_TRUE(child.wait());
    EXPECT_TRUE(wait_for_removal(a, hang_guard)) << a << " still exists after the owner died";
    EXPECT_TRUE(wait_for_removal(b, hang_guard)) << b;
}

INSTANTIATE_TEST_SUITE_P(EveryWayToDie, OwnerDeath,
                         ::testing::Values("kill", "abort", "segv", "exit", "throw", "return"));

TEST_F(TrackerTest, AnAttachersDeathNeverDestroysTheBlock) {
    std::string name = unique_name();
    SharedMemory shm = SharedMemory::create(name, 64);
    Unlinker cleanup{name};
    Child child(child_args({"attach", name, "kill"}));
    ready_tracker(child);
    ASSERT_TRUE(child.wait());
    settle();
    auto blocks = shmpool::Tracker::blocks();
    EXPECT_TRUE(block_exists(name));
    bool listed = false;
    for (const auto& b : blocks)
        listed |= b.name == name && b.owner_pid == ::getpid();
    EXPECT_TRUE(listed);
    shm.unlink();
}

TEST_F(TrackerTest, UntrackedBlocksAreLeftAlone) {
    std::string name = unique_name();
    Unlinker cleanup{name};
    Child child(child_args({"own-untracked", name, "kill"}));
    ready_tracker(child);
    ASSERT_TRUE(child.wait());
    settle();
    EXPECT_TRUE(block_exists(name));
}

TEST_F(TrackerTest, UnlinkEndsOwnershipOfTheName) {
    std::string name = unique_name();
    Unlinker cleanup{name};
    Child child(child_args({"unlink-recreate", name}));
    ready_tracker(child);
    ASSERT_TRUE(child.wait());
    settle();
    EXPECT_TRUE(block_exists(name)) << "the untracked re-creation must survive";
}

TEST_F(TrackerTest, ABlockHandedOffSurvivesItsCreator) {
    std::string name = unique_name();
    Unlinker cleanup{name};
    Child child(child_args({"transfer", name, std::to_string(::getpid())}));
    ready_tracker(child);
    ASSERT_TRUE(child.wait());
    settle();
    auto tracked = shmpool::tracked_block(name);
    ASSERT_TRUE(tracked);
    EXPECT_EQ(tracked->owner_pid, ::getpid());
    EXPECT_TRUE(tracked->owner_alive);
    EXPECT_TRUE(block_exists(name));
    SharedMemory::remove(name);
    EXPECT_FALSE(shmpool::tracked_block(name));
}

TEST_F(TrackerTest, AnAdoptedBlockSurvivesItsCreator) {
    std::string name = unique_name();
    Unlinker cleanup{name};
    Child child(child_args({"own", name, "wait"}));
    ready_tracker(child);
    shmpool::adopt_ownership(name);
    EXPECT_EQ(shmpool::tracked_block(name)->owner_pid, ::getpid());
    child.kill(SIGKILL);
    ASSERT_TRUE(child.wait());
    settle();
    EXPECT_TRUE(block_exists(name));
    SharedMemory::remove(name);
}

TEST_F(TrackerTest, AReleasedBlockLivesOnUntracked) {
    std::string name = unique_name();
    Unlinker cleanup{name};
    Child child(child_args({"release", name}));
    ready_tracker(child);
    ASSERT_TRUE(child.wait());
    settle();
    EXPECT_FALSE(shmpool::tracked_block(name));
    EXPECT_TRUE(block_exists(name));
}

TEST_F(TrackerTest, HandOffErrorsAreClear) {
    std::string name = unique_name();
    SharedMemory shm = SharedMemory::create(name, 8, {.track = false});
    Unlinker cleanup{name};
    EXPECT_THROW(shmpool::release_ownership(name), std::invalid_argument);
    EXPECT_THROW(shmpool::transfer_ownership(name, 1), std::invalid_argument);
    EXPECT_THROW(shmpool::adopt_ownership(unique_name()), std::system_error);
    std::string owned = unique_name();
    SharedMemory mine = SharedMemory::create(owned, 8);
    Unlinker c2{owned};
    try {
        shmpool::transfer_ownership(owned, 999999);
        ADD_FAILURE() << "transfer to a non-existent process succeeded";
    } catch (const std::system_error& e) {
        EXPECT_EQ(e.code(), std::errc::no_such_process);
    }
}

TEST_F(TrackerTest, SharedLifetimeEndsWithTheLastUserInEitherOrder) {
    for (bool owner_first : {true, false}) {
        std::string name = unique_name();
        Unlinker cleanup{name};
        Child owner(child_args({"own-shared", name, "wait"}));
        ready_tracker(owner);
        Child user(child_args({"use-shared", name, "wait"}));
        ready_tracker(user);
        Child& first = owner_first ? owner : user;
        Child& last = owner_first ? user : owner;
        first.kill(SIGKILL);
        ASSERT_TRUE(first.wait());
        settle();
        EXPECT_TRUE(block_exists(name)) << "owner_first=" << owner_first;
        last.close_stdin();
        ASSERT_TRUE(last.wait());
        EXPECT_TRUE(wait_for_removal(name, hang_guard)) << "owner_first=" << owner_first;
    }
}

TEST_F(TrackerTest, SharingTheLifetimeOfAnOrdinaryBlockIsRefused) {
    std::string name = unique_name();
    SharedMemory shm = SharedMemory::create(name, 8);
    Unlinker cleanup{name};
    EXPECT_THROW(SharedMemory::attach(name, {.share_lifetime = true}), std::invalid_argument);
}

TEST_F(TrackerTest, TheTrackerSaysWhatItHolds) {
    std::string name = unique_name();
    SharedMemory shm = SharedMemory::create(name, 8, {.shared_lifetime = true});
    Unlinker cleanup{name};
    bool found = false;
    for (const auto& b : shmpool::Tracker::blocks()) {
        if (b.name != name) continue;
        found = true;
        EXPECT_EQ(b.owner_pid, ::getpid());
        EXPECT_TRUE(b.owner_alive);
        EXPECT_TRUE(b.shared_lifetime);
    }
    EXPECT_TRUE(found);
    bool listed = false;
    for (const auto& t : shmpool::Tracker::list_all()) {
        if (t.pid == tracker_) listed = true;
    }
    EXPECT_TRUE(listed);
}

// --- the root and the tracker itself dying --------------------------------------------------

TEST(TrackerRoot, RootSigkillMakesItsTrackerCleanEverythingReportOnceAndExit) {
    shmpool::test::use_private_runtime_dir();
    std::string a = unique_name();
    std::string b = unique_name();
    Unlinker cleanup{a, b};
    // No inherited tracker: the child is the root of its own.
    Child root(child_args({"own", a, b, "wait"}), {"SHMPOOL_TRACKER="});
    pid_t tracker = ready_tracker(root);
    ASSERT_GT(tracker, 0);
    root.kill(SIGKILL);
    ASSERT_TRUE(root.wait());
    EXPECT_TRUE(wait_for_removal(a, hang_guard));
    EXPECT_TRUE(wait_for_removal(b, hang_guard));
    EXPECT_TRUE(shmpool::test::wait_for_exit(tracker, hang_guard))
        << "the tracker outlived its root";
    std::string report = root.read_stderr(2s);  // the tracker writes to the root's stderr
    EXPECT_EQ(std::count(report.begin(), report.end(), '\n'), 1) << report;
    EXPECT_NE(report.find(a), std::string::npos) << report;
    EXPECT_NE(report.find(std::to_string(root.pid())), std::string::npos) << report;
}

TEST(TrackerRoot, AKilledTrackerLeavesNothingForGoodGarbageCollectionCleansUp) {
    shmpool::test::use_private_runtime_dir();
    std::string name = unique_name();
    Unlinker cleanup{name};
    Child root(child_args({"own", name, "wait"}), {"SHMPOOL_TRACKER="});
    pid_t tracker = ready_tracker(root);
    ASSERT_EQ(::kill(tracker, SIGKILL), 0);
    ASSERT_TRUE(shmpool::test::wait_for_exit(tracker, 5s));
    for (const auto& r : shmpool::collect_garbage())
        EXPECT_NE(r.name, name);
    EXPECT_TRUE(block_exists(name)) << "the owner is alive: gc must not touch its block";
    root.kill(SIGKILL);
    ASSERT_TRUE(root.wait());
    EXPECT_TRUE(block_exists(name)) << "nobody is watching any more";
    auto preview = shmpool::collect_garbage(true);
    EXPECT_TRUE(block_exists(name)) << "a dry run removes nothing";
    auto removed = shmpool::collect_garbage();
    auto mentions = [&](const std::vector<shmpool::CollectedBlock>& list) {
        return std::count_if(list.begin(), list.end(), [&](const shmpool::CollectedBlock& b) {
            return b.name == name && b.owner_pid == root.pid();
        });
    };
    EXPECT_EQ(mentions(removed), 1);
    EXPECT_EQ(mentions(preview), 1);
    EXPECT_FALSE(block_exists(name));
}

// --- the channel admits only well-formed requests from this user -----------------------------

namespace {

int connect_to(const std::string& path) {
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
        ::close(fd);
        return -1;
    }
    return fd;
}

// Sends bytes, returns everything the tracker answers until it hangs up.
std::string converse(const std::string& path, const std::string& bytes) {
    int fd = connect_to(path);
    if (fd < 0) return "<connect failed>";
    ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    ::shutdown(fd, SHUT_WR);
    std::string answer;
    char buf[4096];
    for (;;) {
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, 5000) <= 0) break;
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n <= 0) break;
        answer.append(buf, static_cast<std::size_t>(n));
    }
    ::close(fd);
    return answer;
}

}  // namespace

TEST_F(TrackerTest, MalformedAndHostileRequestsAreRejectedAndTheTrackerCarriesOn) {
    std::string path = std::getenv("SHMPOOL_TRACKER");
    EXPECT_EQ(converse(path, "FROB\n"), "ERR unknown request\n");
    EXPECT_EQ(converse(path, std::string(100000, 'x')), "ERR line too long\n");
    std::string garbage;
    for (int i = 0; i < 512; ++i)
        garbage += static_cast<char>((i * 131 + 7) % 256);
    EXPECT_EQ(converse(path, garbage + "\n").rfind("ERR", 0), 0u);
    EXPECT_EQ(converse(path, "HELLO 1.deadbeef\n"), "ERR bad HELLO\n");  // not the sender's pid
    EXPECT_EQ(converse(path, "HELLO " + std::to_string(::getpid()) + ".zzzzzzzz\n"),
              "ERR bad HELLO\n");
    EXPECT_EQ(converse(path, "HELLO\n"), "ERR unknown request\n");
    EXPECT_EQ(converse(path, "PING\n"), "PONG " + std::to_string(tracker_) + "\n");
    // And it still does its job.
    std::string name = unique_name();
    Unlinker cleanup{name};
    Child child(child_args({"own", name, "kill"}));
    ready_tracker(child);
    ASSERT_TRUE(child.wait());
    EXPECT_TRUE(wait_for_removal(name, hang_guard));
}

TEST_F(TrackerTest, OtherUsersCannotConnect) {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root to act as another user";
    std::string path = std::getenv("SHMPOOL_TRACKER");
    pid_t pid = ::fork();
    if (pid == 0) {
        // As "nobody": the private directory keeps the socket out of reach.
        if (::setresgid(65534, 65534, 65534) != 0 || ::setresuid(65534, 65534, 65534) != 0)
            ::_exit(2);
        ::_exit(connect_to(path) < 0 ? 0 : 1);
    }
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
        << "another user reached the tracker";
}

// --- failures of the tracker's I/O (injected at the system-call seam) ------------------------

namespace {

class TrackerFaultTest : public TrackerTest {
  protected:
    void TearDown() override { shmpool::sys::clear_injected_failures(); }
};

// What `f` throws as "<errno> <what()>", or "no error".
std::string error_of(const std::function<void()>& f) {
    try {
        f();
    } catch (const std::system_error& e) {
        EXPECT_EQ(e.code().category(), std::generic_category()) << e.what();
        return std::to_string(e.code().value()) + " " + e.what();
    }
    return "no error";
}

// Runs `body` in a forked child, a process with no tracker connection yet (as a new worker has),
// and returns what it returned.
std::string in_new_process(const std::function<std::string()>& body) {
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) return "<pipe2 failed>";
    pid_t pid = ::fork();
    if (pid == 0) {
        ::close(fds[0]);
        std::string out;
        try {
            out = body();
        } catch (const std::exception& e) {
            out = std::string("unexpected exception: ") + e.what();
        }
        (void)!::write(fds[1], out.data(), out.size());
        ::_exit(0);
    }
    ::close(fds[1]);
    bool exited = shmpool::test::wait_for_exit(pid, hang_guard);
    if (!exited) ::kill(pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    std::string out;
    char buf[4096];
    for (ssize_t n; (n = ::read(fds[0], buf, sizeof buf)) > 0;)
        out.append(buf, static_cast<std::size_t>(n));
    ::close(fds[0]);
    return exited ? out : "<the child hung>";
}

bool contains(const std::string& text, const std::string& part) {
    return text.find(part) != std::string::npos;
}

}  // namespace

TEST_F(TrackerFaultTest, ARefusedConnectionIsASystemErrorNamingTheTrackersSocket) {
    std::string path = std::getenv("SHMPOOL_TRACKER");
    shmpool::sys::inject_failure(shmpool::sys::Call::connect, ECONNREFUSED);
    std::string error = error_of([] { shmpool::Tracker::blocks(); });
    EXPECT_EQ(error.rfind(std::to_string(ECONNREFUSED) + " ", 0), 0u) << error;
    EXPECT_TRUE(contains(error, "connect('" + path + "')")) << error;
}

TEST_F(TrackerFaultTest, RunningOutOfDescriptorsIsASystemErrorNamingTheTrackersSocket) {
    std::string path = std::getenv("SHMPOOL_TRACKER");
    shmpool::sys::inject_failure(shmpool::sys::Call::socket, EMFILE);
    std::string error = error_of([] { shmpool::Tracker::blocks(); });
    EXPECT_EQ(error.rfind(std::to_string(EMFILE) + " ", 0), 0u) << error;
    EXPECT_TRUE(contains(error, "socket(AF_UNIX)")) << error;
    EXPECT_TRUE(contains(error, path)) << error;
}

TEST_F(TrackerFaultTest, AFailedRequestIsASystemErrorNamingTheTrackersSocket) {
    std::string path = std::getenv("SHMPOOL_TRACKER");
    shmpool::sys::inject_failure(shmpool::sys::Call::send, EPIPE);
    std::string error = error_of([] { shmpool::Tracker::blocks(); });
    EXPECT_EQ(error.rfind(std::to_string(EPIPE) + " ", 0), 0u) << error;
    EXPECT_TRUE(contains(error, "sending to the tracker at '" + path + "'")) << error;
}

TEST_F(TrackerFaultTest, InterruptedConnectsSendsAndWaitsForTheAnswerAreResumed) {
    std::string name = unique_name();
    SharedMemory shm = SharedMemory::create(name, 8);
    Unlinker cleanup{name};
    shmpool::sys::inject_failure(shmpool::sys::Call::connect, EINTR, 3);  // retried by the seam
    shmpool::sys::inject_failure(shmpool::sys::Call::send, EINTR, 3);     // retried by the seam
    shmpool::sys::inject_failure(shmpool::sys::Call::poll, EINTR,
                                 3);  // returned, the client waits on
    std::vector<shmpool::TrackedBlock> blocks;
    ASSERT_NO_THROW(blocks = shmpool::Tracker::blocks());
    EXPECT_TRUE(std::any_of(blocks.begin(), blocks.end(),
                            [&](const shmpool::TrackedBlock& b) { return b.name == name; }));
}

TEST_F(TrackerFaultTest, ATrackedCreateThatCannotReachATrackerFailsNamingItAndLeavesNoBlock) {
    struct Case {
        shmpool::sys::Call call;
        int error;
        std::string says;
    };
    for (const Case& c :
         {Case{shmpool::sys::Call::connect, ECONNREFUSED, "connect('"},
          Case{shmpool::sys::Call::socket, EMFILE, "socket(AF_UNIX) for the tracker at '"}}) {
        std::string name = unique_name();
        Unlinker cleanup{name};
        // Every attempt fails: the inherited tracker's socket, then the one of the tracker the
        // child starts for itself.
        std::string error = in_new_process([&] {
            shmpool::sys::inject_failure(c.call, c.error, 1000);
            return error_of([&] { SharedMemory::create(name, 64); });
        });
        EXPECT_EQ(error.rfind(std::to_string(c.error) + " ", 0), 0u) << error;
        EXPECT_TRUE(contains(error, c.says)) << error;
        EXPECT_TRUE(contains(error, "/tracker.") && contains(error, ".sock'")) << error;
        EXPECT_FALSE(block_exists(name)) << "a tracked create that failed left " << name;
    }
}

TEST_F(TrackerFaultTest, AnInterruptedConnectToTheInheritedTrackerIsRetriedNotReplaced) {
    std::string name = unique_name();
    Unlinker cleanup{name};
    std::string tracker = in_new_process([&] {
        shmpool::sys::inject_failure(shmpool::sys::Call::connect, EINTR, 3);
        SharedMemory shm = SharedMemory::create(name, 64);
        shm.unlink();
        return std::to_string(shmpool::Tracker::pid());
    });
    EXPECT_EQ(tracker, std::to_string(tracker_)) << "the child started a tracker of its own";
    EXPECT_FALSE(block_exists(name));
}
