// wordcount: counts the words of text files in pool workers that read the text from shared memory.
//
//   wordcount FILE... [--workers N] [--top K]
//
// The parent loads every file into one SharedArray<char>, cuts it into chunks at word boundaries
// and gives each task the block's name and a byte range: the text never travels through the
// pool, only the partial counts come back, and the parent merges them. A word is a maximal run of
// ASCII letters, lowercased; the top K are printed as "<count> <word>", ties alphabetically.
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <memory>
#include <shmpool/framework/pool.hpp>
#include <shmpool/framework/shared_array.hpp>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <vector>

namespace {

using Counts = std::vector<std::pair<std::string, std::uint64_t>>;

bool is_letter(char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

// The task: the words of bytes [begin, end) of the block, a range that does not cut a word.
Counts count_words(const std::string& block, std::size_t begin, std::size_t end) {
    const char* text = shmpool::SharedArray<char>::cached(block).data();  // mapped once per worker
    std::unordered_map<std::string, std::uint64_t> counts;
    std::string word;
    for (std::size_t i = begin; i < end;) {
        if (!is_letter(text[i])) {
            ++i;
            continue;
        }
        word.clear();
        for (; i < end && is_letter(text[i]); ++i)
            word += static_cast<char>(text[i] | 0x20);  // ASCII letters: this bit is lowercase
        ++counts[word];
    }
    return {counts.begin(), counts.end()};
}
SHMPOOL_TASK(count_task, count_words);

int fail(const std::string& message) {
    std::fflush(stdout);
    fmt::print(stderr, "wordcount: error: {}\n", message);
    return 1;
}

// Appends the bytes of file `path` to `text`; throws a message naming the file.
void append_file(const std::string& path, std::string& text) {
    std::unique_ptr<std::FILE, int (*)(std::FILE*)> file(std::fopen(path.c_str(), "rb"),
                                                         &std::fclose);
    if (!file) throw std::system_error(errno, std::generic_category(), path);
    char buffer[1 << 16];
    while (std::size_t n = std::fread(buffer, 1, sizeof buffer, file.get()))
        text.append(buffer, n);
    // fopen() succeeds on a directory; reading it is what fails (EISDIR).
    if (std::ferror(file.get())) throw std::system_error(errno, std::generic_category(), path);
    text += '\n';  // a word never runs on from one file into the next
}

// Removes the text block however count_top_words() ends. The tracker would also remove it once this
// process exits, but as a leak, with a warning: it is the safety net for a crash, not the plan.
struct RemoveOnExit {
    std::string name;
    ~RemoveOnExit() {
        try {
            shmpool::SharedMemory::remove(name);
        } catch (const std::exception&) {  // already gone: nothing to do
        }
    }
};

int count_top_words(const std::vector<std::string>& files, unsigned workers, std::size_t top) {
    // Every file is read before anything is created, so a bad one leaves nothing behind.
    std::string loaded;
    for (const auto& path : files)
        append_file(path, loaded);
    const std::size_t size = loaded.size();

    auto text = shmpool::SharedArray<char>::create(std::max<std::size_t>(size, 1));
    RemoveOnExit remove{text.name()};
    std::copy(loaded.begin(), loaded.end(), text.begin());
    loaded = {};

    // About four chunks per worker, for balance, and at most 128 KiB each (see slot_bytes). A
    // chunk's end moves forward past the word it would cut.
    const std::size_t cores = workers ? workers : std::max(1u, std::thread::hardware_concurrency());
    const std::size_t target =
        std::clamp<std::size_t>((size + 4 * cores - 1) / (4 * cores), 1, std::size_t{128} << 10);
    std::vector<std::tuple<std::string, std::size_t, std::size_t>> chunks;
    std::size_t largest = 0;
    for (std::size_t begin = 0, end; begin < size; begin = end) {
        end = std::min(size, begin + target);
        while (end < size && is_letter(text[end - 1]) && is_letter(text[end]))
            ++end;
        chunks.emplace_back(text.name(), begin, end);
        largest = std::max(largest, end - begin);
    }

    // A chunk's counts come back through its worker's slot, which must hold them. An entry takes
    // 16 + L bytes for a word of L letters that used L + 1 bytes of text; only 26 words have one
    // letter and 676 two, so the counts take under 13 KiB plus 4.75 bytes per byte of text.
    // Whole pages: the slots are laid out back to back, and each one's header must stay aligned.
    const std::size_t slot_bytes = (5 * largest + (64 << 10) + 4095) / 4096 * 4096;
    // The text is named in shared_blocks: attached once per worker, and, under mpirun, copied
    // once to every node (docs/cluster.md).
    shmpool::Pool pool({.workers = workers,
                        .slot_bytes = std::max<std::size_t>(slot_bytes, 256 << 10),
                        .shared_blocks = {text.name()}});
    // chunksize 1: one range per slot hand-over, so each result has the whole slot to itself.
    std::unordered_map<std::string, std::uint64_t> total;
    for (auto& part : pool.starmap(count_task, chunks, 1)) {
        for (auto& [word, n] : part)
            total[std::move(word)] += n;
    }

    Counts ranked(total.begin(), total.end());
    const std::size_t k = std::min(top, ranked.size());
    std::partial_sort(ranked.begin(), ranked.begin() + static_cast<std::ptrdiff_t>(k), ranked.end(),
                      [](const auto& a, const auto& b) {
                          return a.second != b.second ? a.second > b.second : a.first < b.first;
                      });
    for (std::size_t i = 0; i < k; ++i)
        fmt::print("{} {}\n", ranked[i].second, ranked[i].first);
    return 0;
}

int run(int argc, char** argv) {
    CLI::App app{"Count the words of text files in shmpool workers; print the most frequent",
                 "wordcount"};
    std::vector<std::string> files;
    unsigned workers = 0;
    long long top = 10;
    app.add_option("FILE", files, "text files to count the words of")->required();
    app.add_option("--workers", workers, "worker processes (default 0: one per core)");
    app.add_option("--top", top, "how many of the most frequent words to print (default 10)");
    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForHelp& e) {
        return app.exit(e);
    } catch (const CLI::ParseError& e) {
        return fail(e.what());  // exit 1, not CLI11's 2 for usage: the documented contract
    }
    if (top <= 0) return fail(fmt::format("--top must be at least 1, not {}", top));

    try {
        return count_top_words(files, workers, static_cast<std::size_t>(top));
    } catch (const std::exception& e) {
        return fail(e.what());
    }
}

}  // namespace

int main(int argc, char** argv) {
    shmpool::init(argc, argv);  // in a worker process, this runs the worker and never returns
    try {
        return run(argc, argv);
    } catch (const std::exception& e) {  // what run() does not handle itself: a bug, or no memory
        std::fprintf(stderr, "wordcount: error: %s\n", e.what());
    } catch (...) {
        std::fprintf(stderr, "wordcount: error: unknown exception\n");
    }
    return 1;
}
