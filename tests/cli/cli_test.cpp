// The shmpool CLI's contract (docs/cli.md), run as a real process against real blocks.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <regex>

#include "shmpool/shm/shareable_list.hpp"
#include "shmpool/shm/shared_heap.hpp"
#include "test_support.hpp"

using shmpool::ShareableList;
using shmpool::SharedMemory;
using shmpool::Value;
using shmpool::test::chomp;
using shmpool::test::ProcessResult;
using shmpool::test::unique_name;
using shmpool::test::Unlinker;

namespace {

ProcessResult cli(std::vector<std::string> args) {
    args.insert(args.begin(), shmpool::test::cli_path());
    return shmpool::test::run_process(args);
}

// The command failed the documented way: one "shmpool: error:" line and the given status.
void expect_error(const ProcessResult& r, int status, const std::string& fragment = {}) {
    EXPECT_EQ(r.exit_code, status) << r.out << r.err;
    EXPECT_TRUE(r.out.empty()) << r.out;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_EQ(r.err.rfind("shmpool: error: ", 0), 0u) << r.err;
    EXPECT_NE(r.err.find(fragment), std::string::npos) << r.err;
}

std::vector<std::uint8_t> block_bytes(const std::string& name) {
    SharedMemory shm = SharedMemory::attach(name, {.access = shmpool::Access::read_only});
    auto b = shm.buf();
    return {reinterpret_cast<const std::uint8_t*>(b.data()),
            reinterpret_cast<const std::uint8_t*>(b.data()) + b.size()};
}

}  // namespace

TEST(Cli, NewListPrintsTheNameAloneAndCreatesAnUntrackedList) {
    auto r = cli({"new-list", "--json", R"([1, "a", {"bytes": "78"}, null, true, 2.5])"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_TRUE(r.err.empty());
    std::string name = chomp(r.out);
    Unlinker u{name};
    EXPECT_TRUE(std::regex_match(r.out, std::regex("psm_[0-9a-f]{8}\n")));
    EXPECT_EQ(ShareableList::attach(name).to_vector(),
              (std::vector<Value>{1, "a", shmpool::Bytes("x"), shmpool::none, true, 2.5}));
}

TEST(Cli, NewListWithANameUsesIt) {
    std::string name = unique_name();
    auto r = cli({"new-list", "--json", "[]", "--name", name});
    Unlinker u{name};
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.out, name + "\n");
    EXPECT_EQ(ShareableList::attach(name).size(), 0u);
}

TEST(Cli, NewListOnATakenNameFailsAndLeavesTheBlockAlone) {
    std::string name = unique_name();
    ShareableList list = ShareableList::create(name, {1});
    Unlinker u{name};
    auto before = block_bytes(name);
    expect_error(cli({"new-list", "--json", "[2, 3]", "--name", name}), 1, name);
    EXPECT_EQ(block_bytes(name), before);
}

TEST(Cli, ShowPrintsThePythonRepr) {
    std::string name = unique_name();
    ShareableList list = ShareableList::create(
        name, {1, "it's", shmpool::Bytes("\x01"), shmpool::none, false, 1e16});
    Unlinker u{name};
    auto r = cli({"show", name});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.out,
              fmt::format("ShareableList([1, \"it's\", b'\\x01', None, False, 1e+16], name='{}')\n",
                          name));
}

TEST(Cli, ShowJsonFollowsTheValueEncoding) {
    std::string name = unique_name();
    ShareableList list = ShareableList::create(
        name, {7, 1.0, 0.1, 1e16, -0.0, std::numeric_limits<double>::quiet_NaN(),
               std::numeric_limits<double>::infinity(), -std::numeric_limits<double>::infinity(),
               true, shmpool::none, "h\xc3\xa9", shmpool::Bytes(std::string("\x00\xab", 2))});
    Unlinker u{name};
    auto r = cli({"show", name, "--json"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(
        r.out,
        "[7,1.0,0.1,1e+16,-0.0,{\"float\":\"nan\"},{\"float\":\"inf\"},{\"float\":\"-inf\"},true,"
        "null,\"h\xc3\xa9\",{\"bytes\":\"00ab\"}]\n");
}

TEST(Cli, JsonRoundTripsThroughNewListAndShow) {
    const std::string json =
        R"([-9223372036854775808,9223372036854775807,2.5,{"float":"nan"},false,null,"",{"bytes":""},"x y"])";
    auto r = cli({"new-list", "--json", json});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    Unlinker u{chomp(r.out)};
    auto shown = cli({"show", chomp(r.out), "--json"});
    EXPECT_EQ(shown.out, json + "\n");
}

TEST(Cli, SetWritesEachTypeAndAcceptsNegativeIndexes) {
    std::string name = unique_name();
    ShareableList list = ShareableList::create(name, {0, 0, 0, 0, 0, "sixteen bytes!!"});
    Unlinker u{name};
    EXPECT_EQ(cli({"set", name, "0", "\"abc\""}).exit_code, 0);
    EXPECT_EQ(cli({"set", name, "1", "2.5"}).exit_code, 0);
    EXPECT_EQ(cli({"set", name, "2", "null"}).exit_code, 0);
    EXPECT_EQ(cli({"set", name, "3", "true"}).exit_code, 0);
    EXPECT_EQ(cli({"set", name, "4", R"({"bytes":"ff"})"}).exit_code, 0);
    EXPECT_EQ(cli({"set", name, "-1", "-5"}).exit_code, 0);
    EXPECT_EQ(list.to_vector(),
              (std::vector<Value>{"abc", 2.5, shmpool::none, true, shmpool::Bytes("\xff"), -5}));
}

TEST(Cli, SetThatFailsChangesNothing) {
    std::string name = unique_name();
    ShareableList list = ShareableList::create(name, {1, "abc"});
    Unlinker u{name};
    auto before = block_bytes(name);
    expect_error(cli({"set", name, "1", "\"far too long for the slot\""}), 1, "does not fit");
    expect_error(cli({"set", name, "2", "1"}), 1, "out of range");
    expect_error(cli({"set", name, "-3", "1"}), 1, "out of range");
    expect_error(cli({"set", name, "x", "1"}), 1, "invalid index");
    expect_error(cli({"set", name, "0", "99999999999999999999"}), 1,
                 "out of the signed 64-bit range");
    expect_error(cli({"set", name, "0", "[1]"}), 1, "cannot be a list");
    expect_error(cli({"set", name, "0", "{\"x\": 1}"}), 1, "unsupported value");
    expect_error(cli({"set", name, "0", "\"ends in NUL\\u0000\""}), 1, "NUL");
    expect_error(cli({"set", name, "0", "{"}), 1, "invalid JSON");
    EXPECT_EQ(block_bytes(name), before);
}

TEST(Cli, BadInputCreatesNothing) {
    for (const char* bad :
         {"[1", "{}", "1", R"([{"bytes":"abc"}])", R"([{"bytes":"zz"}])", R"([{"float":"big"}])",
          "[18446744073709551615]", "[1e999999]", "[[1, 2]]", R"(["\u0000"])"}) {
        std::string name = unique_name();
        expect_error(cli({"new-list", "--json", bad, "--name", name}), 1);
        EXPECT_FALSE(shmpool::test::block_exists(name)) << bad;
    }
}

TEST(Cli, UsageErrorsExitWithTwo) {
    expect_error(cli({}), 2);
    expect_error(cli({"frobnicate"}), 2);
    expect_error(cli({"show"}), 2);
    expect_error(cli({"new-list"}), 2);
    expect_error(cli({"ls", "--bogus"}), 2);
}

TEST(Cli, RunBuildsTheMpirunLineOfAClusterJob) {
    auto r = cli({"run", "--dry-run", "--hosts", "a,b,c", "--", "./app", "--its-flag", "1"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.out,
              "mpirun -n 3 --host a,b,c --map-by ppr:1:node --bind-to none ./app --its-flag 1\n");
    r = cli({"run", "--dry-run", "--local", "2", "--mpirun-arg=--mca", "--mpirun-arg=btl",
             "--mpirun-arg=self,tcp", "./app"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.out, "mpirun -n 2 --oversubscribe --bind-to none --mca btl self,tcp ./app\n");
}

TEST(Cli, RunRefusesWhatItCannotLaunch) {
    expect_error(cli({"run", "--dry-run", "--hosts", "a"}), 1);               // no program
    expect_error(cli({"run", "--dry-run", "--", "./app"}), 1);                // no hosts
    expect_error(cli({"run", "--dry-run", "--hosts", "a b", "--", "x"}), 1);  // not a host
}

TEST(Cli, HelpExitsWithZero) {
    auto r = cli({"--help"});
    EXPECT_EQ(r.exit_code, 0);
    EXPECT_NE(r.out.find("new-list"), std::string::npos);
}

TEST(Cli, ShowFailsClearlyOnMissingCorruptedAndForeignBlocks) {
    std::string missing = unique_name();
    expect_error(cli({"show", missing}), 1, "No such file or directory");
    std::string name = unique_name();
    SharedMemory shm = SharedMemory::create(name, 64);
    Unlinker u{name};
    std::memset(shm.data(), 0xee, 64);
    expect_error(cli({"show", name}), 1, "not a valid ShareableList");
    expect_error(cli({"set", name, "0", "1"}), 1, "not a valid ShareableList");
    for (std::byte b : shm.buf())
        ASSERT_EQ(b, std::byte{0xee});
    expect_error(cli({"show", "bad/name"}), 1, "invalid block name");
}

TEST(Cli, RmRemovesAllOrNothing) {
    std::string a = unique_name();
    std::string b = unique_name();
    SharedMemory::create(a, 8);
    SharedMemory::create(b, 8);
    Unlinker u{a, b};
    expect_error(cli({"rm", a, unique_name(), b}), 1, "no shared memory block");
    EXPECT_TRUE(shmpool::test::block_exists(a));
    EXPECT_TRUE(shmpool::test::block_exists(b));
    auto r = cli({"rm", a, b});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_FALSE(shmpool::test::block_exists(a));
    EXPECT_FALSE(shmpool::test::block_exists(b));
}

TEST(Cli, LsJsonDescribesEachBlock) {
    std::string list_name = unique_name();
    std::string raw_name = unique_name();
    ShareableList list = ShareableList::create(list_name, {1, 2});
    SharedMemory raw = SharedMemory::create(raw_name, 40);
    std::memset(raw.data(), 0xff, 8);
    Unlinker u{list_name, raw_name};
    auto r = cli({"ls", "--json"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    auto j = nlohmann::json::parse(r.out);
    auto find = [&](const std::string& n) {
        for (const auto& e : j) {
            if (e["name"] == n) return e;
        }
        return nlohmann::json();
    };
    auto l = find(list_name);
    ASSERT_FALSE(l.is_null()) << r.out;
    EXPECT_EQ(l["size"], list.shm().size());
    EXPECT_EQ(l["mode"], "0600");
    EXPECT_EQ(l["shareable_list"], true);
    EXPECT_EQ(l["uid"], ::getuid());
    EXPECT_TRUE(std::regex_match(l["modified"].get<std::string>(),
                                 std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)")));
    EXPECT_FALSE(l["owner"].get<std::string>().empty());
    EXPECT_EQ(find(raw_name)["shareable_list"], false);
}

TEST(Cli, LsTextHasAHeaderAndALinePerBlock) {
    std::string name = unique_name();
    ShareableList list = ShareableList::create(name, {1});
    Unlinker u{name};
    auto r = cli({"ls"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.out.rfind("NAME", 0), 0u);
    std::regex line(name + R"( +\d+ +\S+ +0600 +\d{4}-\d\d-\d\d \d\d:\d\d:\d\d +yes)");
    EXPECT_TRUE(std::regex_search(r.out, line)) << r.out;
}

TEST(Cli, LsAndShowRecogniseAHeapAndListItsNamedObjects) {
    std::string name = unique_name();
    shmpool::SharedHeap heap = shmpool::SharedHeap::create(name, 1 << 20);
    Unlinker u{name};
    auto& words =
        heap.construct<shmpool::SharedVector<shmpool::SharedString>>("words", heap.allocator());
    words.push_back(heap.string("alpha"));
    heap.construct<std::int64_t>("count", 1);
    auto ls = cli({"ls", "--json"});
    ASSERT_EQ(ls.exit_code, 0) << ls.err;
    bool listed = false;
    for (const auto& e : nlohmann::json::parse(ls.out)) {
        if (e["name"] != name) continue;
        listed = true;
        EXPECT_EQ(e["heap"], true);
        EXPECT_EQ(e["shareable_list"], false);
    }
    EXPECT_TRUE(listed) << ls.out;
    auto text = cli({"show", name});
    ASSERT_EQ(text.exit_code, 0) << text.err;
    EXPECT_NE(text.out.find("heap " + name + ": 1048576 bytes"), std::string::npos) << text.out;
    EXPECT_NE(text.out.find("writable"), std::string::npos) << text.out;
    EXPECT_NE(text.out.find("  count  8 bytes"), std::string::npos) << text.out;
    heap.freeze();
    auto json = cli({"show", name, "--json"});
    ASSERT_EQ(json.exit_code, 0) << json.err;
    auto j = nlohmann::json::parse(json.out);
    EXPECT_EQ(j["heap"], name);
    EXPECT_EQ(j["state"], "frozen");
    EXPECT_EQ(j["free"], heap.free_bytes());
    ASSERT_EQ(j["objects"].size(), 2u);
    EXPECT_EQ(j["objects"][0]["name"], "count");
    EXPECT_EQ(j["objects"][1]["name"], "words");
    EXPECT_TRUE(j["dead_pid"].is_null());
}

// --- issue 3: guarded lists, ownership, tracker, gc ------------------------------------------

namespace {

std::vector<std::string> cli_argv(std::vector<std::string> args) {
    args.insert(args.begin(), shmpool::test::cli_path());
    return args;
}

// Takes a guarded list's lock with `shmpool lock` and keeps it until the Child is told otherwise.
struct Locker {
    shmpool::test::Child child;
    explicit Locker(const std::string& name) : child(cli_argv({"lock", name})) {
        auto line = child.read_line();
        EXPECT_EQ(line, "locked") << child.read_stderr(std::chrono::seconds(1));
    }
};

nlohmann::json ls_entry(const std::string& name) {
    auto r = cli({"ls", "--json"});
    for (const auto& e : nlohmann::json::parse(r.out)) {
        if (e["name"] == name) return e;
    }
    return {};
}

}  // namespace

TEST(CliGuarded, NewListGuardedCarriesALockThatLsAndShowReport) {
    auto r = cli({"new-list", "--json", "[1, 2]", "--guarded"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    std::string name = chomp(r.out);
    Unlinker u{name};
    EXPECT_TRUE(ShareableList::attach(name).guarded());
    auto e = ls_entry(name);
    EXPECT_EQ(e["guarded"], true);
    EXPECT_EQ(e["lock"], "free");
    EXPECT_EQ(cli({"show", name}).out,
              fmt::format("ShareableList([1, 2], name='{}')\nlock: free\n", name));
    auto plain = ls_entry(name);
    EXPECT_TRUE(plain["owner_pid"].is_null());  // new-list without --own is untracked
}

TEST(CliGuarded, LockIsHeldUntilStdinClosesAndSetWaitsForIt) {
    std::string name = unique_name();
    ShareableList list = ShareableList::create(name, {1, 2}, {.track = false, .guarded = true});
    Unlinker u{name};
    {
        Locker locker(name);
        EXPECT_EQ(ls_entry(name)["lock"], fmt::format("held:{}", locker.child.pid()));
        expect_error(cli({"set", name, "0", "5", "--timeout", "0.05"}), 1, "is held by thread");
        EXPECT_EQ(list.get(0), Value(1));
        locker.child.close_stdin();
        auto status = locker.child.wait();
        ASSERT_TRUE(status);
        EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0);
    }
    EXPECT_EQ(ls_entry(name)["lock"], "free");
    EXPECT_EQ(cli({"set", name, "0", "5"}).exit_code, 0);
    EXPECT_EQ(list.get(0), Value(5));
}

TEST(CliGuarded, LockReleasesOnSigterm) {
    std::string name = unique_name();
    ShareableList list = ShareableList::create(name, {1}, {.track = false, .guarded = true});
    Unlinker u{name};
    Locker locker(name);
    locker.child.kill(SIGTERM);
    auto status = locker.child.wait();
    ASSERT_TRUE(status);
    EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0);
    EXPECT_EQ(ls_entry(name)["lock"], "free");
}

TEST(CliGuarded, ADeadHoldersLockIsRecoveredWithOneWarningWhenTheLayoutIsIntact) {
    std::string name = unique_name();
    ShareableList list = ShareableList::create(name, {1, "ab"}, {.track = false, .guarded = true});
    Unlinker u{name};
    {
        Locker locker(name);
        locker.child.kill(SIGKILL);
        ASSERT_TRUE(locker.child.wait());
    }
    EXPECT_EQ(ls_entry(name)["lock"], "owner-died");
    auto r = cli({"set", name, "0", "9"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_EQ(r.err.rfind("shmpool: warning: ", 0), 0u) << r.err;
    EXPECT_EQ(list.get(0), Value(9));
    EXPECT_EQ(ls_entry(name)["lock"], "free");
    auto again = cli({"show", name});
    EXPECT_TRUE(again.err.empty()) << again.err;
}

TEST(CliGuarded, ABrokenLayoutAfterADeadHolderFailsAndLeavesTheLockMarked) {
    std::string name = unique_name();
    ShareableList list = ShareableList::create(name, {1, 2}, {.track = false, .guarded = true});
    Unlinker u{name};
    {
        Locker locker(name);
        std::memset(list.shm().data() + 8, 0x7f, 8);  // the dead holder's torn write: offsets[0]
        locker.child.kill(SIGKILL);
        ASSERT_TRUE(locker.child.wait());
    }
    expect_error(cli({"show", name}), 1, "layout broken");
    EXPECT_EQ(ls_entry(name)["lock"], "not-recoverable");
    expect_error(cli({"set", name, "0", "1"}), 1, "not recoverable");
}

TEST(CliGuarded, LockOnAnUnguardedListIsAnError) {
    std::string name = unique_name();
    ShareableList list = ShareableList::create(name, {1}, {.track = false});
    Unlinker u{name};
    expect_error(cli({"lock", name}), 1, "carries no lock");
}

TEST(CliOwn, TheOwnerRemovesItsListWhenStdinCloses) {
    shmpool::test::Child owner(cli_argv({"new-list", "--json", "[1]", "--own"}));
    auto name = owner.read_line();
    ASSERT_TRUE(name);
    Unlinker u{*name};
    auto e = ls_entry(*name);
    EXPECT_EQ(e["owner_pid"], owner.pid());
    EXPECT_EQ(e["owner_alive"], true);
    owner.close_stdin();
    auto status = owner.wait();
    ASSERT_TRUE(status);
    EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0);
    EXPECT_FALSE(shmpool::test::block_exists(*name));
}

TEST(CliOwn, TheOwnerRemovesItsListOnSigint) {
    shmpool::test::Child owner(cli_argv({"new-list", "--json", "[1]", "--own"}));
    auto name = owner.read_line();
    ASSERT_TRUE(name);
    Unlinker u{*name};
    owner.kill(SIGINT);
    ASSERT_TRUE(owner.wait());
    EXPECT_FALSE(shmpool::test::block_exists(*name));
}

TEST(CliOwn, TheTrackerRemovesTheListOfAKilledOwner) {
    // Not this test process's tracker: the CLI is the root of its own.
    shmpool::test::Child owner(cli_argv({"new-list", "--json", "[1]", "--own"}),
                               {"SHMPOOL_TRACKER="});
    auto name = owner.read_line();
    ASSERT_TRUE(name);
    Unlinker u{*name};
    owner.kill(SIGKILL);
    ASSERT_TRUE(owner.wait());
    EXPECT_TRUE(shmpool::test::wait_for_removal(*name, shmpool::test::hang_guard));
}

TEST(CliTracker, ListsLiveTrackersAndTheirBlocks) {
    shmpool::test::Child owner(cli_argv({"new-list", "--json", "[1]", "--own"}),
                               {"SHMPOOL_TRACKER="});
    auto name = owner.read_line();
    ASSERT_TRUE(name);
    Unlinker u{*name};
    auto r = cli({"tracker", "--json"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    bool found = false;
    for (const auto& t : nlohmann::json::parse(r.out)) {
        for (const auto& b : t["blocks"]) {
            if (b["name"] == *name) {
                found = true;
                EXPECT_EQ(b["owner_pid"], owner.pid());
                EXPECT_EQ(b["owner_alive"], true);
                EXPECT_GT(t["pid"].get<int>(), 0);
            }
        }
    }
    EXPECT_TRUE(found) << r.out;
    auto text = cli({"tracker"});
    EXPECT_NE(text.out.find(*name + "  owner " + std::to_string(owner.pid()) + " (alive)"),
              std::string::npos)
        << text.out;
    owner.close_stdin();
    ASSERT_TRUE(owner.wait());
}

TEST(CliGc, RemovesWhatADeadOwnerOfADeadTrackerLeftAndNothingElse) {
    shmpool::test::use_private_runtime_dir();
    shmpool::test::Child owner(cli_argv({"new-list", "--json", "[1]", "--own"}),
                               {"SHMPOOL_TRACKER="});
    auto name = owner.read_line();
    ASSERT_TRUE(name);
    Unlinker u{*name};
    pid_t tracker = 0;
    for (const auto& t : nlohmann::json::parse(cli({"tracker", "--json"}).out)) {
        for (const auto& b : t["blocks"]) {
            if (b["name"] == *name) tracker = t["pid"];
        }
    }
    ASSERT_GT(tracker, 0);
    ASSERT_EQ(::kill(tracker, SIGKILL), 0);
    ASSERT_TRUE(shmpool::test::wait_for_exit(tracker, std::chrono::seconds(5)));
    auto alive = cli({"gc"});
    EXPECT_EQ(alive.out.find(*name), std::string::npos) << "the owner still lives";
    owner.kill(SIGKILL);
    ASSERT_TRUE(owner.wait());
    auto dry = cli({"gc", "--dry-run"});
    EXPECT_NE(
        dry.out.find("would remove " + *name + " (owner pid " + std::to_string(owner.pid()) + ")"),
        std::string::npos)
        << dry.out;
    EXPECT_TRUE(shmpool::test::block_exists(*name));
    auto r = cli({"gc"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.out.find("removed " + *name + " (owner pid " + std::to_string(owner.pid()) + ")"),
              std::string::npos)
        << r.out;
    EXPECT_FALSE(shmpool::test::block_exists(*name));
}
