# Entry points of the project: `make demo`, `make test`, `make bench` (see README.md).
BUILD      ?= build
ASAN_BUILD ?= build-asan
JOBS       ?= $(shell nproc)
CMAKE_ARGS ?=

.PHONY: all deps configure build demo test test-main test-asan bench format tidy clean

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

# The whole suite: the normal build, then the same suite under AddressSanitizer + UBSan.
test: test-main test-asan

test-main: build
	ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS)

test-asan: deps
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DSHMPOOL_SANITIZE=ON $(CMAKE_ARGS)
	cmake --build $(ASAN_BUILD) -j $(JOBS)
	ctest --test-dir $(ASAN_BUILD) --output-on-failure -j $(JOBS)

bench: build
	python3 bench/run_benchmarks.py --build $(BUILD)

format:
	find shm framework tools examples tests bench -name '*.[ch]pp' 2>/dev/null | xargs clang-format -i

tidy: build
	find shm framework tools examples -name '*.cpp' 2>/dev/null | xargs clang-tidy -p $(BUILD) --quiet

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)
