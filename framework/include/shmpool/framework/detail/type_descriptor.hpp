// TypeDescriptor<T>: the wire type of T under shmpool::Codec, as text, so that a program in
// another language (the Python package) can encode a task's arguments and decode its result
// (`SHMPOOL_ROLE=describe`, docs/python.md). Not for users.
//
// The grammar follows the codec's choices exactly: a type the codec sends as its bytes is
// `bool`, `char`, `i8`..`i64`, `u8`..`u64`, `f32`, `f64`, `arr<T,N>` (std::array of those) or
// `raw<SIZE>` (any other trivially copyable type); otherwise `str`, `vec<T>`, `opt<T>`,
// `tuple<A,B,...>` (std::pair and std::tuple), and `opaque` for a user's own Codec.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "shmpool/framework/codec.hpp"

namespace shmpool::detail {

/// Whether T travels as its bytes alone (the built-in codec of trivially copyable types).
template <class T>
constexpr bool raw_codec_v = [] {
    if constexpr (requires { Codec<T>::raw_bytes; })
        return Codec<T>::raw_bytes;
    else
        return false;
}();

template <class T>
std::string type_descriptor();

template <class T>
struct IsArithmeticArray : std::false_type {};
template <class T, std::size_t N>
struct IsArithmeticArray<std::array<T, N>> : std::is_arithmetic<T> {};

template <class T>
std::string raw_type_descriptor() {
    if constexpr (std::is_same_v<T, bool>) {
        return "bool";
    } else if constexpr (std::is_same_v<T, char>) {
        return "char";
    } else if constexpr (std::is_enum_v<T>) {
        return raw_type_descriptor<std::underlying_type_t<T>>();
    } else if constexpr (std::is_integral_v<T>) {
        return (std::is_signed_v<T> ? "i" : "u") + std::to_string(8 * sizeof(T));
    } else if constexpr (std::is_same_v<T, float> && sizeof(float) == 4) {
        return "f32";
    } else if constexpr (std::is_same_v<T, double> && sizeof(double) == 8) {
        return "f64";
    } else if constexpr (IsArithmeticArray<T>::value) {
        return "arr<" + raw_type_descriptor<typename T::value_type>() + "," +
               std::to_string(std::tuple_size<T>::value) + ">";
    } else {
        return "raw<" + std::to_string(sizeof(T)) + ">";
    }
}

template <class T>
struct StructuredDescriptor {
    static std::string text() { return "opaque"; }  // a user's own Codec<T>
};
template <>
struct StructuredDescriptor<std::string> {
    static std::string text() { return "str"; }
};
template <class T>
struct StructuredDescriptor<std::vector<T>> {
    static std::string text() {
        // Codec<std::vector<T>> copies the bytes of any trivially copyable T, whatever T's own
        // codec (a std::optional<int> goes as its object representation there).
        if constexpr (std::is_trivially_copyable_v<T> && !raw_codec_v<T>)
            return "vec<raw<" + std::to_string(sizeof(T)) + ">>";
        else
            return "vec<" + type_descriptor<T>() + ">";
    }
};
template <class T>
struct StructuredDescriptor<std::optional<T>> {
    static std::string text() { return "opt<" + type_descriptor<T>() + ">"; }
};
template <class... Ts>
struct StructuredDescriptor<std::tuple<Ts...>> {
    static std::string text() {
        std::string out = "tuple<";
        ((out += type_descriptor<Ts>() + ","), ...);
        if (out.back() == ',') out.pop_back();
        return out + ">";
    }
};
template <class A, class B>
struct StructuredDescriptor<std::pair<A, B>> {
    static std::string text() { return StructuredDescriptor<std::tuple<A, B>>::text(); }
};

/// T's descriptor, "void" for void.
template <class T>
std::string type_descriptor() {
    if constexpr (std::is_void_v<T>)
        return "void";
    else if constexpr (raw_codec_v<T>)
        return raw_type_descriptor<T>();
    else
        return StructuredDescriptor<T>::text();
}

/// A function's parameters and result, as `{"args": [...], "result": "..."}` (JSON).
template <class Result, class... Args>
std::string signature_descriptor(std::tuple<Args...>* /*parameters*/) {
    std::string out = R"({"args": [)";
    ((out += "\"" + type_descriptor<Args>() + "\", "), ...);
    if constexpr (sizeof...(Args) > 0) out.resize(out.size() - 2);
    return out + R"(], "result": ")" + type_descriptor<Result>() + "\"}";
}

}  // namespace shmpool::detail
