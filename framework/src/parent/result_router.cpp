// ResultRouter: runs of results to a sink in one call, errors one by one, never a decoding
// failure that escapes (it fails its item).
#include "parent/result_router.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "protocol/records.hpp"
#include "shmpool/framework/errors.hpp"
#include "shmpool/shm/shared_memory.hpp"

namespace shmpool::detail {

std::exception_ptr ResultRouter::task_error(const std::string& task, std::string_view payload) {
    ErrorText e = read_error_payload(payload);
    return std::make_exception_ptr(TaskError(task, std::move(e.type), std::move(e.message)));
}

void ResultRouter::deliver(const SlotsLocked& /*locked*/, const Chunk& chunk,
                           const ResponseView& response, std::uint32_t from, std::uint32_t to) {
    if (from >= to) return;
    // Progress first: whoever sees a result also sees it counted, and the final report is
    // queued before the job's caller can return.
    note_progress(*chunk.job, to - from);
    if (chunk.job->items.packed()) {
        deliver_packed(chunk, response, from, to);
    } else {
        deliver_records(chunk, response, from, to);
    }
}

void ResultRouter::fail(const SlotsLocked& /*locked*/, const Chunk& chunk, std::size_t pos,
                        std::exception_ptr error) {
    ++counters_.failures;
    note_progress(*chunk.job, 1);
    chunk.job->sink->set_error(std::move(error), chunk.begin + pos);
}

void ResultRouter::fail_all(const SlotsLocked& locked, const Chunk& chunk,
                            const std::exception_ptr& error) {
    for (std::size_t pos = 0; pos < chunk.size(); ++pos)
        fail(locked, chunk, pos, error);
}

namespace {

// Workers name their result blocks after this process (worker/chunk_runner.cpp): a record naming
// anything else is corrupt, and its block is neither opened nor removed.
std::string result_block_prefix() {
    return fmt::format("shmpool_r_{}_", ::getpid());  // not cached: a pool may live in a fork
}

std::optional<BlockRef> result_block(std::string_view record) noexcept {
    try {
        Reader r(record.data(), record.size());
        BlockRef ref = read_block_ref(r);
        if (!ref.name.starts_with(result_block_prefix())) return std::nullopt;
        return ref;
    } catch (...) {
        return std::nullopt;
    }
}

void remove_quietly(std::string_view name) noexcept {
    try {
        SharedMemory::remove(name);
    } catch (...) {  // gone already
    }
}

}  // namespace

void ResultRouter::discard_blocks(const ResponseView& response, std::uint32_t from) noexcept {
    if (!response.local) return;
    RecordReader reader(response.area, response.bytes);
    RecordReader::Record record;
    for (std::uint32_t i = 0; reader.next(record); ++i) {
        if (i < from || record.kind != RecordKind::value_in_block) continue;
        if (const auto ref = result_block(record.bytes)) remove_quietly(ref->name);
    }
}

void ResultRouter::deliver_in_block(const Chunk& chunk, std::string_view record,
                                    const ResponseView& response, std::size_t index) {
    ResultSink& sink = *chunk.job->sink;
    const auto ref = response.local ? result_block(record) : std::nullopt;
    try {
        if (!ref)
            throw TaskError(chunk.job->task, "shmpool::CorruptedBlock",
                            "the worker's record of a result in a block does not name one");
        // Removed before anything is delivered (whoever sees the result sees the block gone),
        // and whatever happens: the parent owns it now, and nobody else will open it. The
        // mapping outlives the name.
        SharedMemory block;
        try {
            block = SharedMemory::attach(ref->name, {.access = Access::read_only});
        } catch (...) {
            remove_quietly(ref->name);
            throw;
        }
        remove_quietly(ref->name);
        if (block.size() < ref->size)
            throw TaskError(chunk.job->task, "shmpool::CorruptedBlock",
                            fmt::format("the result's block '{}' holds {} bytes, not {}", ref->name,
                                        block.size(), ref->size));
        block.prefault();
        Reader r(reinterpret_cast<const char*>(block.data()), ref->size);
        sink.set_value(r, index);
        ++counters_.results;
    } catch (...) {
        ++counters_.failures;
        sink.set_error(std::current_exception(), index);
    }
}

void ResultRouter::deliver_records(const Chunk& chunk, const ResponseView& response,
                                   std::uint32_t from, std::uint32_t to) {
    Job& job = *chunk.job;
    ResultSink& sink = *job.sink;
    RecordReader reader(response.area, response.bytes);
    // Runs of successful results go to the sink in one call; failures one by one.
    std::vector<std::pair<const char*, std::uint32_t>> run;
    run.reserve(to - from);
    std::size_t run_first = 0;
    auto flush = [&] {
        if (run.empty()) return;
        counters_.results += run.size();
        try {
            sink.set_values(run.data(), run.size(), run_first);
        } catch (...) {
            // A result that does not decode fails its item, never the pool. The run is settled
            // again one by one (set_values settles nothing when it throws).
            for (std::size_t k = 0; k < run.size(); ++k) {
                try {
                    Reader r(run[k].first, run[k].second);
                    sink.set_value(r, run_first + k);
                } catch (...) {
                    --counters_.results;
                    ++counters_.failures;
                    sink.set_error(std::current_exception(), run_first + k);
                }
            }
        }
        run.clear();
    };
    RecordReader::Record record;
    for (std::uint32_t i = 0; i < to; ++i) {
        const std::size_t index = chunk.begin + i;
        if (!reader.next(record)) {
            // The worker said it finished more than it wrote: nothing to trust past here.
            flush();
            for (std::uint32_t k = std::max(i, from); k < to; ++k) {
                ++counters_.failures;
                sink.set_error(
                    std::make_exception_ptr(TaskError(job.task, "shmpool::CorruptedBlock",
                                                      "the worker's result record is truncated")),
                    chunk.begin + k);
            }
            return;
        }
        if (i < from) continue;
        if (record.kind == RecordKind::value) {
            if (run.empty()) run_first = index;
            run.emplace_back(record.bytes.data(), static_cast<std::uint32_t>(record.bytes.size()));
            continue;
        }
        flush();
        if (record.kind == RecordKind::value_in_block) {
            deliver_in_block(chunk, record.bytes, response, index);
            continue;
        }
        ++counters_.failures;
        sink.set_error(task_error(job.task, record.bytes), index);
    }
    flush();
}

void ResultRouter::deliver_packed(const Chunk& chunk, const ResponseView& response,
                                  std::uint32_t from, std::uint32_t to) {
    Job& job = *chunk.job;
    ResultSink& sink = *job.sink;
    const std::uint32_t stride = job.items.out_stride;
    const auto* results = reinterpret_cast<const char*>(response.area);
    // The error records are read in place (the area is the worker's, not written meanwhile).
    PackedErrors errors(const_cast<std::byte*>(response.area), response.capacity,
                        static_cast<std::uint32_t>(chunk.size()), stride, response.bytes);
    auto settle_run = [&](std::uint32_t b, std::uint32_t e) {
        if (b >= e) return;
        counters_.results += e - b;
        try {
            sink.set_packed(results + std::size_t{b} * stride, stride, e - b, chunk.begin + b);
        } catch (...) {
            counters_.results -= e - b;
            counters_.failures += e - b;
            for (std::uint32_t k = b; k < e; ++k)
                sink.set_error(std::current_exception(), chunk.begin + k);
        }
    };
    std::uint32_t next = from;
    PackedErrors::Error error;
    while (errors.next(error)) {
        if (error.position >= to) break;
        if (error.position < next) continue;
        settle_run(next, error.position);
        ++counters_.failures;
        sink.set_error(task_error(job.task, error.payload), chunk.begin + error.position);
        next = error.position + 1;
    }
    settle_run(next, to);
}

// At most every 100 ms, and at the job's end.
void ResultRouter::note_progress(Job& job, std::size_t n) {
    if (!job.reports_progress) return;
    job.settled += n;
    const auto now = std::chrono::steady_clock::now();
    const bool final = job.settled >= job.items.size();
    if (!final && now - job.last_report < std::chrono::milliseconds(100)) return;
    job.last_report = now;
    Progress p;
    p.task = job.task;
    p.done = job.settled;
    p.total = job.items.size();
    p.elapsed_seconds = std::chrono::duration<double>(now - job.started).count();
    p.rate = p.elapsed_seconds > 0 ? static_cast<double>(p.done) / p.elapsed_seconds : 0;
    p.eta_seconds = p.rate > 0 ? static_cast<double>(p.total - p.done) / p.rate : 0;
    callbacks_.push(std::move(p), job.sink, final);
}

}  // namespace shmpool::detail
