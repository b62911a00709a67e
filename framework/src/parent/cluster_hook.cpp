// Where the cluster library's hook is kept.
#include "parent/cluster_hook.hpp"

#include <atomic>

namespace shmpool::detail {
namespace {

std::atomic<ClusterHook*> installed{nullptr};

}  // namespace

void install_cluster_hook(ClusterHook* hook) noexcept {
    installed.store(hook);
}

ClusterHook* cluster_hook() noexcept {
    return installed.load();
}

}  // namespace shmpool::detail
