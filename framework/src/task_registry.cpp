// The process-wide table of registered tasks (filled during static initialisation).
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>

#include "shmpool/framework/task.hpp"

namespace shmpool::detail {
namespace {

struct Registry {
    std::mutex mutex;
    std::map<std::string, Invoker, std::less<>> tasks;
};

Registry& registry() {
    static Registry r;  // constructed on first use: safe from any static initialiser
    return r;
}

}  // namespace

void register_task(const std::string& name, Invoker invoker) {
    Registry& r = registry();
    std::lock_guard lock(r.mutex);
    auto [it, inserted] = r.tasks.emplace(name, invoker);
    if (!inserted && it->second != invoker) {
        throw std::logic_error("two different functions are registered as task '" + name + "'");
    }
}

Invoker find_task(std::string_view name) noexcept {
    Registry& r = registry();
    std::lock_guard lock(r.mutex);
    auto it = r.tasks.find(name);
    return it == r.tasks.end() ? nullptr : it->second;
}

}  // namespace shmpool::detail
