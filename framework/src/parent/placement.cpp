// AffinityMemory: a short most-recently-used list of placements.
#include "parent/placement.hpp"

#include <functional>

namespace shmpool::detail {

std::shared_ptr<Placement> AffinityMemory::placement_for(std::string_view task,
                                                         std::string_view args,
                                                         std::size_t ranges) {
    // Hashes, not copies of the arguments: a collision only misplaces a hint.
    const std::size_t task_hash = std::hash<std::string_view>{}(task);
    const std::size_t args_hash = std::hash<std::string_view>{}(args);
    std::lock_guard lock(mutex_);
    for (auto it = entries_.begin(); it != entries_.end(); ++it) {
        if (it->task_hash != task_hash || it->args_hash != args_hash ||
            it->args_size != args.size() || it->placement->size() != ranges)
            continue;
        Entry found = std::move(*it);
        entries_.erase(it);
        entries_.push_front(std::move(found));
        return entries_.front().placement;
    }
    entries_.push_front({task_hash, args_hash, args.size(), std::make_shared<Placement>(ranges)});
    if (entries_.size() > remembered) entries_.pop_back();
    return entries_.front().placement;
}

}  // namespace shmpool::detail
