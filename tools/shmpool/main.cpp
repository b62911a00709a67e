// shmpool: create, inspect, edit, list and remove shared-memory blocks and ShareableLists.
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <exception>
#include <optional>
#include <string>
#include <string_view>
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

// shmpool run (--hosts a,b | --local N) [--mpirun-arg FLAG]... [--dry-run] [--] PROGRAM [ARGS...]
// Its own parser: everything from PROGRAM on is the program's, whatever it looks like.
int run_job(int argc, char** argv) {
    shmpool::cli::RunOptions options;
    int i = 2;
    auto value = [&](std::string_view arg, std::string_view flag) -> std::optional<std::string> {
        if (arg.starts_with(std::string(flag) + "="))
            return std::string(arg.substr(flag.size() + 1));
        if (arg != flag) return std::nullopt;
        if (i + 1 >= argc) throw CLI::ArgumentMismatch(std::string(flag) + " needs a value");
        return std::string(argv[++i]);
    };
    try {
        for (; i < argc; ++i) {
            const std::string_view arg = argv[i];
            if (arg == "--") {
                ++i;
                break;
            }
            if (!arg.starts_with("-")) break;
            if (arg == "--dry-run") {
                options.dry_run = true;
            } else if (auto hosts = value(arg, "--hosts")) {
                for (std::size_t at = 0; at <= hosts->size();) {
                    const std::size_t comma = std::min(hosts->find(',', at), hosts->size());
                    options.hosts.push_back(hosts->substr(at, comma - at));
                    at = comma + 1;
                }
            } else if (auto local = value(arg, "--local")) {
                options.local = static_cast<unsigned>(std::stoul(*local));
            } else if (auto extra = value(arg, "--mpirun-arg")) {
                options.mpirun_args.push_back(*extra);
            } else {
                throw CLI::ArgumentMismatch(fmt::format("run: unknown option '{}'", arg));
            }
        }
    } catch (const std::exception& e) {
        return fail(exit_usage, fmt::format("{} (see 'shmpool --help')", e.what()));
    }
    try {
        shmpool::cli::run_job(options, std::vector<std::string>(argv + i, argv + argc));
    } catch (const std::exception& e) {
        return fail(exit_error, e.what());
    }
    return 0;
}

int run(int argc, char** argv) {
    if (argc > 1 && std::string_view(argv[1]) == "run") return run_job(argc, argv);
    CLI::App app{"shmpool: inspect and edit shared-memory blocks and ShareableLists", "shmpool"};
    app.require_subcommand(1);
    app.set_version_flag("--version", "shmpool 0.1.0");

    std::string json_text;
    std::string name;
    shmpool::cli::NewListOptions list_options;
    double lock_timeout = 10;
    auto* new_list = app.add_subcommand("new-list", "Create a ShareableList; print its name");
    new_list->add_option("--json", json_text, "the items, as a JSON array")->required();
    new_list->add_option("--name", list_options.name,
                         "the block's name (default: a random psm_ name)");
    new_list->add_flag("--guarded", list_options.guarded, "the list carries a lock");
    new_list->add_flag(
        "--own", list_options.own,
        "stay alive as the list's tracked owner until stdin closes or SIGINT/SIGTERM, then "
        "remove it (if killed, the tracker removes it)");

    bool as_json = false;
    auto* show = app.add_subcommand(
        "show", "Print a ShareableList (Python repr, or JSON), or a heap's named objects");
    show->add_option("NAME", name, "block name")->required();
    show->add_flag("--json", as_json, "print a JSON array (a heap: a JSON object)");
    show->add_option("--timeout", lock_timeout,
                     "seconds to wait for a guarded list's or a heap's lock (default 10)");

    std::string index_text;
    auto* set = app.add_subcommand("set", "Set one item of a ShareableList");
    set->add_option("NAME", name, "block name")->required();
    set->add_option("INDEX", index_text, "item index (negative counts from the end)")->required();
    set->add_option("VALUE", json_text, "the new value, as JSON")->required();
    set->add_option("--timeout", lock_timeout,
                    "seconds to wait for a guarded list's lock (default 10)");

    auto* lock =
        app.add_subcommand("lock", "Hold a guarded list's lock until stdin closes or a signal");
    lock->add_option("NAME", name, "block name")->required();
    lock->add_option("--timeout", lock_timeout, "seconds to wait for the lock (default 10)");

    std::vector<std::string> names;
    auto* rm = app.add_subcommand("rm", "Remove blocks (all or none)");
    rm->add_option("NAME", names, "block names")->required();

    auto* ls = app.add_subcommand("ls", "List the blocks in /dev/shm");
    ls->add_flag("--json", as_json, "print a JSON array");

    auto* tracker = app.add_subcommand("tracker", "Show what the live trackers of this user hold");
    tracker->add_flag("--json", as_json, "print JSON");

    bool dry_run = false;
    auto* gc = app.add_subcommand("gc", "Remove blocks whose owner and tracker are both dead");
    gc->add_flag("--dry-run", dry_run, "only say what would be removed");

    // Listed here for --help; run_job() below parses it (its program's flags are not ours).
    app.add_subcommand("run",
                       "Run a program as a cluster job: shmpool run (--hosts a,b | --local N) "
                       "[--mpirun-arg FLAG]... [--dry-run] [--] PROGRAM [ARGS...]");

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
        // Commands that wait take SIGINT/SIGTERM through a signalfd, to clean up before exiting.
        if (*new_list || *lock) cmd::block_termination_signals();
        if (*new_list) cmd::new_list(json_text, list_options);
        if (*show) cmd::show(name, as_json, lock_timeout);
        if (*set) cmd::set(name, index_text, json_text, lock_timeout);
        if (*lock) cmd::lock(name, lock_timeout);
        if (*rm) cmd::rm(names);
        if (*ls) cmd::ls(as_json);
        if (*tracker) cmd::tracker(as_json);
        if (*gc) cmd::gc(dry_run);
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
