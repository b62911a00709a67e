// Running a chunk: records per item, or the packed fast path with error records after the
// results; a result that does not fit becomes its item's error, never a lost chunk.
#include "worker/chunk_runner.hpp"

#include <cxxabi.h>
#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <stdexcept>
#include <typeinfo>

#include "protocol/records.hpp"
#include "shmpool/framework/detail/task_entry.hpp"
#include "shmpool/shm/shared_memory.hpp"
#include "shmpool/shm/tracker.hpp"

namespace shmpool::detail {
namespace {

// A packed chunk (see Pool::map): results back to back, then an error record per item that
// threw. If the records fill the area, the chunk ends early and the parent requeues the items
// not reached.
void run_packed(WorkerSlot& slot, const Request& request, Reader& items, bool timeouts) {
    const std::uint32_t count = request.count;
    const char* in = items.view(std::size_t{count} * request.in_stride);
    char* out = reinterpret_cast<char*>(slot.response_area());
    PackedErrors errors(slot.response_area(), slot.capacity(), count, request.out_stride, 0);
    const TaskEntry entry = find_task_entry(request.task);
    const ItemMarks marks = slot.marks(timeouts);
    std::uint32_t i = 0;
    while (i < count) {
        std::string error;
        try {
            if (entry.packed == nullptr || entry.in_stride != request.in_stride ||
                entry.out_stride != request.out_stride)
                throw std::logic_error(fmt::format(
                    "no task named '{}' taking {} bytes and returning {} in this worker",
                    request.task, request.in_stride, request.out_stride));
            entry.packed(in, out, i, count, marks);
            break;
        } catch (...) {
            error = current_error_payload();
        }
        if (!errors.fits(error.size())) {
            if (i > 0) break;  // the parent requeues item i onwards
            // The chunk's first error always fits (half the area is kept for errors): cut short.
            const ErrorText text = read_error_payload(error);
            const std::uint32_t room = errors.room();
            const std::string type = text.type.substr(0, room / 4);
            const std::size_t left = room > type.size() + 32 ? room - type.size() - 32 : 0;
            error = error_payload(type, text.message.substr(0, left) + "...");
        }
        slot.note_response(errors.put(i, error), i + 1);
        ++i;
    }
}

// A request item: its arguments in place, or (too big for the area) the block that holds them.
// Throws std::length_error if the request is truncated.
struct ItemArguments {
    const char* bytes = nullptr;
    std::uint64_t length = 0;
    std::string_view block;  // empty: in place
};
ItemArguments read_item(Reader& items) {
    ItemArguments a;
    a.length = items.raw<std::uint64_t>();
    if ((a.length & item_in_block) == 0) {
        a.bytes = items.view(a.length);  // decoded in place, no copy
    } else {
        a.length &= ~item_in_block;
        a.block = read_block_ref(items).name;
    }
    return a;
}

// Maps the block of arguments too big for the area, for the item's run.
const char* open_arguments(const ItemArguments& a, SharedMemory& block) {
    if (a.block.empty()) return a.bytes;
    block = SharedMemory::attach(a.block, {.access = Access::read_only});
    if (block.size() < a.length)
        throw std::length_error(fmt::format("the arguments' block '{}' holds {} bytes, not {}",
                                            a.block, block.size(), a.length));
    block.prefault();  // read once, in one sweep: no page fault per page
    return reinterpret_cast<const char*>(block.data());
}

// A result too big for what is left of the response area: a block of its own, named in the
// record before it exists, so that the parent removes it if this worker dies before the item
// counts as finished (docs/design/slot-protocol.md).
void put_result_in_block(WorkerSlot& slot, RecordWriter& out, const ChunkRules& rules,
                         std::string_view result, std::uint32_t position) {
    static unsigned counter = 0;  // the worker is single-threaded
    // The parent's pid first: its blocks are told from other pools' (tests count them).
    const std::string name = fmt::format("shmpool_r_{}_{}_{}", rules.parent, ::getpid(), counter++);
    const std::uint32_t before = out.used();
    (void)out.put(RecordKind::value_in_block, block_ref(name, result.size()));  // room was kept
    slot.note_response(out.used(), position);
    bool created = false;
    try {
        SharedMemory block = SharedMemory::create(name, result.size());
        created = true;
        block.prefault();
        std::memcpy(block.data(), result.data(), result.size());
        transfer_ownership(name, rules.parent);
    } catch (...) {
        if (created) {
            try {
                SharedMemory::remove(name);
            } catch (...) {  // the error below says what went wrong
            }
        }
        out.rewind(before);
        slot.note_response(before, position);
        throw;
    }
}

void run_records(WorkerSlot& slot, const Request& request, Reader& items, const ChunkRules& rules) {
    const Invoker invoke = find_task(request.task);
    RecordWriter out(slot.response_area(), slot.capacity());
    const ItemMarks marks = slot.marks(rules.timeouts);
    std::string result;
    std::size_t expected = block_ref_bytes;  // the room the next result will likely need
    for (std::uint32_t i = 0; i < request.count; ++i) {
        // Room for a block ref whatever the item returns, and for a result like the last one
        // (so that a block is the exception); else the parent requeues the rest.
        if (i > 0 && out.room() < expected) break;
        const ItemArguments item = read_item(items);
        SharedMemory args_block;
        marks.start(i);
        result.clear();
        RecordKind kind = RecordKind::value;
        try {
            if (invoke == nullptr)
                throw std::logic_error(
                    fmt::format("no task named '{}' in this worker", request.task));
            Reader r(open_arguments(item, args_block), item.length);
            invoke(r, result);
            if (result.size() > rules.max_result_bytes)
                throw std::length_error(
                    fmt::format("a result of {} bytes is more than the pool's max_result_bytes "
                                "({})",
                                result.size(), rules.max_result_bytes));
            if (result.size() > out.room()) {
                put_result_in_block(slot, out, rules, result, i);
                kind = RecordKind::value_in_block;
            }
        } catch (...) {
            kind = RecordKind::error;
            result = current_error_payload();
        }
        args_block.close();
        if (kind != RecordKind::error)
            expected = std::max(block_ref_bytes,
                                std::min<std::size_t>(result.size(), slot.capacity() / 2));
        if (kind == RecordKind::error && !out.put(kind, result)) {
            // An error too long for the area: its message cut to fit (a ref's room is kept).
            const ErrorText text = read_error_payload(result);
            const std::size_t room = out.room();
            const std::string type = text.type.substr(0, room / 4);
            const std::size_t left = room > type.size() + 32 ? room - type.size() - 32 : 0;
            (void)out.put(kind, error_payload(type, text.message.substr(0, left) + "..."));
        } else if (kind == RecordKind::value) {
            (void)out.put(kind, result);  // it fits: checked above
        }
        slot.note_response(out.used(), i + 1);
    }
}

}  // namespace

std::string type_name_of(const std::type_info& type) {
    int status = 0;
    char* demangled = abi::__cxa_demangle(type.name(), nullptr, nullptr, &status);
    std::string out = status == 0 && demangled ? demangled : type.name();
    std::free(demangled);  // NOLINT(cppcoreguidelines-no-malloc): __cxa_demangle's contract
    return out;
}

std::string current_error_payload() {
    try {
        throw;
    } catch (const std::exception& e) {
        return error_payload(type_name_of(typeid(e)), e.what());
    } catch (...) {
        return error_payload("unknown exception", "a non-std::exception was thrown");
    }
}

void run_chunk(WorkerSlot& slot, const ChunkRules& rules, std::uint64_t started_ns) {
    const Request request = read_request(slot.request_area(), slot.request_bytes());
    Reader items = request.items;
    if (request.in_stride != 0) {
        run_packed(slot, request, items, rules.timeouts);
    } else {
        run_records(slot, request, items, rules);
    }
    // Publishes with the time spent, if the pool measures it (a clock read costs tens of ns
    // under a hypervisor).
    slot.publish(started_ns ? monotonic_ns() - started_ns : 0);
}

}  // namespace shmpool::detail
