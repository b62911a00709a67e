// The byte formats of a slot's areas (docs/design/slot-protocol.md):
//
//   request:  [u64 name length][name][u32 count][u32 in_stride][u32 out_stride] then the items:
//             packed (in_stride > 0): count × in_stride bytes; else per item [u64 length][bytes],
//             or, for arguments too big for the area, [u64 item_in_block | length][block ref]
//   response: per item a record [u8 kind][u32 length][bytes] (a value, an error payload, or a
//             block ref to a value too big for the area);
//   block ref: [u64 size][u8 name length][name], a block of its own holding the bytes
//             packed: count × out_stride result bytes, then per item that threw an error record
//             [u32 position][u32 length][payload] from offset count × max(out_stride, 1)
//   error payload: the exception's type name and what(), each a Codec<std::string>
//
// Readers never trust a length: a record that would run past its area ends the read.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "shmpool/framework/codec.hpp"

namespace shmpool::detail {

enum class RecordKind : std::uint8_t { value = 0, error = 1, value_in_block = 2 };

/// Set in a request item's length: the arguments are in a block of their own.
constexpr std::uint64_t item_in_block = std::uint64_t{1} << 63;
/// Longest name of a block that carries an item (the worker's and the parent's names are short).
constexpr std::size_t max_item_block_name = 64;
/// Room a block ref takes in either area, at most.
constexpr std::size_t block_ref_bytes = 8 + 1 + max_item_block_name;

constexpr std::size_t record_overhead = 5;        // [u8 kind][u32 length]
constexpr std::size_t item_overhead = 8;          // [u64 length] before a request item
constexpr std::size_t packed_error_overhead = 8;  // [u32 position][u32 length]

/// Writes a chunk's request into a slot's request area (the parent).
class RequestWriter {
  public:
    RequestWriter(std::byte* area, std::size_t capacity) noexcept
        : area_(area), capacity_(capacity) {}
    /// The chunk's header; false if it does not fit the area.
    bool begin(std::string_view task, std::uint32_t in_stride, std::uint32_t out_stride) noexcept;
    /// Bytes still free.
    std::size_t room() const noexcept { return capacity_ - used_; }
    /// One item's encoded arguments, with its length; false (nothing written) if it does not fit.
    bool add_item(const char* bytes, std::size_t length) noexcept;
    /// One item whose `length` bytes of arguments are in block `name`; false if the ref does
    /// not fit.
    bool add_item_in_block(std::string_view name, std::size_t length) noexcept;
    /// `n` packed items of `stride` bytes; the caller made sure they fit.
    void add_packed(const char* bytes, std::size_t n, std::size_t stride) noexcept;
    /// Writes the item count; returns the request's size in bytes.
    std::uint32_t finish(std::uint32_t count) noexcept;

  private:
    void put(const void* p, std::size_t n) noexcept;
    std::byte* area_;
    std::size_t capacity_;
    std::size_t used_ = 0;
    std::size_t count_at_ = 0;
};

/// A request as the worker reads it; its items follow in `items`.
struct Request {
    std::string_view task;
    std::uint32_t count = 0;
    std::uint32_t in_stride = 0;  // > 0: packed
    std::uint32_t out_stride = 0;
    Reader items{nullptr, 0};
};
/// Throws std::length_error if the request is truncated.
Request read_request(const std::byte* area, std::uint32_t bytes);

/// Appends result records to a response area (the worker).
class RecordWriter {
  public:
    RecordWriter(std::byte* area, std::uint32_t capacity) noexcept
        : area_(area), capacity_(capacity) {}
    /// False (nothing written) if the record does not fit.
    bool put(RecordKind kind, std::string_view bytes) noexcept;
    std::uint32_t used() const noexcept { return used_; }
    /// Bytes a record's payload may still take.
    std::size_t room() const noexcept {
        return capacity_ >= used_ + record_overhead ? capacity_ - used_ - record_overhead : 0;
    }
    /// Drops the records written after `used` bytes (a block that could not be made).
    void rewind(std::uint32_t used) noexcept { used_ = std::min(used_, used); }

  private:
    std::byte* area_;
    std::uint32_t capacity_;
    std::uint32_t used_ = 0;
};

/// Reads result records back (the parent).
class RecordReader {
  public:
    struct Record {
        RecordKind kind = RecordKind::error;
        std::string_view bytes;
    };
    RecordReader(const std::byte* area, std::uint32_t size) noexcept : area_(area), size_(size) {}
    /// The next record; false at the end of the written bytes or on a length that overruns them.
    bool next(Record& out) noexcept;

  private:
    const std::byte* area_;
    std::uint32_t size_;
    std::uint32_t at_ = 0;
};

/// The error records of a packed chunk, after its results (both sides).
class PackedErrors {
  public:
    struct Error {
        std::uint32_t position = 0;
        std::string_view payload;
    };
    /// Errors of a packed chunk of `count` items with results of `out_stride` bytes, in an area
    /// of `capacity` bytes of which `size` are written.
    PackedErrors(std::byte* area, std::uint32_t capacity, std::uint32_t count,
                 std::uint32_t out_stride, std::uint32_t size) noexcept;
    /// Where the first error record goes.
    std::uint32_t start() const noexcept { return start_; }
    /// Room for an error payload of `n` bytes after those written?
    bool fits(std::size_t n) const noexcept {
        return start_ <= capacity_ && capacity_ - end_ >= packed_error_overhead + n;
    }
    /// Appends an error record (it fits()); returns the new end of the written bytes.
    std::uint32_t put(std::uint32_t position, std::string_view payload) noexcept;
    /// Reads the records in order; false at the end or on a record that overruns.
    bool next(Error& out) noexcept;
    std::uint32_t room() const noexcept {
        return end_ + packed_error_overhead <= capacity_
                   ? capacity_ - end_ - static_cast<std::uint32_t>(packed_error_overhead)
                   : 0;
    }

  private:
    std::byte* area_;
    std::uint32_t capacity_;
    std::uint32_t start_;
    std::uint32_t end_;  // written so far (both sides)
    std::uint32_t read_at_;
};

/// A block that holds an item's arguments or result: its name and how many bytes it carries.
struct BlockRef {
    std::string_view name;
    std::uint64_t size = 0;
};
/// The bytes of a ref (`name` is at most max_item_block_name bytes).
std::string block_ref(std::string_view name, std::uint64_t size);
/// Reads a ref from `r`; throws std::length_error if it is truncated or its name too long.
BlockRef read_block_ref(Reader& r);

/// An exception as it travels: its type name and what().
std::string error_payload(std::string_view type, std::string_view message);
struct ErrorText {
    std::string type;
    std::string message;
};
/// Never throws: a payload that does not decode comes back as type "unknown".
ErrorText read_error_payload(std::string_view payload);

}  // namespace shmpool::detail
