// The process-wide table of registered tasks (filled during static initialisation), and the
// clock every process of a pool shares.
#include <fmt/format.h>

#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "posix/sys.hpp"
#include "shmpool/framework/task.hpp"

namespace shmpool::detail {
namespace {

struct Registry {
    std::mutex mutex;
    std::map<std::string, TaskEntry, std::less<>> tasks;
    std::vector<std::string> conflicts;  // names registered for two different functions
};

Registry& registry() {
    static Registry r;  // constructed on first use: safe from any static initialiser
    return r;
}

}  // namespace

std::uint64_t monotonic_ns() noexcept {
    return sys::monotonic_ns();
}

// noexcept: allocation failure during static initialisation ends the program either way.
const std::string& register_task(std::string_view name, const TaskEntry& entry) noexcept {
    Registry& r = registry();
    std::lock_guard lock(r.mutex);
    auto it = r.tasks.find(name);
    if (it == r.tasks.end()) {
        it = r.tasks.emplace(std::string(name), entry).first;
    } else if (it->second.invoke != entry.invoke) {
        r.conflicts.emplace_back(name);
    }
    return it->first;
}

void check_task_registry() {
    Registry& r = registry();
    std::lock_guard lock(r.mutex);
    if (r.conflicts.empty()) return;
    std::string names;
    for (const std::string& n : r.conflicts)
        names += (names.empty() ? "'" : ", '") + n + "'";
    throw std::logic_error("two different functions are registered under the same task name: " +
                           names + " (each SHMPOOL_TASK needs a name of its own)");
}

TaskEntry find_task_entry(std::string_view name) noexcept {
    Registry& r = registry();
    std::lock_guard lock(r.mutex);
    auto it = r.tasks.find(name);
    return it == r.tasks.end() ? TaskEntry{} : it->second;
}

std::uint64_t task_registry_fingerprint() noexcept {
    Registry& r = registry();
    std::lock_guard lock(r.mutex);
    std::uint64_t h = 14695981039346656037ull;  // FNV-1a over "name\0signature\0...", sorted
    auto mix = [&](std::string_view text) {
        for (const char c : text) {
            h ^= static_cast<unsigned char>(c);
            h *= 1099511628211ull;
        }
        h ^= 0;
        h *= 1099511628211ull;
    };
    for (const auto& [name, entry] : r.tasks) {
        mix(name);
        mix(entry.signature);
    }
    return h;
}

namespace {
std::string json_string(std::string_view text) {
    std::string out = "\"";
    for (const char c : text) {
        if (c == '"' || c == '\\') {
            out += '\\';
            out += c;
        } else if (static_cast<unsigned char>(c) < 0x20) {
            out += fmt::format("\\u{:04x}", static_cast<unsigned>(c));
        } else {
            out += c;
        }
    }
    return out + '"';
}
}  // namespace

std::string describe_tasks() {
    Registry& r = registry();
    std::lock_guard lock(r.mutex);
    // Version 1 of this format; the Python package refuses another.
    std::string out = R"({"shmpool_tasks": 1, "tasks": {)";
    const char* separator = "";
    for (const auto& [name, entry] : r.tasks) {
        // Only tasks registered through Task<Fn>, and not shmpool's own (pipeline steps).
        if (entry.describe == nullptr || name.starts_with("shmpool.")) continue;
        std::string signature = entry.describe();
        signature.pop_back();  // the closing brace: the strides go inside
        const std::string packed =
            entry.packed ? fmt::format("[{}, {}]", entry.in_stride, entry.out_stride) : "null";
        out += fmt::format("{}\n  {}: {}, \"packed\": {}}}", separator, json_string(name),
                           signature, packed);
        separator = ",";
    }
    return out + "\n}}\n";
}

Invoker find_task(std::string_view name) noexcept {
    return find_task_entry(name).invoke;
}

}  // namespace shmpool::detail
