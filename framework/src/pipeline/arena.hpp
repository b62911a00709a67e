// The pipeline's token arena: one shared block holding every live item, two buffers per slot.
//
// Stage k reads a slot's current buffer and writes the other one, so an attempt that dies
// halfway leaves the input intact for the retry. The parent alone moves a slot between stages
// and flips its current buffer when a stage completes it; a worker only touches the slots of the
// steps it was handed.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <system_error>
#include <type_traits>

#include "shmpool/framework/task.hpp"
#include "shmpool/shm/shared_memory.hpp"

namespace shmpool::detail {

constexpr char arena_magic[8] = {'S', 'H', 'M', 'P', 'P', 'I', 'P', 'E'};
constexpr std::size_t max_pipeline_stages = 16;
constexpr std::size_t stage_task_chars = 96;
constexpr char pipeline_step_name[] = "shmpool.pipeline_step";
// PipelineOptions::max_tokens = 0: as many tokens as this many bytes of buffers hold.
constexpr std::size_t default_token_budget = std::size_t{4} << 20;

struct ArenaStage {
    char task[stage_task_chars];
    std::uint32_t source;  // 1: a worker source, called with the sequence number
};

struct alignas(64) ArenaHeader {
    char magic[8];
    std::uint32_t tokens;
    std::uint32_t token_bytes;
    std::uint32_t stages;
    std::int32_t parent_pid;  // big items' blocks are handed to this process
    ArenaStage stage[max_pipeline_stages];
};

enum BufferFlags : std::uint32_t { buffer_in_block = 1, buffer_end = 2 };

// What a buffer holds: `bytes` in place, or in the block named `block` (buffer_in_block); a
// worker source's end of stream (buffer_end).
struct BufferMeta {
    std::uint32_t bytes;
    std::uint32_t flags;
    char block[56];
};

static_assert(std::is_standard_layout_v<ArenaHeader> && std::is_standard_layout_v<BufferMeta>,
              "shared between processes");

// One step: run stage `stage` on slot `token`, reading buffer `in_buf`.
struct StepCall {
    std::uint32_t token;
    std::uint16_t stage;
    std::uint16_t in_buf;
    std::uint64_t sequence;
};
struct StepResult {
    std::uint32_t bytes;
    std::uint32_t flags;
};

constexpr std::size_t arena_size(std::size_t tokens, std::size_t token_bytes) {
    return sizeof(ArenaHeader) + tokens * 2 * sizeof(BufferMeta) + tokens * 2 * token_bytes;
}

struct ArenaView {
    std::byte* base = nullptr;
    ArenaHeader* header() const { return reinterpret_cast<ArenaHeader*>(base); }
    BufferMeta* meta(std::uint32_t token, unsigned buf) const {
        return reinterpret_cast<BufferMeta*>(base + sizeof(ArenaHeader)) + std::size_t{token} * 2 +
               buf;
    }
    char* data(std::uint32_t token, unsigned buf) const {
        const ArenaHeader* h = header();
        return reinterpret_cast<char*>(base + sizeof(ArenaHeader) +
                                       std::size_t{h->tokens} * 2 * sizeof(BufferMeta)) +
               (std::size_t{token} * 2 + buf) * h->token_bytes;
    }
};

inline std::string block_of(const BufferMeta& m) {
    return std::string(m.block, strnlen(m.block, sizeof m.block));
}

/// Empties a buffer, removing the block of a big item it names (one an attempt that died may
/// have left, or one the next stage has read).
inline void clear_buffer(BufferMeta* m) {
    if ((m->flags & buffer_in_block) != 0 && m->block[0] != '\0') {
        try {
            SharedMemory::remove(block_of(*m));
        } catch (const std::system_error&) {  // never created, or already gone
        }
    }
    m->bytes = 0;
    m->flags = 0;
    m->block[0] = '\0';
}

/// An item's bytes where they are: in the arena, or in its own block (mapped while this lives).
struct ItemBytes {
    std::optional<SharedMemory> block;
    const char* data = nullptr;
    std::size_t size = 0;
};
inline ItemBytes read_buffer(const ArenaView& a, std::uint32_t token, unsigned buf) {
    const BufferMeta* m = a.meta(token, buf);
    ItemBytes item;
    item.size = m->bytes;
    item.data = a.data(token, buf);
    if ((m->flags & buffer_in_block) != 0) {
        item.block.emplace(SharedMemory::attach(block_of(*m), {.access = Access::read_only}));
        item.data = reinterpret_cast<const char*>(item.block->data());
    }
    return item;
}

/// The step every pipeline stage worker runs (pipeline_step.cpp).
StepResult pipeline_step(StepCall call);
/// Registers it (worker_main calls this, so that any worker program has it).
void register_pipeline_step();

}  // namespace shmpool::detail
