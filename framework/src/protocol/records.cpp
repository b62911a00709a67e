// The slot areas' byte formats: writers that never overrun, readers that never trust a length.
#include "protocol/records.hpp"

#include <algorithm>
#include <cstring>
#include <stdexcept>

namespace shmpool::detail {

bool RequestWriter::begin(std::string_view task, std::uint32_t in_stride,
                          std::uint32_t out_stride) noexcept {
    if (capacity_ < 8 + task.size() + 12) return false;
    const auto name_length = static_cast<std::uint64_t>(task.size());
    put(&name_length, 8);
    put(task.data(), task.size());
    count_at_ = used_;
    used_ += 4;
    put(&in_stride, 4);  // 0: variable-size items, each after its length
    put(&out_stride, 4);
    return true;
}

bool RequestWriter::add_item(const char* bytes, std::size_t length) noexcept {
    if (room() < item_overhead + length) return false;
    const auto length64 = static_cast<std::uint64_t>(length);
    put(&length64, 8);
    put(bytes, length);
    return true;
}

bool RequestWriter::add_item_in_block(std::string_view name, std::size_t length) noexcept {
    const std::string ref = block_ref(name, length);
    if (room() < item_overhead + ref.size()) return false;
    const std::uint64_t flagged = item_in_block | static_cast<std::uint64_t>(length);
    put(&flagged, 8);
    put(ref.data(), ref.size());
    return true;
}

void RequestWriter::add_packed(const char* bytes, std::size_t n, std::size_t stride) noexcept {
    put(bytes, n * stride);
}

std::uint32_t RequestWriter::finish(std::uint32_t count) noexcept {
    std::memcpy(area_ + count_at_, &count, 4);
    return static_cast<std::uint32_t>(used_);
}

void RequestWriter::put(const void* p, std::size_t n) noexcept {
    std::memcpy(area_ + used_, p, n);
    used_ += n;
}

Request read_request(const std::byte* area, std::uint32_t bytes) {
    Reader r(reinterpret_cast<const char*>(area), bytes);
    Request q;
    const auto name_length = r.raw<std::uint64_t>();
    q.task = std::string_view(r.view(name_length), name_length);
    q.count = r.raw<std::uint32_t>();
    q.in_stride = r.raw<std::uint32_t>();
    q.out_stride = r.raw<std::uint32_t>();
    q.items = r;
    return q;
}

bool RecordWriter::put(RecordKind kind, std::string_view bytes) noexcept {
    if (capacity_ < used_ || capacity_ - used_ < record_overhead + bytes.size()) return false;
    area_[used_] = static_cast<std::byte>(kind);
    const auto length = static_cast<std::uint32_t>(bytes.size());
    std::memcpy(area_ + used_ + 1, &length, 4);
    std::memcpy(area_ + used_ + record_overhead, bytes.data(), bytes.size());
    used_ += static_cast<std::uint32_t>(record_overhead + bytes.size());
    return true;
}

bool RecordReader::next(Record& out) noexcept {
    if (size_ < at_ || size_ - at_ < record_overhead) return false;
    std::uint32_t length = 0;
    std::memcpy(&length, area_ + at_ + 1, 4);
    if (size_ - at_ - record_overhead < length) return false;
    // An unknown kind reads as an error: never as a value or a block to open.
    const auto kind = static_cast<RecordKind>(area_[at_]);
    out.kind =
        kind == RecordKind::value || kind == RecordKind::value_in_block ? kind : RecordKind::error;
    out.bytes =
        std::string_view(reinterpret_cast<const char*>(area_ + at_ + record_overhead), length);
    at_ += static_cast<std::uint32_t>(record_overhead) + length;
    return true;
}

std::string block_ref(std::string_view name, std::uint64_t size) {
    std::string out(8, '\0');
    std::memcpy(out.data(), &size, 8);
    out.push_back(static_cast<char>(static_cast<std::uint8_t>(name.size())));
    out.append(name);
    return out;
}

BlockRef read_block_ref(Reader& r) {
    BlockRef ref;
    ref.size = r.raw<std::uint64_t>();
    const auto length = r.raw<std::uint8_t>();
    if (length > max_item_block_name) throw std::length_error("a block ref's name is too long");
    ref.name = std::string_view(r.view(length), length);
    return ref;
}

PackedErrors::PackedErrors(std::byte* area, std::uint32_t capacity, std::uint32_t count,
                           std::uint32_t out_stride, std::uint32_t size) noexcept
    : area_(area), capacity_(capacity) {
    const std::uint64_t start = std::uint64_t{count} * std::max<std::uint32_t>(out_stride, 1);
    start_ = static_cast<std::uint32_t>(std::min<std::uint64_t>(start, capacity));
    end_ = std::clamp(size, start_, capacity);
    read_at_ = start_;
}

std::uint32_t PackedErrors::put(std::uint32_t position, std::string_view payload) noexcept {
    const auto length = static_cast<std::uint32_t>(payload.size());
    std::memcpy(area_ + end_, &position, 4);
    std::memcpy(area_ + end_ + 4, &length, 4);
    std::memcpy(area_ + end_ + packed_error_overhead, payload.data(), payload.size());
    end_ += static_cast<std::uint32_t>(packed_error_overhead) + length;
    return end_;
}

bool PackedErrors::next(Error& out) noexcept {
    if (end_ < read_at_ || end_ - read_at_ < packed_error_overhead) return false;
    std::uint32_t length = 0;
    std::memcpy(&out.position, area_ + read_at_, 4);
    std::memcpy(&length, area_ + read_at_ + 4, 4);
    if (end_ - read_at_ - packed_error_overhead < length) return false;
    out.payload = std::string_view(
        reinterpret_cast<const char*>(area_ + read_at_ + packed_error_overhead), length);
    read_at_ += static_cast<std::uint32_t>(packed_error_overhead) + length;
    return true;
}

std::string error_payload(std::string_view type, std::string_view message) {
    std::string out;
    encode(out, std::string(type));
    encode(out, std::string(message));
    return out;
}

ErrorText read_error_payload(std::string_view payload) {
    try {
        Reader r(payload.data(), payload.size());
        ErrorText e;
        e.type = Codec<std::string>::decode(r);
        e.message = Codec<std::string>::decode(r);
        return e;
    } catch (const std::exception& e) {
        return {"unknown", e.what()};
    }
}

}  // namespace shmpool::detail
