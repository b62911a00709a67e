// The worker program of tests/python/test_pool.py: tasks of every wire type, and tasks that
// throw, crash or wait at a gate.
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <optional>
#include <shmpool/framework/pool.hpp>
#include <shmpool/framework/shared_array.hpp>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

namespace {

std::int32_t square(std::int32_t x) {
    return x * x;
}
SHMPOOL_TASK(square_task, square);

double add(std::int64_t a, double b) {
    return static_cast<double>(a) + b;
}
SHMPOOL_TASK(add_task, add);

std::string shout(const std::string& text) {
    return text + "!";
}
SHMPOOL_TASK(shout_task, shout);

double total(const std::vector<double>& values) {
    double sum = 0;
    for (const double v : values)
        sum += v;
    return sum;
}
SHMPOOL_TASK(total_task, total);

std::optional<std::int32_t> halve(std::optional<std::int32_t> x) {
    if (!x || *x % 2 != 0) return std::nullopt;
    return *x / 2;
}
SHMPOOL_TASK(halve_task, halve);

std::pair<std::string, std::int32_t> swap(const std::pair<std::int32_t, std::string>& p) {
    return {p.second, p.first};
}
SHMPOOL_TASK(swap_task, swap);

std::vector<std::string> split(const std::string& text, char separator) {
    std::vector<std::string> out(1);
    for (const char c : text) {
        if (c == separator)
            out.emplace_back();
        else
            out.back() += c;
    }
    return out;
}
SHMPOOL_TASK(split_task, split);

std::int32_t checked(std::int32_t x) {
    if (x < 0) throw std::invalid_argument("negative: " + std::to_string(x));
    return x;
}
SHMPOOL_TASK(checked_task, checked);

// Crashes the worker (a real SIGSEGV) on item value 13.
std::int32_t fragile(std::int32_t x) {
    if (x == 13) std::raise(SIGSEGV);
    return x;
}
SHMPOOL_TASK(fragile_task, fragile);

std::int32_t worker_pid(std::int32_t /*unused*/) {
    return static_cast<std::int32_t>(::getpid());
}
SHMPOOL_TASK(pid_task, worker_pid);

// The gate: block `gate` holds two int32s, [0] the tasks that arrived, [1] the release flag.
// A task raises [0], then waits until the test sets [1] (bounded: a test that never releases
// fails rather than hangs).
std::int32_t wait_at_gate(const std::string& gate, std::int32_t x) {
    auto& flags = shmpool::SharedArray<std::int32_t>::cached(gate);
    std::atomic_ref<std::int32_t>(flags[0]).fetch_add(1);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
    while (std::atomic_ref<std::int32_t>(flags[1]).load() == 0) {
        if (std::chrono::steady_clock::now() > deadline)
            throw std::runtime_error("the gate was never opened");
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return x;
}
SHMPOOL_TASK(gate_task, wait_at_gate);

// Multiplies values [begin, end) of SharedArray<double> `name` by `factor`, in place.
void scale(const std::string& name, double factor, std::size_t begin, std::size_t end) {
    auto& values = shmpool::SharedArray<double>::cached(name);
    if (end > values.size()) throw std::out_of_range("range past the array's end");
    for (std::size_t i = begin; i < end; ++i)
        values[i] *= factor;
}
SHMPOOL_TASK(scale_task, scale);

// A vector of optionals travels as the optionals' bytes (vec<raw<8>>): Python must be told so.
std::size_t count_set(const std::vector<std::optional<std::int32_t>>& values) {
    std::size_t n = 0;
    for (const auto& v : values)
        n += v ? 1 : 0;
    return n;
}
SHMPOOL_TASK(count_set_task, count_set);

struct Custom {
    std::string text;
};

}  // namespace

// A type with a Codec of its own: Python cannot encode it, and says so.
template <>
struct shmpool::Codec<Custom> {
    static void encode(Writer& w, const Custom& c) { Codec<std::string>::encode(w, c.text); }
    static Custom decode(Reader& r) { return {Codec<std::string>::decode(r)}; }
};

namespace {
std::int32_t custom_length(const Custom& c) {
    return static_cast<std::int32_t>(c.text.size());
}
SHMPOOL_TASK(custom_task, custom_length);
}  // namespace

int main(int argc, char** argv) {
    shmpool::init(argc, argv);
    return 0;  // a worker program only
}
