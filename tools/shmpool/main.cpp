// shmpool: create, inspect, edit, list and remove shared-memory blocks and ShareableLists.
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "commands.hpp"

namespace {

constexpr int exit_error = 1;
constexpr int exit_usage = 2;

int fail(int status, const std::string& message) {
    std::fflush(stdout);
    fmt::print(stderr, "shmpool: error: {}\n", message);
    return status;
}

int run(int argc, char** argv) {
    CLI::App app{"shmpool: inspect and edit shared-memory blocks and ShareableLists", "shmpool"};
    app.require_subcommand(1);
    app.set_version_flag("--version", "shmpool 0.1.0");

    std::string json_text;
    std::string name;
    auto* new_list =
        app.add_subcommand("new-list", "Create an untracked ShareableList; print its name");
    new_list->add_option("--json", json_text, "the items, as a JSON array")->required();
    new_list->add_option("--name", name, "the block's name (default: a random psm_ name)");

    bool as_json = false;
    auto* show = app.add_subcommand("show", "Print a ShareableList (Python repr, or JSON)");
    show->add_option("NAME", name, "block name")->required();
    show->add_flag("--json", as_json, "print a JSON array");

    std::string index_text;
    auto* set = app.add_subcommand("set", "Set one item of a ShareableList");
    set->add_option("NAME", name, "block name")->required();
    set->add_option("INDEX", index_text, "item index (negative counts from the end)")->required();
    set->add_option("VALUE", json_text, "the new value, as JSON")->required();

    std::vector<std::string> names;
    auto* rm = app.add_subcommand("rm", "Remove blocks (all or none)");
    rm->add_option("NAME", names, "block names")->required();

    auto* ls = app.add_subcommand("ls", "List the blocks in /dev/shm");
    ls->add_flag("--json", as_json, "print a JSON array");

    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForHelp& e) {
        return app.exit(e);
    } catch (const CLI::CallForAllHelp& e) {
        return app.exit(e);
    } catch (const CLI::CallForVersion& e) {
        return app.exit(e);
    } catch (const CLI::ParseError& e) {
        return fail(exit_usage, fmt::format("{} (see 'shmpool --help')", e.what()));
    }

    try {
        namespace cmd = shmpool::cli;
        if (*new_list) cmd::new_list(json_text, name);
        if (*show) cmd::show(name, as_json);
        if (*set) cmd::set(name, index_text, json_text);
        if (*rm) cmd::rm(names);
        if (*ls) cmd::ls(as_json);
    } catch (const std::exception& e) {
        return fail(exit_error, e.what());
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        return run(argc, argv);
    } catch (const std::exception& e) {  // only from setting up the parser: bad_alloc
        return fail(exit_error, e.what());
    }
}
