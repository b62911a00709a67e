// ShareableList: a fixed-length list of None, bool, int, float, str and bytes packed into a
// SharedMemory block in exactly CPython's binary layout (docs/shareable-list-layout.md), so that
// C++ and Python processes read and write each other's lists.
//
// Where CPython is wrong this class is right, and what it writes stays readable by CPython:
//  - str slots are sized by UTF-8 byte length (CPython counts characters and truncates non-ASCII);
//  - an index outside [-size(), size()) is std::out_of_range (CPython writes slot 0 for some);
//  - attach() validates the header against the block and throws CorruptedBlock instead of
//    reading out of bounds; every get() re-checks the item's format and transform code, because
//    another process may rewrite them at any time;
//  - str and bytes ending in NUL are refused (CPython's layout strips trailing NULs on read, so
//    they could not be read back).
//
// Ownership and lifetime: as SharedMemory (move-only, the destructor unmaps, never unlinks).
// Threads and processes: no locking; concurrent writers to one item may tear it, as in CPython.
#pragma once

#include <fmt/format.h>

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <iterator>
#include <optional>
#include <ranges>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "shmpool/shm/error.hpp"
#include "shmpool/shm/robust_mutex.hpp"
#include "shmpool/shm/shared_memory.hpp"
#include "shmpool/shm/value.hpp"

namespace shmpool {

class ShareableList {
  public:
    /// Largest str (UTF-8 bytes) or bytes item: its slot's "%ds" format must fit 8 characters.
    static constexpr std::size_t max_item_bytes = 9'999'991;

    class Reference;
    class Iterator;

    ShareableList() noexcept = default;

    /// Creates a list holding `values` in a new block with a random name.
    /// Throws std::invalid_argument for a value CPython's layout cannot hold (str or bytes longer
    /// than max_item_bytes or ending in NUL), and what SharedMemory::create throws.
    static ShareableList create(std::span<const Value> values, const CreateOptions& options = {});
    /// As above, in a new block named `name`.
    static ShareableList create(std::string_view name, std::span<const Value> values,
                                const CreateOptions& options = {});
    static ShareableList create(std::initializer_list<Value> values,
                                const CreateOptions& options = {}) {
        return create(std::span<const Value>(values.begin(), values.size()), options);
    }
    static ShareableList create(std::string_view name, std::initializer_list<Value> values,
                                const CreateOptions& options = {}) {
        return create(name, std::span<const Value>(values.begin(), values.size()), options);
    }
    /// Creates a list from any range of values convertible to Value.
    template <std::ranges::input_range R>
    requires std::convertible_to<std::ranges::range_reference_t<R>, Value> &&
        (!std::convertible_to<R, std::span<const Value>>)&&(
            !std::convertible_to<R, std::string_view>)static ShareableList
        create(R&& values, const CreateOptions& options = {}) {
        std::vector<Value> copy;
        for (auto&& v : values)
            copy.emplace_back(std::forward<decltype(v)>(v));
        return create(std::span<const Value>(copy), options);
    }

    /// Attaches the list in the block `name` and validates its layout.
    /// Throws what SharedMemory::attach throws, and CorruptedBlock if the block is not a valid
    /// ShareableList (the message says what is wrong).
    static ShareableList attach(std::string_view name, const AttachOptions& options = {});

    /// Reads the list in an already mapped block (e.g. after taking its lock). Throws
    /// CorruptedBlock as attach() does.
    static ShareableList attach(SharedMemory block);

    /// Whether `block` holds a valid ShareableList layout (header, formats, transform codes).
    static bool is_valid_layout(std::span<const std::byte> block) noexcept;

    ShareableList(ShareableList&&) noexcept = default;
    ShareableList& operator=(ShareableList&&) noexcept = default;
    ShareableList(const ShareableList&) = delete;
    ShareableList& operator=(const ShareableList&) = delete;
    ~ShareableList() = default;

    /// Number of items (fixed at creation).
    std::size_t size() const noexcept { return count_; }
    bool empty() const noexcept { return count_ == 0; }

    /// The item at `index` (negative counts from the end, as in Python).
    /// Throws std::out_of_range outside [-size(), size()), CorruptedBlock if another process left
    /// an invalid format or transform code or a str that is not UTF-8.
    Value get(std::ptrdiff_t index) const;
    /// The type of the item at `index` (same errors as get()).
    Value::Type type_at(std::ptrdiff_t index) const;

    /// Replaces the item at `index`, following CPython's rules: a str or bytes value must fit
    /// the slot allocated at creation (std::length_error otherwise); other values take 8 bytes.
    /// Throws std::out_of_range for a bad index, std::invalid_argument for a str or bytes value
    /// ending in NUL, std::system_error(EROFS) on a read-only attachment.
    void set(std::ptrdiff_t index, const Value& value);

    /// Proxy access: `list[i] = 5; Value v = list[i];`.
    Reference operator[](std::ptrdiff_t index) noexcept;
    Value operator[](std::ptrdiff_t index) const { return get(index); }

    /// Bytes allocated to item `index` (8 for fixed-size items, a multiple of 8 for str/bytes).
    std::size_t slot_size(std::ptrdiff_t index) const;

    /// CPython's `format` property: the struct formats of all items, concatenated.
    std::string format() const;
    /// The struct format of one item (CPython's `_get_packing_format`). Throws std::out_of_range.
    std::string item_format(std::ptrdiff_t index) const;
    /// Number of items equal to `value` (typed equality, see Value).
    std::size_t count(const Value& value) const;
    /// Position of the first item equal to `value`; std::invalid_argument if there is none.
    std::size_t index(const Value& value) const;
    /// Position of the first item equal to `value`, if any.
    std::optional<std::size_t> find(const Value& value) const;
    /// All items, in order.
    std::vector<Value> to_vector() const;

    /// Whether the list carries a lock (created with CreateOptions::guarded). CPython still reads
    /// and writes a guarded list, without taking the lock.
    bool guarded() const noexcept { return shm_.guarded(); }
    /// Takes the list's lock; std::logic_error if it has none. If the previous holder died,
    /// the guard's owner_died() says so: check layout_intact(), repair, make_consistent().
    RobustLock lock() { return RobustLock(shm_.mutex()); }
    /// Re-validates the whole layout in the block (header, offsets, formats, codes), e.g. after
    /// a holder of the lock died mid-write.
    bool layout_intact() const noexcept;

    const std::string& name() const noexcept { return shm_.name(); }
    const SharedMemory& shm() const noexcept { return shm_; }
    SharedMemory& shm() noexcept { return shm_; }

    /// Unmaps the list (idempotent); the block stays in /dev/shm.
    void close() noexcept;
    /// Removes the block from /dev/shm; this object stays usable until closed.
    void unlink() const { shm_.unlink(); }

    Iterator begin() const noexcept;
    Iterator end() const noexcept;

  private:
    ShareableList(SharedMemory shm, std::vector<std::uint64_t> offsets);
    std::size_t checked_index(std::ptrdiff_t index, const char* operation) const;

    SharedMemory shm_;
    std::size_t count_ = 0;
    std::byte* data_ = nullptr;     // start of the data area
    std::byte* formats_ = nullptr;  // count_ 8-byte struct formats
    std::byte* codes_ = nullptr;    // count_ back-transform codes
    // Slot boundaries, validated at attach and kept privately: no other process can move them.
    std::vector<std::uint64_t> offsets_;
    // The "%ds" format of each slot's full size (what CPython writes for str and bytes), so the
    // hot path recognises it with one comparison instead of parsing digits.
    std::vector<std::uint64_t> sized_formats_;
};

class ShareableList::Reference {
  public:
    operator Value() const { return list_->get(index_); }  // NOLINT(google-explicit-constructor)
    Reference& operator=(const Value& value) {
        list_->set(index_, value);
        return *this;
    }
    /// Copies the other item's value (list[i] = list[j]), not the proxy.
    Reference& operator=(const Reference& other) {
        if (this != &other) *this = static_cast<Value>(other);
        return *this;
    }
    Reference(const Reference&) = default;

  private:
    friend class ShareableList;
    Reference(ShareableList* list, std::ptrdiff_t index) noexcept : list_(list), index_(index) {}
    ShareableList* list_;
    std::ptrdiff_t index_;
};

/// Iterates the items by value (each step reads the block afresh).
class ShareableList::Iterator {
  public:
    using iterator_concept = std::forward_iterator_tag;
    using value_type = Value;
    using difference_type = std::ptrdiff_t;

    Iterator() noexcept = default;
    Value operator*() const { return list_->get(static_cast<std::ptrdiff_t>(index_)); }
    Iterator& operator++() noexcept {
        ++index_;
        return *this;
    }
    Iterator operator++(int) noexcept {
        Iterator old = *this;
        ++index_;
        return old;
    }
    friend bool operator==(const Iterator& a, const Iterator& b) noexcept {
        return a.index_ == b.index_;
    }

  private:
    friend class ShareableList;
    Iterator(const ShareableList* list, std::size_t index) noexcept : list_(list), index_(index) {}
    const ShareableList* list_ = nullptr;
    std::size_t index_ = 0;
};

inline ShareableList::Reference ShareableList::operator[](std::ptrdiff_t index) noexcept {
    return {this, index};
}
inline ShareableList::Iterator ShareableList::begin() const noexcept {
    return {this, 0};
}
inline ShareableList::Iterator ShareableList::end() const noexcept {
    return {this, count_};
}

/// CPython's repr: `ShareableList([1, 'a', b'x', None, True, 2.5], name='psm_0123abcd')`.
std::string repr(const ShareableList& list);

}  // namespace shmpool

template <>
struct fmt::formatter<shmpool::ShareableList> : fmt::formatter<std::string_view> {
    template <class FormatContext>
    auto format(const shmpool::ShareableList& list, FormatContext& ctx) const {
        return fmt::formatter<std::string_view>::format(shmpool::repr(list), ctx);
    }
};
