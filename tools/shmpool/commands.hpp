// The shmpool CLI's subcommands, each a thin layer over the shm library's public API.
#pragma once

#include <stdexcept>
#include <string>
#include <vector>

namespace shmpool::cli {

/// A failure to report as `shmpool: error: <what>` with exit status 1.
class CommandError : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

void new_list(const std::string& json_text, const std::string& name);
void show(const std::string& name, bool as_json);
void set(const std::string& name, const std::string& index_text, const std::string& json_text);
void rm(const std::vector<std::string>& names);
void ls(bool as_json);

}  // namespace shmpool::cli
