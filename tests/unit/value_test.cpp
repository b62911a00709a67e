// Value: typed equality, integer range, and reprs that match CPython's.
#include "shmpool/shm/value.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>

using shmpool::Bytes;
using shmpool::Value;

TEST(Value, DefaultIsNone) {
    EXPECT_TRUE(Value{}.is_none());
}

TEST(Value, EqualityIsTyped) {
    EXPECT_NE(Value(1), Value(1.0));
    EXPECT_NE(Value(1), Value(true));
    EXPECT_NE(Value("ab"), Value(Bytes("ab")));
    EXPECT_EQ(Value("ab"), Value(std::string("ab")));
}

TEST(Value, UnsignedAboveInt64MaxIsOutOfRange) {
    EXPECT_THROW(Value(std::uint64_t{1} << 63), std::out_of_range);
    EXPECT_EQ(Value(std::uint64_t{42}).get<std::int64_t>(), 42);
    EXPECT_EQ(Value(std::numeric_limits<std::int64_t>::min()).get<std::int64_t>(),
              std::numeric_limits<std::int64_t>::min());
}

TEST(Value, StringLiteralIsStrNotBool) {
    EXPECT_EQ(Value("x").type(), Value::Type::string);
}

TEST(Repr, FloatsMatchCPython) {
    // Each expectation is what CPython 3.11 prints for repr(float).
    EXPECT_EQ(shmpool::repr_float(2.5), "2.5");
    EXPECT_EQ(shmpool::repr_float(100.0), "100.0");
    EXPECT_EQ(shmpool::repr_float(0.1), "0.1");
    EXPECT_EQ(shmpool::repr_float(1e16), "1e+16");
    EXPECT_EQ(shmpool::repr_float(1234567890123456.0), "1234567890123456.0");
    EXPECT_EQ(shmpool::repr_float(12345678901234567.0), "1.2345678901234568e+16");
    EXPECT_EQ(shmpool::repr_float(0.0001), "0.0001");
    EXPECT_EQ(shmpool::repr_float(0.00001), "1e-05");
    EXPECT_EQ(shmpool::repr_float(1.5e300), "1.5e+300");
    EXPECT_EQ(shmpool::repr_float(-0.0), "-0.0");
    EXPECT_EQ(shmpool::repr_float(-2.75e-7), "-2.75e-07");
    EXPECT_EQ(shmpool::repr_float(std::numeric_limits<double>::infinity()), "inf");
    EXPECT_EQ(shmpool::repr_float(-std::numeric_limits<double>::infinity()), "-inf");
    EXPECT_EQ(shmpool::repr_float(std::nan("")), "nan");
    EXPECT_EQ(shmpool::repr_float(5e-324), "5e-324");
}

TEST(Repr, StrAndBytesMatchCPython) {
    EXPECT_EQ(shmpool::repr(Value("a")), "'a'");
    EXPECT_EQ(shmpool::repr(Value("it's")), "\"it's\"");
    EXPECT_EQ(shmpool::repr(Value("both ' and \"")), "'both \\' and \"'");
    EXPECT_EQ(shmpool::repr(Value("tab\there\n")), "'tab\\there\\n'");
    EXPECT_EQ(shmpool::repr(Value("h\xc3\xa9llo")), "'h\xc3\xa9llo'");
    EXPECT_EQ(shmpool::repr(Value("\x01")), "'\\x01'");
    EXPECT_EQ(shmpool::repr(Value(Bytes(std::string("\x00\xff"
                                                    "a'",
                                                    4)))),
              "b\"\\x00\\xffa'\"");
    EXPECT_EQ(shmpool::repr(Value(Bytes("x"))), "b'x'");
}

TEST(Repr, ScalarsMatchCPython) {
    EXPECT_EQ(shmpool::repr(Value()), "None");
    EXPECT_EQ(shmpool::repr(Value(true)), "True");
    EXPECT_EQ(shmpool::repr(Value(false)), "False");
    EXPECT_EQ(shmpool::repr(Value(-42)), "-42");
    EXPECT_EQ(fmt::format("{}", Value(3)), "3");
}
