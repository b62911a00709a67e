// Remote pipeline steps: the node runs the stage's task on bytes; rank 0 owns the arena.
#include "remote_steps.hpp"

#include <fmt/format.h>

#include <cstring>
#include <stdexcept>

#include "protocol/records.hpp"
#include "shmpool/framework/codec.hpp"
#include "shmpool/framework/task.hpp"
#include "shmpool/shm/shared_memory.hpp"

namespace shmpool::cluster {
namespace {

// On the node's worker: the stage's task on the item's bytes (or, for a source, its sequence).
std::string remote_step(const std::string& task, std::uint8_t source, std::uint64_t sequence,
                        const std::string& input) {
    const detail::Invoker invoke = detail::find_task(task);
    if (invoke == nullptr)
        throw std::logic_error(fmt::format("no task named '{}' in this worker", task));
    std::string out;
    if (source != 0) {
        Reader r(reinterpret_cast<const char*>(&sequence), sizeof sequence);
        invoke(r, out);
    } else {
        Reader r(input.data(), input.size());
        invoke(r, out);
    }
    return out;
}

detail::StepCall step_at(const detail::Chunk& chunk, std::size_t k) {
    detail::StepCall call{};
    std::memcpy(&call, chunk.job->items.args.data() + (chunk.begin + k) * sizeof call, sizeof call);
    return call;
}

// The step's output into the token's other buffer (a block of its own when too big), as
// pipeline_step() writes it on this machine.
detail::StepResult write_output(const detail::ArenaView& arena, const detail::StepCall& call,
                                std::string_view bytes) {
    const detail::ArenaHeader* h = arena.header();
    const unsigned out = 1 - call.in_buf;
    detail::BufferMeta* meta = arena.meta(call.token, out);
    detail::clear_buffer(meta);
    if (h->stage[call.stage].source) {  // std::optional<T>: a flag byte, then the item
        if (bytes.empty() || bytes[0] == 0) {
            meta->flags = detail::buffer_end;
            return {0, detail::buffer_end};
        }
        bytes.remove_prefix(1);
    }
    if (bytes.size() > UINT32_MAX)
        throw std::length_error(fmt::format("pipeline item of {} bytes", bytes.size()));
    meta->bytes = static_cast<std::uint32_t>(bytes.size());
    if (bytes.size() <= h->token_bytes) {
        std::memcpy(arena.data(call.token, out), bytes.data(), bytes.size());
        return {meta->bytes, 0};
    }
    SharedMemory block = SharedMemory::create(bytes.size());  // owned here, as the arena is
    std::memcpy(block.data(), bytes.data(), bytes.size());
    std::memcpy(meta->block, block.name().c_str(), block.name().size() + 1);
    meta->flags = detail::buffer_in_block;
    return {meta->bytes, detail::buffer_in_block};
}

}  // namespace

void register_remote_step() {
    detail::register_task(remote_step_name, detail::task_entry<&remote_step>());
}

bool is_pipeline_step(const detail::Chunk& chunk) {
    return chunk.job->task == detail::pipeline_step_name;
}

void remote_step_items(const detail::Chunk& chunk, const detail::ArenaView& arena,
                       ChunkRequest& request) {
    request.task = remote_step_name;
    request.in_stride = request.out_stride = 0;
    request.items.clear();
    const detail::ArenaHeader* h = arena.header();
    for (std::size_t k = 0; k < chunk.size(); ++k) {
        const detail::StepCall call = step_at(chunk, k);
        const detail::ArenaStage& stage = h->stage[call.stage];
        std::string input;
        if (!stage.source) {
            detail::ItemBytes item = detail::read_buffer(arena, call.token, call.in_buf);
            input.assign(item.data, item.size);
        }
        std::string args;
        Task<&remote_step>::append_args(
            args, std::string(stage.task, strnlen(stage.task, sizeof stage.task)),
            static_cast<std::uint8_t>(stage.source), call.sequence, input);
        const auto length = static_cast<std::uint64_t>(args.size());
        request.items.append(reinterpret_cast<const char*>(&length), 8);
        request.items += args;
    }
}

void apply_remote_steps(const detail::Chunk& chunk, const detail::ArenaView& arena,
                        ChunkResult& r) {
    std::vector<bool> failed(chunk.size(), false);
    for (const SpecialError& s : r.specials)
        if (s.position < failed.size()) failed[s.position] = true;
    std::string results(chunk.size() * sizeof(detail::StepResult), '\0');
    detail::RecordReader records(reinterpret_cast<const std::byte*>(r.response.data()),
                                 static_cast<std::uint32_t>(r.response.size()));
    detail::RecordReader::Record record;
    for (std::size_t k = 0; k < chunk.size() && records.next(record); ++k) {
        if (failed[k]) continue;
        detail::StepResult step{};
        try {
            Reader bytes(record.bytes.data(), record.bytes.size());
            const std::string output = Codec<std::string>::decode(bytes);
            step = write_output(arena, step_at(chunk, k), output);
        } catch (const std::exception& e) {
            r.specials.push_back(
                {static_cast<std::uint32_t>(k), {RemoteError::Kind::other, {}, {}, e.what()}});
            continue;
        }
        std::memcpy(results.data() + k * sizeof step, &step, sizeof step);
    }
    r.response = std::move(results);  // the steps' packed results, as a local chunk gives them
}

}  // namespace shmpool::cluster
