// The one seam between shmpool's cluster mode and MPI (as shm/src/posix is for the kernel): every
// MPI call of the library is here, on the C API, and only the communication thread of a rank
// makes them (MPI_THREAD_FUNNELED). Errors come back as std::runtime_error naming the call.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

namespace shmpool::cluster::mpi {

/// This process's place in the job, read from mpirun's environment before MPI starts.
struct Launch {
    int rank = 0;
    int size = 1;
};
/// Nothing outside a job started by mpirun (or a job of one).
std::optional<Launch> launched_by_mpirun() noexcept;

/// MPI_Init_thread(FUNNELED) on the calling thread, errors returned rather than fatal.
void initialize(int* argc, char*** argv);
void finalize() noexcept;
int rank();
int size();

/// A message received: who sent it, with which tag, and its bytes.
struct Message {
    int source = 0;
    int tag = 0;
    std::string bytes;
};

/// The largest message one send carries (MPI counts are int); senders check against it first.
constexpr std::size_t max_message = INT32_MAX;

/// A send in flight; complete() tests it without blocking. Throws std::length_error above
/// max_message.
class Send {
  public:
    Send(int destination, int tag, std::string bytes);
    Send(Send&&) noexcept;
    Send& operator=(Send&&) noexcept;
    Send(const Send&) = delete;
    Send& operator=(const Send&) = delete;
    ~Send();
    bool complete();

  private:
    // Owned until the send completes, at a fixed address (a short std::string would move).
    std::unique_ptr<std::string> bytes_;
    void* request_ = nullptr;
};

/// The next message that has arrived (from anyone, any tag), if any; never blocks.
std::optional<Message> try_receive();

/// MPI_Bcast of `length` bytes from rank `root`, in pieces of at most 1 GiB (int counts).
void broadcast(void* data, std::size_t length, int root);

/// MPI_Abort of the whole job with `code` (never returns).
[[noreturn]] void abort_job(int code) noexcept;

}  // namespace shmpool::cluster::mpi
