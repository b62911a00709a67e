// The worker side of a pipeline stage: read a slot's item, run the stage's task, write the next.
#include <fmt/format.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <system_error>

#include "pipeline/arena.hpp"
#include "shmpool/framework/pool.hpp"
#include "shmpool/shm/shared_memory.hpp"
#include "shmpool/shm/tracker.hpp"

namespace shmpool::detail {
namespace {

ArenaView arena() {
    static ArenaView view = [] {
        const char* name = std::getenv("SHMPOOL_PIPELINE");  // NOLINT(concurrency-mt-unsafe)
        if (name == nullptr) throw std::logic_error("not a pipeline stage worker");
        ArenaView v{shared_block(name).data()};
        if (std::memcmp(v.header()->magic, arena_magic, 8) != 0)
            throw std::runtime_error(fmt::format("block '{}' is not a pipeline arena", name));
        return v;
    }();
    return view;
}

}  // namespace

StepResult pipeline_step(StepCall call) {
    ArenaView a = arena();
    ArenaHeader* h = a.header();
    if (call.token >= h->tokens || call.stage >= h->stages || call.in_buf > 1)
        throw std::out_of_range("pipeline step out of the arena");
    ArenaStage& stage = h->stage[call.stage];
    static Invoker invokers[max_pipeline_stages] = {};  // a worker serves one pipeline for life
    Invoker& invoke = invokers[call.stage];
    if (invoke == nullptr) {
        std::string task(stage.task, strnlen(stage.task, sizeof stage.task));
        invoke = find_task(task);
        if (invoke == nullptr)
            throw std::logic_error(fmt::format("no task named '{}' in this worker", task));
    }

    // The input: the sequence number for a source, else the slot's current buffer.
    ItemBytes input;
    if (stage.source) {
        input.data = reinterpret_cast<const char*>(&call.sequence);
        input.size = sizeof call.sequence;
    } else {
        input = read_buffer(a, call.token, call.in_buf);
    }
    const unsigned out_buf = 1 - call.in_buf;
    BufferMeta* out_meta = a.meta(call.token, out_buf);
    clear_buffer(out_meta);  // a block left by an earlier attempt that died goes

    static std::string out;  // reused: no allocation per item
    out.clear();
    Reader reader(input.data, input.size);
    invoke(reader, out);  // its time is counted by the pool, per chunk
    input.block.reset();

    std::string_view bytes = out;
    if (stage.source) {  // std::optional<T>: a flag byte, then the item
        if (bytes.empty() || bytes[0] == 0) {
            out_meta->flags = buffer_end;
            return {0, buffer_end};
        }
        bytes.remove_prefix(1);
    }
    if (bytes.size() <= h->token_bytes) {
        std::memcpy(a.data(call.token, out_buf), bytes.data(), bytes.size());
        out_meta->bytes = static_cast<std::uint32_t>(bytes.size());
        return {out_meta->bytes, 0};
    }
    // Too big for the slot: a block of its own, named here first so that a retry can remove it
    // if this worker dies before the step completes, then handed to the parent, which removes it
    // once the next stage has read it.
    if (bytes.size() > UINT32_MAX)
        throw std::length_error(fmt::format("pipeline item of {} bytes", bytes.size()));
    static std::atomic<unsigned> counter{0};
    std::string name = fmt::format("shmpool_pl_{}_{}", ::getpid(), counter.fetch_add(1));
    std::memcpy(out_meta->block, name.c_str(), name.size() + 1);
    out_meta->bytes = static_cast<std::uint32_t>(bytes.size());
    out_meta->flags = buffer_in_block;
    SharedMemory block = SharedMemory::create(name, bytes.size());
    std::memcpy(block.data(), bytes.data(), bytes.size());
    transfer_ownership(name, h->parent_pid);
    return {out_meta->bytes, buffer_in_block};
}

void register_pipeline_step() {
    register_task(pipeline_step_name, task_entry<&pipeline_step>());
}

}  // namespace shmpool::detail
