// Value: one item of a ShareableList (None, bool, int, float, str or bytes), and Python reprs.
//
// The six alternatives are CPython's: int is a signed 64-bit integer ('q'), float a double ('d'),
// str is UTF-8 text in a std::string, bytes is shmpool::Bytes. Equality is typed: Value(1),
// Value(1.0) and Value(true) are three different values (Python would call them equal).
#pragma once

#include <fmt/format.h>

#include <compare>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <variant>

namespace shmpool {

/// Python's None.
struct None {
    friend constexpr bool operator==(None, None) noexcept { return true; }
};
inline constexpr None none{};

/// Python's bytes: an immutable run of raw bytes (kept in a std::string, which may hold NULs).
class Bytes {
  public:
    Bytes() = default;
    explicit Bytes(std::string_view raw) : data_(raw) {}
    explicit Bytes(std::span<const std::byte> raw)
        : data_(reinterpret_cast<const char*>(raw.data()), raw.size()) {}

    std::string_view view() const noexcept { return data_; }
    std::span<const std::byte> bytes() const noexcept {
        return {reinterpret_cast<const std::byte*>(data_.data()), data_.size()};
    }
    std::size_t size() const noexcept { return data_.size(); }
    bool empty() const noexcept { return data_.empty(); }

    friend bool operator==(const Bytes&, const Bytes&) = default;

  private:
    std::string data_;
};

/// One item of a ShareableList.
class Value {
  public:
    enum class Type { none, boolean, integer, floating, string, bytes };
    using Storage = std::variant<None, bool, std::int64_t, double, std::string, Bytes>;

    Value() noexcept = default;
    Value(None) noexcept {}
    Value(bool b) noexcept : storage_(b) {}
    /// Any integer type but bool and the character types. Throws std::out_of_range for an
    /// unsigned value above INT64_MAX (CPython's 'q' cannot hold it either).
    template <std::integral T>
    requires(!std::same_as<T, bool> && !std::same_as<T, char> && !std::same_as<T, char8_t> &&
             !std::same_as<T, char16_t> && !std::same_as<T, char32_t> && !std::same_as<T, wchar_t>)
        Value(T i)
        : storage_(checked_int(i)) {}
    Value(double d) noexcept : storage_(d) {}
    Value(float f) noexcept : storage_(static_cast<double>(f)) {}
    Value(std::string s) noexcept : storage_(std::move(s)) {}
    Value(std::string_view s) : storage_(std::string(s)) {}
    Value(const char* s) : storage_(std::string(s)) {}
    Value(Bytes b) noexcept : storage_(std::move(b)) {}

    Type type() const noexcept { return static_cast<Type>(storage_.index()); }
    bool is_none() const noexcept { return type() == Type::none; }

    /// The alternative T; throws std::bad_variant_access if the value holds another type.
    template <class T>
    const T& get() const {
        return std::get<T>(storage_);
    }
    /// The alternative T, or nullptr.
    template <class T>
    const T* get_if() const noexcept {
        return std::get_if<T>(&storage_);
    }
    const Storage& storage() const noexcept { return storage_; }

    friend bool operator==(const Value&, const Value&) = default;

  private:
    template <std::integral T>
    static std::int64_t checked_int(T i) {
        if constexpr (std::is_unsigned_v<T> && sizeof(T) >= sizeof(std::int64_t)) {
            if (i > static_cast<T>(INT64_MAX)) throw_int_out_of_range();
        }
        return static_cast<std::int64_t>(i);
    }
    [[noreturn]] static void throw_int_out_of_range();

    Storage storage_;
};

/// Python's name of a value's type: "NoneType", "bool", "int", "float", "str", "bytes".
std::string_view type_name(Value::Type type) noexcept;

/// repr() as CPython prints it: None, True, 42, 2.5, 1e+16, nan, 'text', b'\x00ab'.
std::string repr(const Value& value);
/// repr() of a Python float: shortest round-trip digits, CPython's choice of notation.
std::string repr_float(double d);
/// repr() of a Python str holding this UTF-8 text.
std::string repr_str(std::string_view utf8);
/// repr() of a Python bytes object.
std::string repr_bytes(std::string_view raw);

}  // namespace shmpool

/// Formats a Value as its Python repr.
template <>
struct fmt::formatter<shmpool::Value> : fmt::formatter<std::string_view> {
    template <class FormatContext>
    auto format(const shmpool::Value& v, FormatContext& ctx) const {
        return fmt::formatter<std::string_view>::format(shmpool::repr(v), ctx);
    }
};
