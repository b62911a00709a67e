# Entry points of the project: `make demo`, `make test`, `make bench` (see README.md).
BUILD      ?= build
ASAN_BUILD ?= build-asan
RELEASE_BUILD ?= build-release
JOBS       ?= $(shell nproc)
CMAKE_ARGS ?=

.PHONY: all deps configure build demo python test test-main test-release test-asan bench format tidy clean

all: build

deps:
	@scripts/install-deps.sh

configure: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_ARGS)

build: configure
	cmake --build $(BUILD) -j $(JOBS)

# The flagship: the Mandelbrot set rendered by worker processes, 1 % of whose tasks crash. Only
# what it needs is built (the libraries, the tracker, the example): half a minute from scratch.
demo: configure
	cmake --build $(BUILD) -j $(JOBS) --target mandelbrot shmpool-tracker
	$(BUILD)/bin/mandelbrot --workers 2 --crash-rate 0.01 --out $(BUILD)/mandelbrot.png

# The Python package, into $(BUILD)/python (PYTHONPATH=$(BUILD)/python), and its tests:
# shmpool's own, then CPython's own shared-memory tests against it (docs/python.md).
python: configure
	cmake --build $(BUILD) -j $(JOBS) --target shmpool_python shmpool-tracker
	ctest --test-dir $(BUILD) -L python --output-on-failure

# The whole suite, warnings as errors: the normal build (RelWithDebInfo), then a Release build
# (-O3 finds warnings -O2 does not), then a Debug build under AddressSanitizer + UBSan.
test: test-main test-release test-asan

test-main: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSHMPOOL_WARNINGS_AS_ERRORS=ON $(CMAKE_ARGS)
	cmake --build $(BUILD) -j $(JOBS)
	ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS)

test-release: deps
	cmake -S . -B $(RELEASE_BUILD) -DCMAKE_BUILD_TYPE=Release -DSHMPOOL_WARNINGS_AS_ERRORS=ON $(CMAKE_ARGS)
	cmake --build $(RELEASE_BUILD) -j $(JOBS)
	ctest --test-dir $(RELEASE_BUILD) --output-on-failure -j $(JOBS)

test-asan: deps
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DSHMPOOL_SANITIZE=ON -DSHMPOOL_WARNINGS_AS_ERRORS=ON $(CMAKE_ARGS)
	cmake --build $(ASAN_BUILD) -j $(JOBS)
	ctest --test-dir $(ASAN_BUILD) --output-on-failure -j $(JOBS)

# Only what it runs is built: the benchmark programs (the cluster's when MPI is there) and the
# tracker.
bench: configure
	cmake --build $(BUILD) -j $(JOBS) --target shmpool_bench_shm shmpool_bench_pool shmpool-tracker \
		$$(cmake --build $(BUILD) --target help | grep -q shmpool_bench_cluster \
		   && echo shmpool_bench_cluster shmpool_bench_mpi_floor)
	python3 bench/run_benchmarks.py --build $(BUILD)

format:
	find shm framework tools examples tests bench python -name '*.[ch]pp' 2>/dev/null | xargs clang-format -i

tidy: build
	find shm framework cluster tools examples -name '*.cpp' 2>/dev/null | xargs clang-tidy -p $(BUILD) --quiet

clean:
	rm -rf $(BUILD) $(RELEASE_BUILD) $(ASAN_BUILD)
