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
    std::map<std::string, TaskEntry, std::less<>> tasks;
};

Registry& registry() {
    static Registry r;  // constructed on first use: safe from any static initialiser
    return r;
}

}  // namespace

void register_task(const std::string& name, const TaskEntry& entry) {
    Registry& r = registry();
    std::lock_guard lock(r.mutex);
    auto [it, inserted] = r.tasks.emplace(name, entry);
    if (!inserted && it->second.invoke != entry.invoke) {
        throw std::logic_error("two different functions are registered as task '" + name + "'");
    }
}

TaskEntry find_task_entry(std::string_view name) noexcept {
    Registry& r = registry();
    std::lock_guard lock(r.mutex);
    auto it = r.tasks.find(name);
    return it == r.tasks.end() ? TaskEntry{} : it->second;
}

Invoker find_task(std::string_view name) noexcept {
    return find_task_entry(name).invoke;
}

}  // namespace shmpool::detail
