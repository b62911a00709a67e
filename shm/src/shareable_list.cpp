// ShareableList: CPython's layout (docs/shareable-list-layout.md), validated on attach and per
// item.
#include "shmpool/shm/shareable_list.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>

#include "posix/sys.hpp"
#include "utf8.hpp"

namespace shmpool {
namespace {

// Back-transform codes, as CPython's _back_transforms_mapping.
enum Code : std::uint8_t { code_plain = 0, code_str = 1, code_bytes = 2, code_none = 3 };

constexpr std::uint64_t pack8(const char (&s)[9]) {
    std::uint64_t v = 0;
    for (int i = 7; i >= 0; --i)
        v = (v << 8) | static_cast<unsigned char>(s[i]);
    return v;  // little-endian image of the 8 characters, as memcpy'ed from the block
}
constexpr std::uint64_t fmt_int = pack8("q\0\0\0\0\0\0\0");
constexpr std::uint64_t fmt_float = pack8("d\0\0\0\0\0\0\0");
constexpr std::uint64_t fmt_bool = pack8("xxxxxxx?");
constexpr std::uint64_t fmt_none = pack8("xxxxxx?x");
static_assert(std::endian::native == std::endian::little,
              "the format constants assume little-endian");

enum class Kind { integer, floating, boolean, none, sized, invalid };

struct Format {
    Kind kind = Kind::invalid;
    std::size_t length = 0;  // N of "Ns"
};

// Decodes an item's 8-byte struct format; only the formats CPython writes are accepted.
Format parse_format(std::uint64_t raw) noexcept {
    switch (raw) {
        case fmt_int:
            return {Kind::integer, 8};
        case fmt_float:
            return {Kind::floating, 8};
        case fmt_bool:
            return {Kind::boolean, 8};
        case fmt_none:
            return {Kind::none, 8};
        default:
            break;
    }
    // "<digits>s" padded with NULs.
    char text[8];
    std::memcpy(text, &raw, 8);
    std::size_t i = 0;
    std::size_t n = 0;
    while (i < 8 && text[i] >= '0' && text[i] <= '9')
        n = n * 10 + static_cast<std::size_t>(text[i++] - '0');
    if (i == 0 || i >= 8 || text[i] != 's') return {};
    for (std::size_t j = i + 1; j < 8; ++j) {
        if (text[j] != '\0') return {};
    }
    return {Kind::sized, n};
}

bool code_matches(Kind kind, std::uint8_t code) noexcept {
    switch (kind) {
        case Kind::integer:
        case Kind::floating:
        case Kind::boolean:
            return code == code_plain;
        case Kind::none:
            return code == code_none;
        case Kind::sized:
            return code == code_str || code == code_bytes;
        case Kind::invalid:
            return false;
    }
    return false;
}

// "%ds" % n, NUL-padded to 8 bytes; n has at most 7 digits (max_item_bytes).
std::uint64_t sized_format(std::size_t n) noexcept {
    char digits[8];
    int len = 0;
    do {
        digits[len++] = static_cast<char>('0' + n % 10);
        n /= 10;
    } while (n != 0 && len < 7);
    char text[8] = {};
    for (int i = 0; i < len; ++i)
        text[i] = digits[len - 1 - i];
    text[len] = 's';
    std::uint64_t v;
    std::memcpy(&v, text, 8);
    return v;
}

std::uint64_t load8(const std::byte* p) noexcept {
    std::uint64_t v;
    std::memcpy(&v, p, 8);
    return v;
}

void store8(std::byte* p, std::uint64_t v) noexcept {
    std::memcpy(p, &v, 8);
}

struct Layout {
    std::size_t count = 0;
    std::vector<std::uint64_t> offsets;
    std::size_t data_start = 0;
    std::size_t formats_start = 0;
    std::size_t codes_start = 0;
};

// Checks a block against CPython's layout; returns the reason it is not one, or "" on success.
std::string parse_layout(std::span<const std::byte> block, Layout& out) {
    const std::size_t size = block.size();
    if (size < 16)
        return fmt::format("the block has {} bytes, fewer than the 16-byte header", size);
    auto count = static_cast<std::int64_t>(load8(block.data()));
    if (count < 0) return fmt::format("the item count is negative ({})", count);
    // Each item needs at least 8 bytes of offset, 8 of data, 8 of format and 1 of code.
    if (static_cast<std::uint64_t>(count) > (size - 16) / 25) {
        return fmt::format("the item count {} does not fit a block of {} bytes", count, size);
    }
    const auto n = static_cast<std::size_t>(count);
    out.count = n;
    out.data_start = (n + 2) * 8;
    out.offsets.resize(n + 1);
    for (std::size_t i = 0; i <= n; ++i)
        out.offsets[i] = load8(block.data() + 8 * (i + 1));
    if (out.offsets[0] != 0) return fmt::format("the first offset is {}, not 0", out.offsets[0]);
    for (std::size_t i = 0; i < n; ++i) {
        std::uint64_t a = out.offsets[i];
        std::uint64_t b = out.offsets[i + 1];
        if (b < a || b - a < 8 || b > size) {
            return fmt::format("the slot of item {} runs from {} to {}", i, a, b);
        }
    }
    const std::uint64_t data_size = out.offsets[n];
    if (data_size > size - out.data_start || 9 * n > size - out.data_start - data_size) {
        return fmt::format("{} items with {} data bytes do not fit a block of {} bytes", n,
                           data_size, size);
    }
    out.formats_start = out.data_start + static_cast<std::size_t>(data_size);
    out.codes_start = out.formats_start + 8 * n;
    for (std::size_t i = 0; i < n; ++i) {
        std::uint64_t raw = load8(block.data() + out.formats_start + 8 * i);
        Format f = parse_format(raw);
        if (f.kind == Kind::invalid) return fmt::format("item {} has an unknown struct format", i);
        if (f.kind == Kind::sized && f.length > out.offsets[i + 1] - out.offsets[i]) {
            return fmt::format("item {} has format '{}s' but a slot of {} bytes", i, f.length,
                               out.offsets[i + 1] - out.offsets[i]);
        }
        auto code = static_cast<std::uint8_t>(block[out.codes_start + i]);
        if (code > code_none) return fmt::format("item {} has transform code {}, not 0-3", i, code);
        if (!code_matches(f.kind, code)) {
            return fmt::format("item {} has transform code {}, which does not match its format", i,
                               code);
        }
    }
    return {};
}

// The bytes a str or bytes value stores; refuses what CPython's layout cannot give back.
std::string_view stored_bytes(const Value& value, std::size_t position) {
    std::string_view raw = value.type() == Value::Type::string
                               ? std::string_view(value.get<std::string>())
                               : value.get<Bytes>().view();
    const char* what = value.type() == Value::Type::string ? "str" : "bytes";
    if (value.type() == Value::Type::string && !detail::is_valid_utf8(raw)) {
        throw std::invalid_argument(fmt::format("item {}: str value is not valid UTF-8", position));
    }
    if (!raw.empty() && raw.back() == '\0') {
        throw std::invalid_argument(fmt::format(
            "item {}: {} value ends with a NUL byte, which CPython's ShareableList layout strips "
            "on read",
            position, what));
    }
    if (raw.size() > ShareableList::max_item_bytes) {
        throw std::invalid_argument(
            fmt::format("item {}: {} value of {} bytes exceeds the ShareableList limit of {} bytes",
                        position, what, raw.size(), ShareableList::max_item_bytes));
    }
    return raw;
}

}  // namespace

ShareableList::ShareableList(SharedMemory shm, std::vector<std::uint64_t> offsets)
    : shm_(std::move(shm)), count_(offsets.size() - 1), offsets_(std::move(offsets)) {
    sized_formats_.resize(count_);
    for (std::size_t i = 0; i < count_; ++i)
        sized_formats_[i] = sized_format(offsets_[i + 1] - offsets_[i]);
    data_ = shm_.data() + (count_ + 2) * 8;
    formats_ = data_ + offsets_[count_];
    codes_ = formats_ + 8 * count_;
}

ShareableList ShareableList::create(std::span<const Value> values, const CreateOptions& options) {
    return create(std::string_view{}, values, options);
}

ShareableList ShareableList::create(std::string_view name, std::span<const Value> values,
                                    const CreateOptions& options) {
    const std::size_t n = values.size();
    std::vector<std::uint64_t> offsets(n + 1);
    std::vector<std::uint64_t> formats(n);
    std::vector<std::string_view> raw(n);
    for (std::size_t i = 0; i < n; ++i) {
        const Value& v = values[i];
        std::size_t slot = 8;
        switch (v.type()) {
            case Value::Type::none:
                formats[i] = fmt_none;
                break;
            case Value::Type::boolean:
                formats[i] = fmt_bool;
                break;
            case Value::Type::integer:
                formats[i] = fmt_int;
                break;
            case Value::Type::floating:
                formats[i] = fmt_float;
                break;
            case Value::Type::string:
            case Value::Type::bytes:
                // CPython: 8 * (len // 8 + 1), len counting a str's characters. Where the UTF-8
                // bytes fit that, the same slot (so the format is CPython's); where they do not
                // (CPython would truncate the text, gh-88336), len counts the bytes.
                raw[i] = stored_bytes(v, i);
                slot = 8 * (raw[i].size() / 8 + 1);
                if (v.type() == Value::Type::string) {
                    const auto characters = static_cast<std::size_t>(std::count_if(
                        raw[i].begin(), raw[i].end(),
                        [](char c) { return (static_cast<unsigned char>(c) & 0xC0) != 0x80; }));
                    const std::size_t cpython_slot = 8 * (characters / 8 + 1);
                    if (raw[i].size() <= cpython_slot) slot = cpython_slot;
                }
                formats[i] = sized_format(slot);
                break;
        }
        offsets[i + 1] = offsets[i] + slot;
    }
    const std::size_t total = 8 * (n + 2) + offsets[n] + 9 * n;
    SharedMemory shm = name.empty() ? SharedMemory::create(total, options)
                                    : SharedMemory::create(name, total, options);
    std::byte* base = shm.data();
    // Every byte is written next: one pre-fault instead of a page fault per page.
    sys::populate_for_write(base, total);
    store8(base, n);
    for (std::size_t i = 0; i <= n; ++i)
        store8(base + 8 * (i + 1), offsets[i]);
    std::byte* data = base + 8 * (n + 2);
    std::byte* fmts = data + offsets[n];
    std::byte* codes = fmts + 8 * n;
    for (std::size_t i = 0; i < n; ++i) {
        std::byte* slot = data + offsets[i];
        const Value& v = values[i];
        std::uint8_t code = code_plain;
        switch (v.type()) {
            case Value::Type::none:
                code = code_none;
                break;  // "xxxxxx?x" packs bool(None) = 0
            case Value::Type::boolean:
                slot[7] = std::byte{v.get<bool>() ? std::uint8_t{1} : std::uint8_t{0}};
                break;
            case Value::Type::integer:
                std::memcpy(slot, &v.get<std::int64_t>(), 8);
                break;
            case Value::Type::floating:
                std::memcpy(slot, &v.get<double>(), 8);
                break;
            case Value::Type::string:
            case Value::Type::bytes:
                code = v.type() == Value::Type::string ? code_str : code_bytes;
                std::memcpy(slot, raw[i].data(),
                            raw[i].size());  // the rest of the fresh block is 0
                break;
        }
        store8(fmts + 8 * i, formats[i]);
        codes[i] = std::byte{code};
    }
    return ShareableList(std::move(shm), std::move(offsets));
}

ShareableList ShareableList::attach(std::string_view name, const AttachOptions& options) {
    return attach(SharedMemory::attach(name, options));
}

ShareableList ShareableList::attach(SharedMemory shm) {
    Layout layout;
    std::string problem = parse_layout(shm.buf(), layout);
    if (!problem.empty()) {
        throw CorruptedBlock(
            errc::corrupted_block,
            fmt::format("block '{}' is not a valid ShareableList: {}", shm.name(), problem));
    }
    return ShareableList(std::move(shm), std::move(layout.offsets));
}

bool ShareableList::is_valid_layout(std::span<const std::byte> block) noexcept {
    try {
        Layout layout;
        return parse_layout(block, layout).empty();
    } catch (...) {  // only allocation can fail here
        return false;
    }
}

bool ShareableList::layout_intact() const noexcept {
    if (!shm_.is_open()) return false;
    try {
        Layout layout;
        return parse_layout(shm_.buf(), layout).empty() && layout.offsets == offsets_;
    } catch (...) {
        return false;
    }
}

std::size_t ShareableList::checked_index(std::ptrdiff_t index, const char* operation) const {
    std::ptrdiff_t i = index < 0 ? index + static_cast<std::ptrdiff_t>(count_) : index;
    if (i < 0 || i >= static_cast<std::ptrdiff_t>(count_)) {
        throw std::out_of_range(
            fmt::format("ShareableList '{}': {} index {} out of range for {} items", name(),
                        operation, index, count_));
    }
    return static_cast<std::size_t>(i);
}

namespace {

[[noreturn]] void throw_bad_item(const std::string& name, std::size_t i) {
    throw CorruptedBlock(
        errc::corrupted_block,
        fmt::format("ShareableList '{}': item {} has an invalid format or transform "
                    "code (the block was changed by something else)",
                    name, i));
}

}  // namespace

Value ShareableList::get(std::ptrdiff_t index) const {
    const std::size_t i = checked_index(index, "get");
    // Format and code are read afresh: another process may have changed the item's type.
    const std::uint64_t raw_format = load8(formats_ + 8 * i);
    const Format f = raw_format == sized_formats_[i]
                         ? Format{Kind::sized, offsets_[i + 1] - offsets_[i]}
                         : parse_format(raw_format);
    const auto code = static_cast<std::uint8_t>(codes_[i]);
    const std::byte* slot = data_ + offsets_[i];
    switch (f.kind) {
        case Kind::integer:
            if (code == code_plain) return static_cast<std::int64_t>(load8(slot));
            break;
        case Kind::floating:
            if (code == code_plain) {
                double d;
                std::memcpy(&d, slot, 8);
                return d;
            }
            break;
        case Kind::boolean:
            if (code == code_plain) return slot[7] != std::byte{0};
            break;
        case Kind::none:
            if (code == code_none) return none;
            break;
        case Kind::sized: {
            if (f.length > offsets_[i + 1] - offsets_[i] ||
                (code != code_str && code != code_bytes))
                break;
            std::string_view raw(reinterpret_cast<const char*>(slot), f.length);
            // CPython strips trailing NULs: they are the slot's padding.
            std::size_t end = raw.find_last_not_of('\0');
            raw = raw.substr(0, end == std::string_view::npos ? 0 : end + 1);
            if (code == code_bytes) return Bytes(raw);
            if (!detail::is_valid_utf8(raw)) {
                throw CorruptedBlock(errc::invalid_utf8,
                                     fmt::format("ShareableList '{}': item {} is a str that is not "
                                                 "valid UTF-8",
                                                 name(), i));
            }
            return std::string(raw);
        }
        case Kind::invalid:
            break;
    }
    throw_bad_item(name(), i);
}

Value::Type ShareableList::type_at(std::ptrdiff_t index) const {
    const std::size_t i = checked_index(index, "type_at");
    const Format f = parse_format(load8(formats_ + 8 * i));
    const auto code = static_cast<std::uint8_t>(codes_[i]);
    if (!code_matches(f.kind, code)) throw_bad_item(name(), i);
    switch (f.kind) {
        case Kind::integer:
            return Value::Type::integer;
        case Kind::floating:
            return Value::Type::floating;
        case Kind::boolean:
            return Value::Type::boolean;
        case Kind::none:
            return Value::Type::none;
        default:
            return code == code_str ? Value::Type::string : Value::Type::bytes;
    }
}

void ShareableList::set(std::ptrdiff_t index, const Value& value) {
    const std::size_t i = checked_index(index, "set");
    if (shm_.read_only()) {
        throw std::system_error(EROFS, std::generic_category(),
                                fmt::format("ShareableList '{}' is attached read-only", name()));
    }
    std::byte* slot = data_ + offsets_[i];
    std::byte* format = formats_ + 8 * i;
    // CPython writes the format, then the transform code, then the value; so do we.
    switch (value.type()) {
        case Value::Type::none:
            store8(format, fmt_none);
            codes_[i] = std::byte{code_none};
            store8(slot, 0);
            return;
        case Value::Type::boolean:
            store8(format, fmt_bool);
            codes_[i] = std::byte{code_plain};
            store8(slot, 0);
            slot[7] = std::byte{value.get<bool>() ? std::uint8_t{1} : std::uint8_t{0}};
            return;
        case Value::Type::integer:
            store8(format, fmt_int);
            codes_[i] = std::byte{code_plain};
            std::memcpy(slot, &value.get<std::int64_t>(), 8);
            return;
        case Value::Type::floating:
            store8(format, fmt_float);
            codes_[i] = std::byte{code_plain};
            std::memcpy(slot, &value.get<double>(), 8);
            return;
        case Value::Type::string:
        case Value::Type::bytes:
            break;
    }
    std::string_view raw = stored_bytes(value, i);
    const std::size_t allocated = offsets_[i + 1] - offsets_[i];
    if (raw.size() > allocated) {
        throw std::length_error(fmt::format(
            "ShareableList '{}': {} value of {} bytes does not fit item {}, which has {} bytes",
            name(), type_name(value.type()), raw.size(), i, allocated));
    }
    // A sized slot keeps its format (CPython); any other takes "%ds" of the whole slot.
    std::uint64_t new_format = load8(format);
    Format current{Kind::sized, allocated};
    if (new_format != sized_formats_[i]) {
        current = parse_format(new_format);
        if (current.kind != Kind::sized || current.length < raw.size() ||
            current.length > allocated) {
            new_format = sized_formats_[i];
            current.length = allocated;
        }
    }
    store8(format, new_format);
    codes_[i] = std::byte{value.type() == Value::Type::string ? code_str : code_bytes};
    std::memcpy(slot, raw.data(), raw.size());
    std::memset(slot + raw.size(), 0, current.length - raw.size());
}

std::size_t ShareableList::slot_size(std::ptrdiff_t index) const {
    const std::size_t i = checked_index(index, "slot_size");
    return offsets_[i + 1] - offsets_[i];
}

std::string ShareableList::format() const {
    std::string out;
    for (std::size_t i = 0; i < count_; ++i)
        out += item_format(static_cast<std::ptrdiff_t>(i));
    return out;
}

std::string ShareableList::item_format(std::ptrdiff_t index) const {
    const std::size_t i = checked_index(index, "item_format");
    char text[8];
    std::memcpy(text, formats_ + 8 * i, 8);
    return {text, strnlen(text, 8)};
}

std::optional<std::size_t> ShareableList::find(const Value& value) const {
    for (std::size_t i = 0; i < count_; ++i) {
        if (get(static_cast<std::ptrdiff_t>(i)) == value) return i;
    }
    return std::nullopt;
}

std::size_t ShareableList::index(const Value& value) const {
    if (auto i = find(value)) return *i;
    throw std::invalid_argument(
        fmt::format("{} is not in ShareableList '{}'", repr(value), name()));
}

std::size_t ShareableList::count(const Value& value) const {
    std::size_t n = 0;
    for (std::size_t i = 0; i < count_; ++i)
        n += get(static_cast<std::ptrdiff_t>(i)) == value;
    return n;
}

std::vector<Value> ShareableList::to_vector() const {
    std::vector<Value> out;
    out.reserve(count_);
    for (std::size_t i = 0; i < count_; ++i)
        out.push_back(get(static_cast<std::ptrdiff_t>(i)));
    return out;
}

void ShareableList::close() noexcept {
    shm_.close();
    count_ = 0;
    data_ = formats_ = codes_ = nullptr;
    offsets_.assign(1, 0);
    sized_formats_.clear();
}

std::string repr(const ShareableList& list) {
    std::string out = "ShareableList([";
    for (std::size_t i = 0; i < list.size(); ++i) {
        if (i) out += ", ";
        out += repr(list.get(static_cast<std::ptrdiff_t>(i)));
    }
    out += "], name=";
    out += repr_str(list.name());
    out += ')';
    return out;
}

}  // namespace shmpool
