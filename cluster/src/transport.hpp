// Transport: a rank's message traffic, driven by its communication thread, the only thread that
// calls MPI. Other threads post messages (a queue, and a wake-up); the communication thread sends
// them, polls for arrivals, and between polls sleeps: briefly while answers are due, up to a
// millisecond when the rank is idle, so an idle job costs almost no CPU (Open MPI's own waits
// spin).
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "messages.hpp"
#include "mpi/mpi.hpp"

namespace shmpool::cluster {

class Transport {
  public:
    /// From any thread: queues a message and wakes the communication thread.
    void post(int destination, Tag tag, std::string bytes);
    /// Communication thread: starts the queued sends, retires the completed ones; whether it did
    /// anything.
    bool pump();
    /// Communication thread: the next arrived message, if any.
    std::optional<mpi::Message> receive() { return mpi::try_receive(); }
    /// Communication thread: sleeps until a message is posted (or wake()) or `timeout` passes.
    void sleep(std::chrono::microseconds timeout);
    /// From any thread: ends the communication thread's sleep.
    void wake();
    /// Communication thread: waits (bounded) until every send completed, before MPI_Finalize.
    void flush(std::chrono::milliseconds limit);

  private:
    struct Outgoing {
        int destination;
        Tag tag;
        std::string bytes;
    };
    std::mutex mutex_;  // a leaf
    std::condition_variable posted_;
    std::deque<Outgoing> outbox_;
    bool woken_ = false;
    std::vector<mpi::Send> sending_;  // the communication thread's alone
};

/// How long the communication thread sleeps after a poll that found nothing: a short spin of
/// yields after activity, then growing sleeps up to `ceiling`.
class Backoff {
  public:
    /// `busy`: answers are due (sleep at most 50 µs); otherwise up to a millisecond.
    std::chrono::microseconds next(bool found_something, bool busy);

  private:
    std::chrono::steady_clock::time_point last_activity_ = std::chrono::steady_clock::now();
    std::chrono::microseconds sleep_{0};
};

}  // namespace shmpool::cluster
