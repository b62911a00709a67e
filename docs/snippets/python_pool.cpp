// docs/python.md's worker program: C++ tasks that Python runs through shmpool.Pool.
// [python-pool-workers]
#include <algorithm>
#include <shmpool/framework/pool.hpp>
#include <shmpool/framework/shared_array.hpp>
#include <string>
#include <vector>

double mean(const std::vector<double>& values) {  // a list from Python, by value
    double sum = 0;
    for (double v : values)
        sum += v;
    return values.empty() ? 0 : sum / values.size();
}
SHMPOOL_TASK(mean_task, mean);

// A numpy array, by name: rows [begin, end) of a SharedArray<float>, normalised in place.
void normalise(const std::string& array, std::size_t width, std::size_t begin, std::size_t end) {
    auto& pixels = shmpool::SharedArray<float>::cached(array);
    for (std::size_t row = begin; row < end; ++row) {
        float* p = &pixels[row * width];
        float top = 0;
        for (std::size_t x = 0; x < width; ++x)
            top = std::max(top, p[x]);
        for (std::size_t x = 0; x < width && top > 0; ++x)
            p[x] /= top;
    }
}
SHMPOOL_TASK(normalise_task, normalise);

int main(int argc, char** argv) {
    shmpool::init(argc, argv);  // a worker, or asked to describe its tasks: never returns
    return 0;
}
// [python-pool-workers]
