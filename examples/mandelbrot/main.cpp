// mandelbrot: the flagship demo. Renders the Mandelbrot set into a shared image buffer with a
// pool of worker processes (bands of rows as tasks), survives workers that crash, writes a PNG.
#include <fmt/format.h>
#include <png.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <optional>
#include <shmpool/framework/pool.hpp>
#include <shmpool/framework/shared_array.hpp>
#include <string>
#include <system_error>
#include <vector>

namespace {

// Everything a band of rows needs, as one trivially copyable argument.
struct Scene {
    char image[64];     // SharedArray<std::uint8_t> of width × height × 3 (RGB)
    char attempts[64];  // SharedArray<std::int32_t>: attempts per task (at its first row)
    int width, height, max_iter;
    double crash_rate;
};

// The colour of one point: iterations to escape, smoothed, through a fixed palette. Only the
// coordinates matter, so every worker count and every retry gives the same bytes.
void shade(const Scene& s, int x, int y, std::uint8_t* rgb) {
    const double scale = 3.0 / s.width;
    const double cr = -2.25 + x * scale;
    const double ci = (y - s.height / 2.0) * scale;
    double zr = 0, zi = 0;
    int n = 0;
    for (; n < s.max_iter && zr * zr + zi * zi <= 16.0; ++n) {
        const double t = zr * zr - zi * zi + cr;
        zi = 2 * zr * zi + ci;
        zr = t;
    }
    if (n == s.max_iter) {
        rgb[0] = rgb[1] = rgb[2] = 0;
        return;
    }
    const double mu = n + 1 - std::log2(std::log2(zr * zr + zi * zi) / 2);  // smooth count
    const double t = std::fmod(mu / 64.0, 1.0);
    rgb[0] = static_cast<std::uint8_t>(9 * (1 - t) * t * t * t * 255);
    rgb[1] = static_cast<std::uint8_t>(15 * (1 - t) * (1 - t) * t * t * 255);
    rgb[2] = static_cast<std::uint8_t>(8.5 * (1 - t) * (1 - t) * (1 - t) * t * 255);
}

// Whether the task starting at row y crashes on its first attempt: a fixed pseudo-random choice.
bool doomed(const Scene& s, int y) {
    std::uint64_t h = 0x9E3779B97F4A7C15ull * static_cast<std::uint64_t>(y + 1);
    h ^= h >> 29;
    h *= 0xBF58476D1CE4E5B9ull;
    h ^= h >> 32;
    return static_cast<double>(h % 1'000'000) / 1e6 < s.crash_rate;
}

// The task: rows [begin, end) of the image.
void render_rows(Scene s, std::size_t begin, std::size_t end) {
    auto& image = shmpool::SharedArray<std::uint8_t>::cached(s.image);
    auto& attempts = shmpool::SharedArray<std::int32_t>::cached(s.attempts);
    // The task (not each row) is doomed or not; its attempts are counted at its first row.
    if (s.crash_rate > 0 && doomed(s, static_cast<int>(begin)) &&
        __atomic_add_fetch(&attempts[begin], 1, __ATOMIC_SEQ_CST) == 1) {
        std::raise(SIGSEGV);  // a real crash of this worker; the pool retries the task
    }
    for (auto y = static_cast<int>(begin); y < static_cast<int>(end); ++y) {
        for (int x = 0; x < s.width; ++x)
            shade(s, x, y, &image[(static_cast<std::size_t>(y) * s.width + x) * 3]);
    }
}
SHMPOOL_TASK(render_task, render_rows);

// 64-bit FNV-1a over the pixel bytes.
std::uint64_t fnv1a(const std::uint8_t* p, std::size_t n) {
    std::uint64_t h = 0xcbf29ce484222325ull;
    for (std::size_t i = 0; i < n; ++i)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

void write_png(const std::string& path, const std::uint8_t* rgb, int width, int height) {
    std::FILE* f = std::fopen(path.c_str(), "wb");
    if (f == nullptr)
        throw std::system_error(errno, std::generic_category(),
                                fmt::format("cannot write '{}'", path));
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
    png_infop info = png ? png_create_info_struct(png) : nullptr;
    if (png == nullptr || info == nullptr || setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        std::fclose(f);
        throw std::runtime_error(fmt::format("libpng failed writing '{}'", path));
    }
    png_init_io(png, f);
    png_set_IHDR(png, info, static_cast<png_uint_32>(width), static_cast<png_uint_32>(height), 8,
                 PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
                 PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (int y = 0; y < height; ++y)
        png_write_row(png, rgb + static_cast<std::size_t>(y) * width * 3);
    png_write_end(png, nullptr);
    png_destroy_write_struct(&png, &info);
    if (std::fclose(f) != 0) throw std::runtime_error(fmt::format("cannot write '{}'", path));
}

int run(int argc, char** argv) {
    int workers = 2, width = 1600, height = 1000, max_iter = 2000;
    double crash_rate = 0;
    std::string out = "mandelbrot.png";
    CLI::App app{"Renders the Mandelbrot set with a pool of worker processes"};
    app.add_option("--workers", workers, "worker processes (0: render in this process alone)")
        ->check(CLI::Range(0, 256));
    app.add_option("--width", width, "image width in pixels")->check(CLI::Range(1, 20000));
    app.add_option("--height", height, "image height in pixels")->check(CLI::Range(1, 20000));
    app.add_option("--max-iter", max_iter, "iterations before a point counts as inside")
        ->check(CLI::Range(1, 1000000));
    app.add_option("--out", out, "the PNG to write");
    app.add_option("--crash-rate", crash_rate,
                   "probability that a row's task segfaults on its first attempt")
        ->check(CLI::Range(0.0, 1.0));
    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForHelp& e) {
        return app.exit(e);
    } catch (const CLI::ParseError& e) {
        fmt::print(stderr, "mandelbrot: error: {}\n", e.what());
        return 1;
    }

    std::vector<std::string> created;  // this run's blocks: none may be left at the end
    std::size_t crashes = 0, retries = 0, respawns = 0;
    std::uint64_t checksum = 0;
    try {
        const std::size_t pixels = static_cast<std::size_t>(width) * height;
        auto image = shmpool::SharedArray<std::uint8_t>::create(pixels * 3);
        auto attempts =
            shmpool::SharedArray<std::int32_t>::create(static_cast<std::size_t>(height));
        created = {image.name(), attempts.name()};
        Scene scene{};
        std::snprintf(scene.image, sizeof scene.image, "%s", image.name().c_str());
        std::snprintf(scene.attempts, sizeof scene.attempts, "%s", attempts.name().c_str());
        scene.width = width;
        scene.height = height;
        scene.max_iter = max_iter;
        scene.crash_rate = crash_rate;
        if (workers == 0) {
            render_rows(scene, 0, static_cast<std::size_t>(height));  // the reference
        } else {
            // The blocks are named in shared_blocks: attached once per worker and, under
            // mpirun, copied to every node, each node's rows of the image coming back
            // (docs/cluster.md).
            shmpool::Pool pool(
                {.workers = static_cast<unsigned>(workers),
                 .max_retries = 2,
                 .shared_blocks = {image.name(), attempts.name()},
                 .progress_bar = true,  // drawn only on a terminal
                 .cluster = {
                     .writable_blocks = {{image.name(), static_cast<std::size_t>(width) * 3}}}});
            created.push_back(pool.control_block());
            std::string pids;
            for (pid_t p : pool.worker_pids())
                pids += fmt::format(" {}", p);
            fmt::print("rendering {}x{} with {} workers (pids{})\n", width, height, workers, pids);
            std::fflush(stdout);
            pool.for_each_index(render_task, static_cast<std::size_t>(height), 4, scene);
            auto stats = pool.stats();
            crashes = stats.crashes;
            retries = stats.retries;
            respawns = stats.respawns;
        }
        checksum = fnv1a(image.data(), image.size());
        write_png(out, image.data(), width, height);
        image.unlink();
        attempts.unlink();
    } catch (const std::exception& e) {
        for (const auto& name : created) {
            try {
                shmpool::SharedMemory::remove(name);
            } catch (const std::exception&) {  // already gone
            }
        }
        fmt::print(stderr, "mandelbrot: error: {}\n", e.what());
        return 1;
    }
    std::size_t leaked = 0;
    for (const auto& name : created)
        leaked += std::filesystem::exists("/dev/shm/" + name) ? 1 : 0;
    fmt::print("wrote {}\n", std::filesystem::absolute(out).string());
    fmt::print("respawns: {}\n", respawns);
    fmt::print("checksum: {:016x} crashes: {} retries: {} leaked-segments: {}\n", checksum, crashes,
               retries, leaked);
    return leaked == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
    shmpool::init(argc, argv);  // in a worker process this runs the worker and never returns
    try {
        return run(argc, argv);
    } catch (const std::exception& e) {  // what run() does not handle itself: a bug, or no memory
        std::fprintf(stderr, "mandelbrot: error: %s\n", e.what());
    } catch (...) {
        std::fprintf(stderr, "mandelbrot: error: unknown exception\n");
    }
    return 1;
}
