// Implementation of the shmpool subcommands (contract in docs/cli.md).
#include "commands.hpp"

#include <fmt/chrono.h>
#include <fmt/format.h>

#include <charconv>
#include <cstdio>
#include <ctime>

#include "json_codec.hpp"
#include "shmpool/shm/block_info.hpp"
#include "shmpool/shm/shareable_list.hpp"

namespace shmpool::cli {
namespace {

std::ptrdiff_t parse_index(const std::string& text) {
    std::ptrdiff_t index = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), index);
    if (ec != std::errc{} || end != text.data() + text.size()) {
        throw CommandError(fmt::format("invalid index '{}': expected an integer", text));
    }
    return index;
}

std::string mode_string(unsigned mode) {
    return fmt::format("{:04o}", mode);
}

std::string list_column(const std::optional<bool>& parses) {
    if (!parses) return "?";
    return *parses ? "yes" : "no";
}

}  // namespace

void new_list(const std::string& json_text, const std::string& name) {
    std::vector<Value> values = values_from_json(parse_json(json_text));
    // Untracked: the list outlives this short-lived process, as the user asked.
    CreateOptions options{.track = false};
    ShareableList list = name.empty() ? ShareableList::create(values, options)
                                      : ShareableList::create(name, values, options);
    fmt::print("{}\n", list.name());
}

void show(const std::string& name, bool as_json) {
    ShareableList list = ShareableList::attach(name, {.access = Access::read_only});
    std::vector<Value> values = list.to_vector();
    if (as_json) {
        nlohmann::json array = nlohmann::json::array();
        for (const Value& v : values)
            array.push_back(value_to_json(v));
        fmt::print("{}\n", array.dump(-1, ' ', false, nlohmann::json::error_handler_t::strict));
    } else {
        fmt::print("{}\n", repr(list));
    }
}

void set(const std::string& name, const std::string& index_text, const std::string& json_text) {
    std::ptrdiff_t index = parse_index(index_text);
    // Parse and check everything before touching the block.
    Value value = value_from_json(parse_json(json_text));
    ShareableList list = ShareableList::attach(name);
    list.set(index, value);
}

void rm(const std::vector<std::string>& names) {
    // All or nothing: every name is checked before any block is removed.
    for (const std::string& name : names) {
        if (!stat_block(name)) {
            throw CommandError(fmt::format("no shared memory block named '{}'", name));
        }
    }
    for (const std::string& name : names)
        SharedMemory::remove(name);
}

void ls(bool as_json) {
    std::vector<BlockInfo> blocks = list_blocks();
    if (as_json) {
        nlohmann::json array = nlohmann::json::array();
        for (const BlockInfo& b : blocks) {
            nlohmann::json entry = {
                {"name", b.name},
                {"size", b.size},
                {"owner", b.owner},
                {"uid", b.uid},
                {"mode", mode_string(b.mode)},
                {"modified",
                 fmt::format("{:%Y-%m-%dT%H:%M:%S}Z",
                             fmt::gmtime(std::chrono::system_clock::to_time_t(b.modified)))},
                {"shareable_list",
                 b.shareable_list ? nlohmann::json(*b.shareable_list) : nlohmann::json()},
            };
            array.push_back(std::move(entry));
        }
        fmt::print("{}\n", array.dump(2));
        return;
    }
    std::size_t name_width = 4;
    std::size_t owner_width = 5;
    for (const BlockInfo& b : blocks) {
        name_width = std::max(name_width, b.name.size());
        owner_width = std::max(owner_width, b.owner.size());
    }
    fmt::print("{:<{}}  {:>12}  {:<{}}  {:<4}  {:<19}  {}\n", "NAME", name_width, "SIZE", "OWNER",
               owner_width, "MODE", "MODIFIED", "LIST");
    for (const BlockInfo& b : blocks) {
        fmt::print("{:<{}}  {:>12}  {:<{}}  {:<4}  {:%Y-%m-%d %H:%M:%S}  {}\n", b.name, name_width,
                   b.size, b.owner, owner_width, mode_string(b.mode),
                   fmt::localtime(std::chrono::system_clock::to_time_t(b.modified)),
                   list_column(b.shareable_list));
    }
}

}  // namespace shmpool::cli
