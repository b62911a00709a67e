// StderrRelay: copies each worker's stderr to the parent's, every complete line prefixed with
// the worker's id ("[worker 2 pid 1234] "), and a dead worker's last unterminated words too.
#pragma once

#include <map>
#include <mutex>
#include <string>

#include "posix/sys.hpp"

namespace shmpool::detail {

class StderrRelay {
  public:
    /// Relays the pipe whose read end this is; returns its descriptor (for the watcher's epoll).
    int add(sys::FileDescriptor read_end, std::string prefix);
    /// Copies what is waiting on `fd`; false once the pipe reached its end (it is then closed).
    bool pump(int fd);
    /// Copies what every pipe holds (the workers are all gone), then closes them.
    void drain();

  private:
    struct Pipe {
        sys::FileDescriptor fd;
        std::string prefix;
        std::string partial;  // an incomplete last line
    };
    std::mutex mutex_;  // a leaf: the watcher thread pumps, the spawning thread adds
    std::map<int, Pipe> pipes_;
};

}  // namespace shmpool::detail
