// The task codec's round trips (empty values included) and the wire types it describes to other
// languages (the Python package encodes from them: a change here is a change of its protocol).
#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "shmpool/framework/codec.hpp"
#include "shmpool/framework/detail/type_descriptor.hpp"

namespace {

template <class T>
T round_trip(const T& value) {
    std::string bytes;
    shmpool::encode(bytes, value);
    shmpool::Reader in(bytes.data(), bytes.size());
    T out = shmpool::Codec<T>::decode(in);
    EXPECT_EQ(in.left(), 0U);
    return out;
}

struct Point {
    float x, y;
};
enum class Colour : std::uint8_t { red, green };
struct Opaque {
    std::string text;
};

}  // namespace

template <>
struct shmpool::Codec<Opaque> {
    static void encode(Writer& w, const Opaque& o) { Codec<std::string>::encode(w, o.text); }
    static Opaque decode(Reader& r) { return {Codec<std::string>::decode(r)}; }
};

namespace {

TEST(Codec, EmptyValuesRoundTrip) {
    EXPECT_TRUE(round_trip(std::vector<double>{}).empty());  // data() is null: no memcpy
    EXPECT_TRUE(round_trip(std::string{}).empty());
    EXPECT_TRUE(round_trip(std::vector<std::string>{}).empty());
    EXPECT_FALSE(round_trip(std::optional<int>{}).has_value());
}

TEST(Codec, ValuesRoundTrip) {
    EXPECT_EQ(round_trip(std::vector<double>{1.5, -2}), (std::vector<double>{1.5, -2}));
    EXPECT_EQ(round_trip(std::vector<std::string>{"a", "", "bc"}),
              (std::vector<std::string>{"a", "", "bc"}));
    EXPECT_EQ(round_trip(std::pair<int, std::string>{3, "x"}), (std::pair<int, std::string>{3, "x"}));
    EXPECT_EQ(round_trip(std::tuple<std::string, std::optional<int>>{"y", 4}),
              (std::tuple<std::string, std::optional<int>>{"y", 4}));
}

TEST(Codec, AVectorOfTriviallyCopyableElementsTravelsAsTheirBytes) {
    // What the descriptor vec<raw<N>> promises: a count, then N bytes per element.
    const std::vector<std::optional<int>> values{1, std::nullopt};
    std::string bytes;
    shmpool::encode(bytes, values);
    EXPECT_EQ(bytes.size(), sizeof(std::uint64_t) + 2 * sizeof(std::optional<int>));
    EXPECT_EQ(round_trip(values), values);
}

TEST(Codec, ATruncatedMessageIsALengthError) {
    std::string bytes;
    shmpool::encode(bytes, std::string("hello"));
    shmpool::Reader in(bytes.data(), bytes.size() - 1);
    EXPECT_THROW(shmpool::Codec<std::string>::decode(in), std::length_error);
}

TEST(TypeDescriptor, NamesEachWireType) {
    using shmpool::detail::type_descriptor;
    EXPECT_EQ(type_descriptor<void>(), "void");
    EXPECT_EQ(type_descriptor<bool>(), "bool");
    EXPECT_EQ(type_descriptor<char>(), "char");
    EXPECT_EQ(type_descriptor<std::int8_t>(), "i8");
    EXPECT_EQ(type_descriptor<std::uint16_t>(), "u16");
    EXPECT_EQ(type_descriptor<int>(), "i32");
    EXPECT_EQ(type_descriptor<std::size_t>(), "u64");
    EXPECT_EQ(type_descriptor<float>(), "f32");
    EXPECT_EQ(type_descriptor<double>(), "f64");
    EXPECT_EQ(type_descriptor<Colour>(), "u8");  // as its underlying type
    EXPECT_EQ((type_descriptor<std::array<double, 3>>()), "arr<f64,3>");
    EXPECT_EQ(type_descriptor<Point>(), "raw<8>");
    EXPECT_EQ(type_descriptor<std::string>(), "str");
    EXPECT_EQ(type_descriptor<std::vector<std::string>>(), "vec<str>");
    EXPECT_EQ(type_descriptor<std::optional<std::vector<int>>>(), "opt<vec<i32>>");
    EXPECT_EQ((type_descriptor<std::pair<int, std::string>>()), "tuple<i32,str>");
    EXPECT_EQ((type_descriptor<std::tuple<std::string, double, std::optional<bool>>>()),
              "tuple<str,f64,opt<bool>>");
    EXPECT_EQ(type_descriptor<Opaque>(), "opaque");
    // The vector codec copies trivially copyable elements as bytes, an optional's included.
    EXPECT_EQ(type_descriptor<std::vector<std::optional<int>>>(),
              "vec<raw<" + std::to_string(sizeof(std::optional<int>)) + ">>");
    EXPECT_EQ(type_descriptor<std::vector<std::optional<std::string>>>(), "vec<opt<str>>");
}

TEST(TypeDescriptor, DescribesASignatureAsJson) {
    using shmpool::detail::signature_descriptor;
    EXPECT_EQ(signature_descriptor<double>(static_cast<std::tuple<std::string, int>*>(nullptr)),
              R"({"args": ["str", "i32"], "result": "f64"})");
    EXPECT_EQ(signature_descriptor<void>(static_cast<std::tuple<>*>(nullptr)),
              R"({"args": [], "result": "void"})");
}

}  // namespace
