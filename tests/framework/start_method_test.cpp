// Both ways of starting workers (PoolOptions::start_method): the same results, crashes, timeouts,
// recycling, stderr and start-up failures with exec'd and with forked workers; and what only the
// fork server has: its death (killed idle or mid-task) and the pool parent's death taking it and
// its workers along. Real processes and real signals throughout.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <mutex>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "gate.hpp"
#include "shmpool/framework/pipeline.hpp"
#include "shmpool/framework/pool.hpp"
#include "shmpool/framework/shared_array.hpp"
#include "tasks.hpp"
#include "test_support.hpp"

using namespace std::chrono_literals;
using namespace shmpool::test::tasks;
using shmpool::Pool;
using shmpool::PoolOptions;
using shmpool::StartMethod;
using shmpool::WorkerEvent;
using shmpool::test::Gate;
using shmpool::test::hang_guard;

namespace {

// The worker's parent: the test program for an exec'd worker, the fork server for a forked one.
int parent_pid(int /*x*/) {
    return ::getppid();
}
SHMPOOL_TASK(parent_pid_task, parent_pid);

// This worker's process group: its own, whichever way it started.
int process_group(int /*x*/) {
    return ::getpgrp();
}
SHMPOOL_TASK(process_group_task, process_group);

// A variable of the worker's environment, "<unset>" if it has none.
std::string variable(const std::string& name) {
    const char* value = std::getenv(name.c_str());  // NOLINT(concurrency-mt-unsafe): read-only
    return value ? value : "<unset>";
}
SHMPOOL_TASK(variable_task, variable);

void refuse_to_start() {
    throw std::runtime_error("no licence server");
}
SHMPOOL_TASK(refuse_to_start_task, refuse_to_start);

// An initializer that kills its own worker: a death before ready, with no reason left behind.
void die_while_starting() {
    ::kill(::getpid(), SIGKILL);
}
SHMPOOL_TASK(die_while_starting_task, die_while_starting);

// Worker events, collected from the pool's callback thread.
struct EventLog {
    std::mutex mutex;
    std::vector<WorkerEvent> events;
    std::function<void(const WorkerEvent&)> callback() {
        return [this](const WorkerEvent& e) {
            std::lock_guard lock(mutex);
            events.push_back(e);
        };
    }
    std::vector<WorkerEvent> snapshot() {
        std::lock_guard lock(mutex);
        return events;
    }
};

class StartMethods : public ::testing::TestWithParam<StartMethod> {
  protected:
    StartMethod method() const { return GetParam(); }
    bool forked() const { return GetParam() == StartMethod::fork_server; }
};

std::string method_name(const ::testing::TestParamInfo<StartMethod>& info) {
    return std::string(shmpool::to_string(info.param));
}

TEST_P(StartMethods, SubmitMapImapAndForEachIndexGiveTheSameResults) {
    Pool pool({.workers = 2, .start_method = method()});
    EXPECT_EQ(pool.submit(square_task, 12).get(), 144);
    EXPECT_EQ(pool.submit(shout_task, std::string("hey"), 2).get(), "hey!hey!");
    const std::vector<int> in = iota(500);
    const std::vector<int> squares = pool.map(square_task, in);
    std::vector<int> streamed;
    for (int v : pool.imap(square_task, in, 7))
        streamed.push_back(v);
    std::multiset<int> unordered;
    for (int v : pool.imap_unordered(square_task, in, 3))
        unordered.insert(v);
    ASSERT_EQ(squares.size(), in.size());
    EXPECT_EQ(streamed, squares);
    EXPECT_EQ(unordered, std::multiset<int>(squares.begin(), squares.end()));
    for (std::size_t i = 0; i < in.size(); ++i)
        EXPECT_EQ(squares[i], in[i] * in[i]);
    auto array = shmpool::SharedArray<double>::create(10'000);
    shmpool::test::Unlinker u{array.name()};
    pool.for_each_index(fill_task, array.size(), 0, array.name());
    for (std::size_t i = 0; i < array.size(); i += 997)
        EXPECT_EQ(array[i], static_cast<double>(i) * 0.5);
    EXPECT_EQ(pool.stats().crashes, 0u);
}

TEST_P(StartMethods, WorkersRunInTheirOwnProcessGroupsAndAreChildrenOfTheServerWhenForked) {
    Pool pool({.workers = 2, .start_method = method()});
    const std::vector<int> parents = pool.map(parent_pid_task, std::vector<int>(8, 0), 1);
    for (int p : parents) {
        if (forked()) {
            EXPECT_NE(p, ::getpid()) << "a forked worker is the server's child, not the pool's";
            EXPECT_EQ(p, parents.front()) << "one server forks them all";
        } else {
            EXPECT_EQ(p, ::getpid());
        }
    }
    const std::vector<int> groups = pool.map(process_group_task, std::vector<int>(8, 0), 1);
    const std::vector<pid_t> pids = pool.worker_pids();
    for (int g : groups) {
        EXPECT_NE(g, ::getpgrp());
        EXPECT_TRUE(g == pids[0] || g == pids[1]) << "group " << g;
    }
}

class WorkerDeathBy : public ::testing::TestWithParam<std::tuple<StartMethod, const char*>> {};

TEST_P(WorkerDeathBy, IsRetriedOnARespawnedWorkerAndReportedWithItsOwnStatus) {
    const auto [method, how] = GetParam();
    auto counters = shmpool::SharedArray<std::int64_t>::create(40);
    shmpool::test::Unlinker u{counters.name()};
    EventLog log;
    const bool hang = std::string(how) == "hang";
    Pool pool({.workers = 2,
               .max_retries = 1,
               .task_timeout = hang ? 300ms : 0ms,
               .start_method = method,
               .on_worker_exit = log.callback()});
    std::vector<std::tuple<std::string, int, int, std::string>> args;
    for (int i = 0; i < 40; ++i)
        args.emplace_back(counters.name(), i, 17, how);
    try {
        pool.starmap(counted_task, args, 5);
        ADD_FAILURE() << "the crashing item did not fail";
    } catch (const shmpool::WorkerCrashed& e) {
        EXPECT_FALSE(hang);
        EXPECT_EQ(e.item(), 17u);
        EXPECT_EQ(e.attempts(), 2);
        const std::string h = how;
        if (h == "kill") {
            EXPECT_EQ(e.signal(), SIGKILL);
        }
        if (h == "abort") {
            EXPECT_EQ(e.signal(), SIGABRT);
        }
        if (h == "exit") {
            EXPECT_EQ(e.exit_code(), 3);
        }
#ifndef SHMPOOL_TEST_SANITIZED
        if (h == "segv") {
            EXPECT_EQ(e.signal(), SIGSEGV);
        }
#endif
    } catch (const shmpool::TaskTimeout& e) {
        EXPECT_TRUE(hang);
        EXPECT_EQ(e.item(), 17u);
    }
    for (int i = 0; i < 40; ++i)
        EXPECT_EQ(counters[static_cast<std::size_t>(i)], i == 17 ? (hang ? 1 : 2) : 1) << i;
    EXPECT_EQ(pool.map(square_task, iota(20)).back(), 19 * 19);  // respawned workers serve
    pool.close();
    pool.join();  // every event delivered
    const std::vector<WorkerEvent> events = log.snapshot();
    ASSERT_FALSE(events.empty());
    EXPECT_EQ(events.front().item, 17u);
    EXPECT_EQ(events.front().task, "counted_task");
    EXPECT_GT(events.front().status.peak_rss_kb, 0) << "the server reports the rusage too";
    const std::string h = how;
    if (h == "kill") {
        EXPECT_EQ(events.front().status.signal, SIGKILL);
    }
    if (h == "abort") {
        EXPECT_EQ(events.front().status.signal, SIGABRT);
    }
    if (h == "exit") {
        EXPECT_EQ(events.front().status, (shmpool::ExitStatus{.exit_code = 3}));
    }
    if (hang) {
        EXPECT_EQ(events.front().reason, shmpool::ExitReason::timeout);
        EXPECT_EQ(events.front().status.signal, SIGTERM);
    }
}

INSTANTIATE_TEST_SUITE_P(
    BothMethods, WorkerDeathBy,
    ::testing::Combine(::testing::Values(StartMethod::exec, StartMethod::fork_server),
                       ::testing::Values("segv", "abort", "kill", "exit", "hang")),
    [](const auto& info) {
        return std::string(shmpool::to_string(std::get<0>(info.param))) + "_" +
               std::get<1>(info.param);
    });

TEST_P(StartMethods, AWorkerKilledFromOutsideMidTaskIsReplacedAndItsItemRetried) {
    Gate gate = Gate::create(shmpool::test::unique_name());
    EventLog log;
    Pool pool({.workers = 2,
               .max_retries = 1,
               .start_method = method(),
               .on_worker_exit = log.callback()});
    auto running = pool.submit(gated_task, gate.name(), 5);
    ASSERT_TRUE(gate.wait_arrivals(1));
    const pid_t victim = gate.arrival(0);
    ::kill(victim, SIGKILL);
    ASSERT_TRUE(shmpool::test::wait_for_exit(victim, hang_guard));
    gate.release();  // the retry passes at once
    EXPECT_EQ(running.get(), 5);
    ASSERT_TRUE(shmpool::test::eventually([&] { return pool.stats().respawns >= 1; }, hang_guard));
    const std::vector<pid_t> pids = pool.worker_pids();
    EXPECT_TRUE(pids[0] != victim && pids[1] != victim);
    EXPECT_EQ(pool.stats().crashes, 1u);
    EXPECT_EQ(pool.stats().retries, 1u);
    pool.close();
    pool.join();
    const std::vector<WorkerEvent> events = log.snapshot();
    ASSERT_EQ(events.size(), 1u);
    EXPECT_EQ(events[0].pid, victim);
    EXPECT_EQ(events[0].status.signal, SIGKILL);
    EXPECT_EQ(events[0].reason, shmpool::ExitReason::crashed);
}

TEST_P(StartMethods, AHardCancelKillsTheWorkerAndItsReplacementServes) {
    Gate gate = Gate::create(shmpool::test::unique_name());
    Pool pool({.workers = 1, .start_method = method()});
    auto victim = pool.submit(gated_task, gate.name(), 1);
    ASSERT_TRUE(gate.wait_arrivals(1));
    EXPECT_TRUE(victim.cancel(true));
    EXPECT_THROW(victim.get(), shmpool::TaskCancelled);
    EXPECT_EQ(pool.submit(square_task, 5).get(), 25);
    EXPECT_EQ(pool.stats().cancelled, 1u);
}

TEST_P(StartMethods, WorkersAreRecycledAfterMaxTasksWithACleanExit) {
    EventLog log;
    Pool pool({.workers = 1,
               .start_method = method(),
               .on_worker_exit = log.callback(),
               .max_tasks_per_worker = 3});
    std::set<int> pids;
    for (int i = 0; i < 9; ++i)
        pids.insert(pool.submit(pid_task, i).get());
    EXPECT_EQ(pids.size(), 3u);
    pool.close();
    pool.join();
    const std::vector<WorkerEvent> events = log.snapshot();
    ASSERT_GE(events.size(), 2u);
    for (const WorkerEvent& e : events) {
        EXPECT_EQ(e.reason, shmpool::ExitReason::recycled_tasks);
        EXPECT_EQ(e.status, (shmpool::ExitStatus{.exit_code = 0}));
    }
}

TEST_P(StartMethods, WorkerStderrLinesArePrefixedWithTheWorkersId) {
    std::vector<std::string> argv{shmpool::test::pool_child_path(), "say", "hello there"};
    if (forked()) argv.emplace_back("fork_server");
    auto r = shmpool::test::run_process(argv);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    std::regex line(
        R"(\[worker 0 pid \d+\] hello there\n\[worker 0 pid \d+\] and a last line without newline\n)");
    EXPECT_TRUE(std::regex_search(r.err, line)) << r.err;
}

TEST_P(StartMethods, AFailingInitializerFailsPoolCreationWithItsErrorOnce) {
    try {
        Pool pool({.workers = 2, .start_method = method(), .initializer = refuse_to_start_task});
        ADD_FAILURE() << "the pool started";
    } catch (const shmpool::TaskError& e) {
        EXPECT_EQ(e.message(), "no licence server");
        EXPECT_EQ(e.task(), "refuse_to_start_task");
    }
}

TEST_P(StartMethods, AWorkerThatDiesBeforeReadyEveryTimeFailsCreationWithWorkerStartFailed) {
    try {
        Pool pool({.workers = 2,
                   .max_start_failures = 3,
                   .start_method = method(),
                   .initializer = die_while_starting_task});
        ADD_FAILURE() << "the pool started";
    } catch (const shmpool::WorkerStartFailed& e) {
        ASSERT_EQ(e.attempts().size(), 3u);
        for (const auto& a : e.attempts()) {
            EXPECT_EQ(a.status.signal, SIGKILL) << to_string(a.status);
            EXPECT_TRUE(a.reached_init);
        }
    }
}

TEST_P(StartMethods, AWorkerProgramOfAnotherLayoutIsRefusedAtOnce) {
    try {
        Pool pool({.workers = 2,
                   .worker_executable = shmpool::test::other_layout_worker_path(),
                   .start_method = method()});
        ADD_FAILURE() << "the pool started";
    } catch (const shmpool::IncompatibleWorker& e) {
        EXPECT_NE(std::string(e.what()).find("protocol version 99"), std::string::npos) << e.what();
    }
}

TEST_P(StartMethods, ThePoolsOptionsEnvironmentAndSharedBlocksReachTheWorkers) {
    auto block = shmpool::SharedArray<double>::create(16);
    shmpool::test::Unlinker u{block.name()};
    Pool pool({.workers = 2,
               .start_method = method(),
               .shared_blocks = {block.name()},
               .environment = {"SHMPOOL_TEST_GREETING=bonjour"}});
    pool.for_each_index(fill_task, block.size(), 4, block.name());
    EXPECT_EQ(block[15], 7.5);
    EXPECT_EQ(pool.submit(variable_task, std::string("SHMPOOL_TEST_GREETING")).get(), "bonjour");
    // Neither a worker nor its own children are servers or workers.
    EXPECT_EQ(pool.submit(variable_task, std::string("SHMPOOL_ROLE")).get(), "<unset>");
    EXPECT_EQ(pool.submit(variable_task, std::string("SHMPOOL_FORK_SERVER_FD")).get(), "<unset>");
}

TEST_P(StartMethods, APipelinesStagesStartTheirWorkersThatWayToo) {
    shmpool::Pipeline p({.start_method = method()});
    long next = 0;
    long sum = 0;
    std::size_t count = 0;
    p.source([&]() -> std::optional<long> {
         if (next == 300) return std::nullopt;
         return next++;
     })
        .stage(twice_task, shmpool::StageMode::parallel, 2)
        .stage(twice_task, shmpool::StageMode::serial_in_order)
        .sink([&](long v) {
            sum += v;
            ++count;
        });
    const shmpool::PipelineStats stats = p.run();
    EXPECT_EQ(stats.failed, 0u);
    EXPECT_EQ(count, 300u);
    EXPECT_EQ(sum, 4L * 300 * 299 / 2);
}

INSTANTIATE_TEST_SUITE_P(BothMethods, StartMethods,
                         ::testing::Values(StartMethod::exec, StartMethod::fork_server),
                         method_name);

// --- the fork server itself ------------------------------------------------------------------

pid_t server_of(Pool& pool) {
    return static_cast<pid_t>(pool.submit(parent_pid_task, 0).get());
}

TEST(ForkServer, KilledWhileIdleIsReplacedItsWorkersDieWithItAndThePoolCarriesOn) {
    EventLog log;
    std::vector<pid_t> gone;
    pid_t second_server = 0;
    std::vector<pid_t> second_workers;
    {
        Pool pool({.workers = 2,
                   .start_method = StartMethod::fork_server,
                   .on_worker_exit = log.callback()});
        const pid_t server = server_of(pool);
        ASSERT_NE(server, ::getpid());
        const std::vector<pid_t> workers = pool.worker_pids();
        ::kill(server, SIGKILL);
        for (pid_t p : {server, workers[0], workers[1]}) {
            EXPECT_TRUE(shmpool::test::wait_for_exit(p, hang_guard)) << "pid " << p << " lives on";
            gone.push_back(p);
        }
        // Both workers died with their server: each is replaced, by a fork of a new server.
        ASSERT_TRUE(
            shmpool::test::eventually([&] { return pool.stats().respawns >= 2; }, hang_guard));
        EXPECT_EQ(pool.map(square_task, iota(100), 1).back(), 99 * 99);
        second_server = server_of(pool);
        EXPECT_NE(second_server, server);
        EXPECT_NE(second_server, ::getpid());
        second_workers = pool.worker_pids();
        for (pid_t p : second_workers)
            EXPECT_TRUE(p != workers[0] && p != workers[1]);
        EXPECT_EQ(pool.stats().tasks_failed, 0u);
    }
    // The pool is gone: so are the second server and its workers; nothing is left behind.
    for (pid_t p : gone)
        EXPECT_TRUE(shmpool::test::wait_for_exit(p, 1s)) << "pid " << p;
    EXPECT_TRUE(shmpool::test::wait_for_exit(second_server, hang_guard));
    for (pid_t p : second_workers)
        EXPECT_TRUE(shmpool::test::wait_for_exit(p, hang_guard));
    for (const WorkerEvent& e : log.snapshot())
        EXPECT_EQ(e.status.signal, SIGKILL) << "a worker whose server died: killed with it";
}

TEST(ForkServer, KilledWhileATaskRunsTheTaskIsRetriedOnAWorkerOfTheNextServer) {
    Gate gate = Gate::create(shmpool::test::unique_name());
    Pool pool({.workers = 2, .max_retries = 1, .start_method = StartMethod::fork_server});
    const pid_t server = server_of(pool);
    auto running = pool.submit(gated_task, gate.name(), 42);
    ASSERT_TRUE(gate.wait_arrivals(1));
    const pid_t worker = gate.arrival(0);
    ::kill(server, SIGKILL);
    ASSERT_TRUE(shmpool::test::wait_for_exit(worker, hang_guard))
        << "the worker outlived its server";
    gate.release();  // the retry passes at once
    EXPECT_EQ(running.get(), 42);
    EXPECT_EQ(pool.stats().crashes, 1u);
    EXPECT_EQ(pool.stats().retries, 1u);
    EXPECT_NE(server_of(pool), server);
    EXPECT_EQ(pool.map(square_task, iota(10), 1).back(), 81);
}

TEST(ForkServer, KilledOverAndOverThePoolAlwaysComesBackOrFailsClearly) {
    Pool pool({.workers = 2, .start_method = StartMethod::fork_server});
    for (int round = 0; round < 5; ++round) {
        const pid_t server = server_of(pool);
        ::kill(server, SIGKILL);
        ASSERT_TRUE(shmpool::test::wait_for_exit(server, hang_guard));
        // Whatever the moment of the kill, the next map runs on a new server's workers.
        EXPECT_EQ(pool.map(square_task, iota(30), 1).back(), 29 * 29) << "round " << round;
    }
    EXPECT_EQ(pool.stats().tasks_failed, 0u);
}

TEST(ForkServer, KilledAsItStartsItIsStartedOnceMoreAndThePoolComesUp) {
    Gate gate = Gate::create(shmpool::test::start_gate_name());
    gate.state().deaths_left = 1;  // the first server dies at the gate, before shmpool::init
    gate.state().death_signal = SIGKILL;
    Pool pool({.workers = 2, .start_method = StartMethod::fork_server});
    EXPECT_EQ(pool.map(square_task, iota(20), 1).back(), 19 * 19);
    EXPECT_LE(gate.state().deaths_left.load(), 0);
    EXPECT_EQ(pool.stats().start_failures, 0u) << "no worker died: the server did";
}

TEST(ForkServer, KilledAtEveryStartPoolCreationFailsNamingTheServer) {
    Gate gate = Gate::create(shmpool::test::start_gate_name());
    gate.state().deaths_left = 1'000'000;
    gate.state().death_signal = SIGKILL;
    try {
        Pool pool({.workers = 2, .start_method = StartMethod::fork_server});
        ADD_FAILURE() << "the pool started";
    } catch (const shmpool::ForkServerDied& e) {
        EXPECT_EQ(e.status().signal, SIGKILL);
        EXPECT_TRUE(shmpool::test::wait_for_exit(e.pid(), 1s));
        const std::string what = e.what();
        EXPECT_NE(what.find(std::to_string(e.pid())), std::string::npos) << what;
        EXPECT_NE(what.find("killed by SIGKILL"), std::string::npos) << what;
        EXPECT_EQ(what.find("shmpool::init(argc, argv) first?"), std::string::npos)
            << "a signal may come from outside: no guess about the program";
    }
}

TEST(ForkServer, AProgramThatNeverRunsTheServerFailsCreationNamingIt) {
    try {
        Pool pool({.workers = 1,
                   .worker_executable = "/bin/true",
                   .start_method = StartMethod::fork_server});
        ADD_FAILURE() << "the pool started";
    } catch (const shmpool::ForkServerDied& e) {
        EXPECT_GT(e.pid(), 0);
        EXPECT_EQ(e.status(), (shmpool::ExitStatus{.exit_code = 0}));
        const std::string what = e.what();
        EXPECT_NE(what.find("/bin/true"), std::string::npos) << what;
        EXPECT_NE(what.find(std::to_string(e.pid())), std::string::npos) << what;
        EXPECT_NE(what.find("call shmpool::init(argc, argv) first?"), std::string::npos) << what;
    }
}

TEST(ForkServer, AWorkerExecutableThatCannotRunIsAClearError) {
    try {
        Pool pool({.workers = 1,
                   .worker_executable = "/nonexistent/worker",
                   .start_method = StartMethod::fork_server});
        ADD_FAILURE() << "the pool started";
    } catch (const std::system_error& e) {
        EXPECT_EQ(e.code(), std::errc::no_such_file_or_directory);
        EXPECT_NE(std::string(e.what()).find("/nonexistent/worker"), std::string::npos) << e.what();
    }
}

class ParentOfAForkServerDies : public ::testing::TestWithParam<int> {};

TEST_P(ParentOfAForkServerDies, TakesTheServerItsWorkersAndTheBlockWithIt) {
    shmpool::test::Child parent({shmpool::test::pool_child_path(), "fork_server"},
                                {"SHMPOOL_TRACKER="});
    auto line = parent.read_line();
    ASSERT_TRUE(line && line->rfind("ready ", 0) == 0) << parent.read_stderr(1s);
    std::istringstream words(line->substr(6));
    std::string block, server_word;
    pid_t w1 = 0, w2 = 0, server = 0;
    words >> block >> w1 >> w2 >> server_word >> server;
    ASSERT_EQ(server_word, "server") << *line;
    shmpool::test::Unlinker u{block};
    parent.kill(GetParam());
    ASSERT_TRUE(parent.wait());
    EXPECT_TRUE(shmpool::test::wait_for_exit(server, hang_guard))
        << "orphan fork server " << server;
    EXPECT_TRUE(shmpool::test::wait_for_exit(w1, hang_guard)) << "orphan worker " << w1;
    EXPECT_TRUE(shmpool::test::wait_for_exit(w2, hang_guard)) << "orphan worker " << w2;
    EXPECT_TRUE(shmpool::test::wait_for_removal(block, hang_guard)) << "the control block leaked";
}

INSTANTIATE_TEST_SUITE_P(BySignal, ParentOfAForkServerDies, ::testing::Values(SIGKILL, SIGTERM));

}  // namespace
