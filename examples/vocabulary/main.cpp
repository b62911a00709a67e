// vocabulary: a word-to-id map built once by the parent in a SharedHeap, frozen, and read in
// place by pool workers that encode a corpus into ids.
//
//   vocabulary FILE... [--workers N] [--crash-mid-allocation]
//
// The parent loads the files into one SharedArray<char> (as wordcount does), builds the sorted
// vocabulary (a word is a maximal run of ASCII letters, lowercased; ids in alphabetical order) in
// a SharedMap<SharedString, std::uint32_t> in a heap, and freezes the heap: the workers, which
// attach it once through PoolOptions::shared_blocks, map it read-only and look words up without
// a lock. Each task encodes a byte range of the text into ids; the parent checks the whole
// encoding against one made in its own memory with a std::map, and prints
//
//   tokens: T vocabulary: V encoding: identical
//
// --crash-mid-allocation then gives a worker a second, writable heap in which it names an
// object whose constructor kills the worker, as a crash in the middle of an allocation would.
// The heap reports itself inconsistent, naming the dead worker, the pool replaces the worker and
// encodes the corpus again, and the program prints
//
//   scratch heap: index inconsistent (worker P died holding its lock); pool carried on: identical
#include <fmt/format.h>
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <optional>
#include <shmpool/framework/pool.hpp>
#include <shmpool/framework/shared_array.hpp>
#include <shmpool/shm/shared_heap.hpp>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <tuple>
#include <utility>
#include <vector>

namespace {

using Vocabulary = shmpool::SharedMap<shmpool::SharedString, std::uint32_t>;

bool is_letter(char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

// Calls word(w) for each word of text[begin, end), lowercased.
template <class F>
void for_each_word(const char* text, std::size_t begin, std::size_t end, F&& word) {
    std::string w;
    for (std::size_t i = begin; i < end;) {
        if (!is_letter(text[i])) {
            ++i;
            continue;
        }
        w.clear();
        for (; i < end && is_letter(text[i]); ++i)
            w += static_cast<char>(text[i] | 0x20);  // ASCII letters: this bit is lowercase
        word(w);
    }
}

// [vocabulary-lookup]
// The task: the ids of the words of bytes [begin, end) of the text, a range that cuts no word.
std::vector<std::uint32_t> encode(const std::string& heap, const std::string& text,
                                  std::size_t begin, std::size_t end) {
    const auto& vocabulary = *shmpool::SharedHeap::cached(heap).find<Vocabulary>("vocabulary");
    std::vector<std::uint32_t> ids;
    for_each_word(shmpool::SharedArray<char>::cached(text).data(), begin, end,
                  [&](const std::string& w) { ids.push_back(vocabulary.find(w)->second); });
    return ids;
}
SHMPOOL_TASK(encode_task, encode);
// [vocabulary-lookup]

// [vocabulary-build]
// The vocabulary in a new heap, frozen: read-only from now on, so that workers map it read-only
// and look words up without a lock.
shmpool::SharedHeap build_vocabulary(const std::map<std::string, std::uint32_t>& words) {
    std::size_t bytes = 1 << 20;  // room for the words, a map node each, and slack
    for (const auto& [word, id] : words)
        bytes += word.size() + 128;
    shmpool::SharedHeap heap = shmpool::SharedHeap::create(bytes);
    auto& vocabulary = heap.construct<Vocabulary>("vocabulary", heap.allocator());
    for (const auto& [word, id] : words)
        vocabulary.emplace(heap.string(word), id);
    heap.freeze();
    return heap;
}
// [vocabulary-build]

// Constructing one kills its process: a crash while the heap's index of names is being changed.
struct DiesWhileBuilt {
    DiesWhileBuilt() { ::kill(::getpid(), SIGKILL); }
};
int crash_in_heap(const std::string& heap) {
    shmpool::SharedHeap::cached(heap).construct<DiesWhileBuilt>("never");
    return 0;
}
SHMPOOL_TASK(crash_in_heap_task, crash_in_heap);

int fail(const std::string& message) {
    std::fflush(stdout);
    fmt::print(stderr, "vocabulary: error: {}\n", message);
    return 1;
}

void append_file(const std::string& path, std::string& text) {
    std::unique_ptr<std::FILE, int (*)(std::FILE*)> file(std::fopen(path.c_str(), "rb"),
                                                         &std::fclose);
    if (!file) throw std::system_error(errno, std::generic_category(), path);
    char buffer[1 << 16];
    while (std::size_t n = std::fread(buffer, 1, sizeof buffer, file.get()))
        text.append(buffer, n);
    if (std::ferror(file.get())) throw std::system_error(errno, std::generic_category(), path);
    text += '\n';  // a word never runs on from one file into the next
}

// Removes a block however the run ends (the tracker would too, but as a leak, with a warning).
struct RemoveOnExit {
    explicit RemoveOnExit(std::string block) : name(std::move(block)) {}
    RemoveOnExit(const RemoveOnExit&) = delete;
    RemoveOnExit& operator=(const RemoveOnExit&) = delete;
    std::string name;
    ~RemoveOnExit() {
        try {
            shmpool::SharedMemory::remove(name);
        } catch (const std::exception&) {  // already gone
        }
    }
};

int run_vocabulary(const std::vector<std::string>& files, unsigned workers, bool crash) {
    std::string loaded;
    for (const auto& path : files)
        append_file(path, loaded);
    const std::size_t size = loaded.size();
    auto text = shmpool::SharedArray<char>::create(std::max<std::size_t>(size, 1));
    RemoveOnExit remove_text{text.name()};
    std::copy(loaded.begin(), loaded.end(), text.begin());

    // The reference, in this process's memory: ids in alphabetical order, the whole encoding.
    std::map<std::string, std::uint32_t> local;
    for_each_word(loaded.data(), 0, size, [&](const std::string& w) { local.emplace(w, 0); });
    std::uint32_t next = 0;
    for (auto& [word, id] : local)
        id = next++;
    std::vector<std::uint32_t> expected;
    for_each_word(loaded.data(), 0, size,
                  [&](const std::string& w) { expected.push_back(local.at(w)); });
    loaded = {};

    const shmpool::SharedHeap heap = build_vocabulary(local);
    RemoveOnExit remove_heap{heap.name()};
    const auto& vocabulary = *heap.find<Vocabulary>("vocabulary");

    std::vector<std::tuple<std::string, std::string, std::size_t, std::size_t>> ranges;
    const std::size_t target = std::max<std::size_t>(1, std::min<std::size_t>(size / 8 + 1, 16384));
    for (std::size_t begin = 0, end; begin < size; begin = end) {
        end = std::min(size, begin + target);
        while (end < size && is_letter(text[end - 1]) && is_letter(text[end]))
            ++end;
        ranges.emplace_back(heap.name(), text.name(), begin, end);
    }

    shmpool::SharedHeap scratch;  // --crash-mid-allocation: a heap still open for allocation
    std::optional<RemoveOnExit> remove_scratch;
    if (crash) {
        scratch = shmpool::SharedHeap::create(1 << 20);
        remove_scratch.emplace(scratch.name());
    }
    shmpool::Pool pool(
        {.workers = workers, .max_retries = 0, .shared_blocks = {heap.name(), text.name()}});
    auto encode_all = [&] {
        std::vector<std::uint32_t> ids;
        for (const auto& part : pool.starmap(encode_task, ranges, 1))
            ids.insert(ids.end(), part.begin(), part.end());
        return ids == expected;
    };
    const bool identical = encode_all();
    fmt::print("tokens: {} vocabulary: {} encoding: {}\n", expected.size(), vocabulary.size(),
               identical ? "identical" : "DIFFERENT");
    if (!identical) return 1;
    if (!crash) return 0;

    try {
        pool.submit(crash_in_heap_task, scratch.name()).get();
        return fail("the worker meant to crash did not");
    } catch (const shmpool::WorkerCrashed&) {  // as meant: a worker died in the heap
    }
    const bool carried_on = encode_all();
    fmt::print("scratch heap: {} (worker {} died holding its lock); pool carried on: {}\n",
               to_string(scratch.state()), scratch.dead_pid(),
               carried_on ? "identical" : "DIFFERENT");
    return carried_on && scratch.state() == shmpool::HeapState::index_inconsistent ? 0 : 1;
}

int run(int argc, char** argv) {
    CLI::App app{"Encode text files into word ids in shmpool workers that read a shared vocabulary",
                 "vocabulary"};
    std::vector<std::string> files;
    unsigned workers = 2;
    bool crash = false;
    app.add_option("FILE", files, "text files to encode")->required();
    app.add_option("--workers", workers, "worker processes (default 2)");
    app.add_flag("--crash-mid-allocation", crash,
                 "then crash a worker inside a writable heap and show that the pool carries on");
    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForHelp& e) {
        return app.exit(e);
    } catch (const CLI::ParseError& e) {
        return fail(e.what());
    }
    try {
        return run_vocabulary(files, workers, crash);
    } catch (const std::exception& e) {
        return fail(e.what());
    }
}

}  // namespace

int main(int argc, char** argv) {
    shmpool::init(argc, argv);  // in a worker process, this runs the worker and never returns
    try {
        return run(argc, argv);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "vocabulary: error: %s\n", e.what());
    }
    return 1;
}
