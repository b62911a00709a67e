// Running a chunk: records per item, or the packed fast path with error records after the
// results; a result that does not fit becomes its item's error, never a lost chunk.
#include "worker/chunk_runner.hpp"

#include <cxxabi.h>
#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <stdexcept>
#include <typeinfo>

#include "protocol/records.hpp"
#include "shmpool/framework/detail/task_entry.hpp"

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

void run_records(WorkerSlot& slot, const Request& request, Reader& items, bool timeouts) {
    const Invoker invoke = find_task(request.task);
    RecordWriter out(slot.response_area(), slot.capacity());
    const ItemMarks marks = slot.marks(timeouts);
    std::string result;
    for (std::uint32_t i = 0; i < request.count; ++i) {
        const auto length = items.raw<std::uint64_t>();
        const char* args = items.view(length);  // decoded in place, no copy
        marks.start(i);
        result.clear();
        RecordKind kind = RecordKind::value;
        try {
            if (invoke == nullptr)
                throw std::logic_error(
                    fmt::format("no task named '{}' in this worker", request.task));
            Reader r(args, length);
            invoke(r, result);
        } catch (...) {
            kind = RecordKind::error;
            result = current_error_payload();
        }
        if (!out.put(kind, result)) {
            const std::string too_big = error_payload(
                "std::length_error",
                fmt::format("the result of {} bytes does not fit the pool's slot_bytes ({})",
                            result.size(), slot.capacity()));
            if (!out.put(RecordKind::error, too_big)) std::abort();  // cannot even report
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

void run_chunk(WorkerSlot& slot, bool timeouts, std::uint64_t started_ns) {
    const Request request = read_request(slot.request_area(), slot.request_bytes());
    Reader items = request.items;
    if (request.in_stride != 0) {
        run_packed(slot, request, items, timeouts);
    } else {
        run_records(slot, request, items, timeouts);
    }
    // Publishes with the time spent, if the pool measures it (a clock read costs tens of ns
    // under a hypervisor).
    slot.publish(started_ns ? monotonic_ns() - started_ns : 0);
}

}  // namespace shmpool::detail
