// PoolLink: wake() and assist() for futures, counted so that the pool can wait them out.
#include "parent/pool_link.hpp"

#include <thread>

namespace shmpool::detail {
namespace {

// Counts a thread inside the pool through a link, for as long as it lives.
class LinkUse {
  public:
    explicit LinkUse(const PoolLink& link) noexcept : link_(link) { link_.users.fetch_add(1); }
    ~LinkUse() { link_.users.fetch_sub(1); }
    LinkUse(const LinkUse&) = delete;
    LinkUse& operator=(const LinkUse&) = delete;

  private:
    const PoolLink& link_;
};

}  // namespace

void PoolLink::close() noexcept {
    supervisor.store(nullptr);
    bell.store(nullptr);
    // Every future is settled by now: the threads still inside (a get() about to return, a
    // wake) leave at once, and no new one comes in.
    while (users.load() > 0)
        std::this_thread::yield();
}

void wake(const PoolLink& link) noexcept {
    const LinkUse use(link);
    if (Bell* bell = link.bell.load()) bell->ring();
}

bool help(const PoolLink& link) {
    const LinkUse use(link);
    Supervisor* s = link.supervisor.load();
    return s != nullptr && s->help_once();
}

void assist(const PoolLink& link, bool (*ready)(const void*), const void* context) {
    const LinkUse use(link);
    if (Supervisor* s = link.supervisor.load()) s->assist(ready, context);
}

}  // namespace shmpool::detail
