// ShareableList: values, CPython's set rules, the fixes over CPython, and validation of bad blocks.
#include "shmpool/shm/shareable_list.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <regex>

#include "test_support.hpp"

using shmpool::Bytes;
using shmpool::CorruptedBlock;
using shmpool::ShareableList;
using shmpool::SharedMemory;
using shmpool::Value;
using shmpool::test::unique_name;
using shmpool::test::Unlinker;

namespace {

std::vector<Value> mixed() {
    return {1, "a", Bytes("x"), shmpool::none, true, 2.5};
}

}  // namespace

TEST(ShareableList, HoldsEveryTypeAndReadsItBack) {
    ShareableList list = ShareableList::create(mixed());
    Unlinker u{list.name()};
    ASSERT_EQ(list.size(), 6u);
    EXPECT_EQ(list.get(0), Value(1));
    EXPECT_EQ(list.get(1), Value("a"));
    EXPECT_EQ(list.get(2), Value(Bytes("x")));
    EXPECT_TRUE(list.get(3).is_none());
    EXPECT_EQ(list.get(4), Value(true));
    EXPECT_EQ(list.get(5), Value(2.5));
    EXPECT_EQ(list.to_vector(), mixed());
}

TEST(ShareableList, ReprMatchesCPython) {
    std::string name = unique_name();
    ShareableList list = ShareableList::create(name, mixed());
    Unlinker u{name};
    EXPECT_EQ(fmt::format("{}", list),
              fmt::format("ShareableList([1, 'a', b'x', None, True, 2.5], name='{}')", name));
}

TEST(ShareableList, FormatMatchesCPython) {
    ShareableList list =
        ShareableList::create({1, "abcdefgh", Bytes("x"), shmpool::none, false, 2.5});
    Unlinker u{list.name()};
    EXPECT_EQ(list.format(), "q16s8sxxxxxx?xxxxxxxx?d");
}

TEST(ShareableList, NegativeIndexesCountFromTheEnd) {
    ShareableList list = ShareableList::create({10, 20, 30});
    Unlinker u{list.name()};
    EXPECT_EQ(list.get(-1), Value(30));
    EXPECT_EQ(list.get(-3), Value(10));
    list.set(-3, 11);
    EXPECT_EQ(list.get(0), Value(11));
}

TEST(ShareableList, IndexOutsideTheListIsOutOfRangeBothWays) {
    ShareableList list = ShareableList::create({10, 20, 30});
    Unlinker u{list.name()};
    for (std::ptrdiff_t bad : {3, 4, -4, -5, 1000}) {
        EXPECT_THROW(list.get(bad), std::out_of_range) << bad;
        // CPython writes slot 0 for some of these; nothing may change here.
        EXPECT_THROW(list.set(bad, 99), std::out_of_range) << bad;
    }
    EXPECT_EQ(list.to_vector(), (std::vector<Value>{10, 20, 30}));
}

TEST(ShareableList, SetChangesTypesByCPythonsRules) {
    ShareableList list = ShareableList::create({1, "abcdefghij", 2.0});
    Unlinker u{list.name()};
    list.set(0, "8 bytes!");  // a str into an 8-byte int slot takes "8s"
    list.set(1, 7);           // an int into a str slot takes "q"
    list.set(2, shmpool::none);
    EXPECT_EQ(list.format(), "8sqxxxxxx?x");
    EXPECT_EQ(list.get(0), Value("8 bytes!"));
    EXPECT_EQ(list.get(1), Value(7));
    EXPECT_TRUE(list.get(2).is_none());
    list.set(1, "back to str, 16");  // the slot still has its 16 bytes
    EXPECT_EQ(list.format(), "8s16sxxxxxx?x");
    EXPECT_EQ(list.get(1), Value("back to str, 16"));
    list.set(1, Bytes("now bytes"));
    EXPECT_EQ(list.get(1), Value(Bytes("now bytes")));
    list.set(2, false);
    EXPECT_EQ(list.get(2), Value(false));
    list.set(2, -1.5);
    EXPECT_EQ(list.get(2), Value(-1.5));
}

TEST(ShareableList, ValueThatDoesNotFitIsLengthErrorAndChangesNothing) {
    ShareableList list = ShareableList::create({"abc", 5});
    Unlinker u{list.name()};
    EXPECT_EQ(list.slot_size(0), 8u);
    EXPECT_THROW(list.set(0, "123456789"), std::length_error);
    EXPECT_THROW(list.set(1, Bytes("123456789")), std::length_error);
    EXPECT_EQ(list.get(0), Value("abc"));
    EXPECT_EQ(list.get(1), Value(5));
    EXPECT_EQ(list.format(), "8sq");
}

TEST(ShareableList, ShorterStrReplacesLongerWithoutLeftovers) {
    ShareableList list = ShareableList::create({"abcdefghijkl"});
    Unlinker u{list.name()};
    list.set(0, "xy");
    EXPECT_EQ(list.get(0), Value("xy"));
}

TEST(ShareableList, NonAsciiStrIsSizedByUtf8BytesWhereCPythonsSizeIsTooSmall) {
    // 7 characters, 21 UTF-8 bytes: CPython would allocate 8 bytes and truncate; here 24. Two
    // characters in 8 bytes fit CPython's 8-byte slot: the same slot (and format) as CPython's.
    std::string text =
        "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\xe3\x83\x86\xe3\x82\xad\xe3\x82\xb9\xe3\x83\x88";
    ShareableList list =
        ShareableList::create({text, "\xf0\x9f\x98\x80\xf0\x9f\x98\x80", "encod\xc3\xa9s"});
    Unlinker u{list.name()};
    EXPECT_EQ(list.slot_size(0), 24u);
    EXPECT_EQ(list.slot_size(1), 8u);
    EXPECT_EQ(list.item_format(2), "8s");  // CPython's test: 7 characters, 8 bytes
    EXPECT_EQ(list.get(0), Value(text));
    EXPECT_EQ(list.get(1), Value("\xf0\x9f\x98\x80\xf0\x9f\x98\x80"));
}

TEST(ShareableList, InvalidUtf8StrIsRefused) {
    EXPECT_THROW(ShareableList::create({"\xff"}), std::invalid_argument);
    ShareableList list = ShareableList::create({"ok"});
    Unlinker u{list.name()};
    EXPECT_THROW(list.set(0, "\xc3"), std::invalid_argument);
    EXPECT_EQ(list.get(0), Value("ok"));
}

TEST(ShareableList, TrailingNulIsRefusedBecauseCPythonWouldStripIt) {
    std::string name = unique_name();
    EXPECT_THROW(ShareableList::create(name, {Bytes(std::string("ab\0", 3))}),
                 std::invalid_argument);
    EXPECT_FALSE(shmpool::test::block_exists(name));
    ShareableList list =
        ShareableList::create({Bytes(std::string("a\0b", 3))});  // inner NUL is fine
    Unlinker u{list.name()};
    EXPECT_EQ(list.get(0), Value(Bytes(std::string("a\0b", 3))));
    EXPECT_THROW(list.set(0, std::string("x\0", 2)), std::invalid_argument);
}

TEST(ShareableList, ItemsLargerThanCPythonsFormatAllowAreRefused) {
    std::string big(ShareableList::max_item_bytes + 1, 'x');
    EXPECT_THROW(ShareableList::create({big}), std::invalid_argument);
    ShareableList list = ShareableList::create({std::string(ShareableList::max_item_bytes, 'x')});
    Unlinker u{list.name()};
    EXPECT_EQ(list.format(), "9999992s");
    EXPECT_EQ(list.get(0).get<std::string>().size(), ShareableList::max_item_bytes);
}

TEST(ShareableList, EmptyStrAndBytesRoundTrip) {
    ShareableList list = ShareableList::create({"", Bytes("")});
    Unlinker u{list.name()};
    EXPECT_EQ(list.format(), "8s8s");
    EXPECT_EQ(list.get(0), Value(""));
    EXPECT_EQ(list.get(1), Value(Bytes("")));
}

TEST(ShareableList, EmptyListIsSixteenBytes) {
    ShareableList list = ShareableList::create(std::vector<Value>{});
    Unlinker u{list.name()};
    EXPECT_EQ(list.size(), 0u);
    EXPECT_EQ(list.shm().size(), 16u);
    EXPECT_EQ(ShareableList::attach(list.name()).size(), 0u);
}

TEST(ShareableList, ExtremeNumbersRoundTrip) {
    const double nan = std::numeric_limits<double>::quiet_NaN();
    ShareableList list = ShareableList::create({std::numeric_limits<std::int64_t>::min(),
                                                std::numeric_limits<std::int64_t>::max(), nan,
                                                -std::numeric_limits<double>::infinity(), -0.0});
    Unlinker u{list.name()};
    EXPECT_EQ(list.get(0).get<std::int64_t>(), std::numeric_limits<std::int64_t>::min());
    EXPECT_EQ(list.get(1).get<std::int64_t>(), std::numeric_limits<std::int64_t>::max());
    EXPECT_TRUE(std::isnan(list.get(2).get<double>()));
    EXPECT_EQ(list.get(3).get<double>(), -std::numeric_limits<double>::infinity());
    EXPECT_TRUE(std::signbit(list.get(4).get<double>()));
}

TEST(ShareableList, CountIndexAndFindUseTypedEquality) {
    ShareableList list = ShareableList::create({1, true, 1.0, 1, "1"});
    Unlinker u{list.name()};
    EXPECT_EQ(list.count(1), 2u);
    EXPECT_EQ(list.count(true), 1u);
    EXPECT_EQ(list.index(1.0), 2u);
    EXPECT_EQ(list.index("1"), 4u);
    EXPECT_FALSE(list.find(2).has_value());
    EXPECT_THROW(list.index(2), std::invalid_argument);
}

TEST(ShareableList, IterationAndProxyAccess) {
    ShareableList list = ShareableList::create({1, 2, 3});
    Unlinker u{list.name()};
    list[1] = "two";
    std::vector<Value> seen(list.begin(), list.end());
    EXPECT_EQ(seen, (std::vector<Value>{1, "two", 3}));
    Value v = list[2];
    EXPECT_EQ(v, Value(3));
    EXPECT_TRUE(list[0] == Value(1));
    static_assert(std::forward_iterator<ShareableList::Iterator>);
}

TEST(ShareableList, CreateFromAnyRange) {
    std::vector<int> ints{4, 5, 6};
    ShareableList list = ShareableList::create(ints);
    Unlinker u{list.name()};
    EXPECT_EQ(list.to_vector(), (std::vector<Value>{4, 5, 6}));
}

TEST(ShareableList, AttachSeesTheSameListAndItsUpdates) {
    std::string name = unique_name();
    ShareableList a = ShareableList::create(name, mixed());
    Unlinker u{name};
    ShareableList b = ShareableList::attach(name);
    EXPECT_EQ(b.to_vector(), mixed());
    a.set(0, "z");
    EXPECT_EQ(b.get(0), Value("z"));
}

TEST(ShareableList, ReadOnlyAttachmentRefusesSets) {
    std::string name = unique_name();
    ShareableList a = ShareableList::create(name, {1});
    Unlinker u{name};
    ShareableList ro = ShareableList::attach(name, {.access = shmpool::Access::read_only});
    EXPECT_EQ(ro.get(0), Value(1));
    try {
        ro.set(0, 2);
        ADD_FAILURE() << "set on a read-only list succeeded";
    } catch (const std::system_error& e) {
        EXPECT_EQ(e.code(), std::errc::read_only_file_system);
    }
}

TEST(ShareableList, CloseKeepsTheBlock) {
    std::string name = unique_name();
    ShareableList list = ShareableList::create(name, {1});
    Unlinker u{name};
    list.close();
    list.close();
    EXPECT_EQ(list.size(), 0u);
    EXPECT_EQ(ShareableList::attach(name).get(0), Value(1));
}

// --- blocks that are not valid lists --------------------------------------------------------

namespace {

// Writes `bytes` into a new block and expects attach to refuse it with CorruptedBlock.
void expect_corrupted(const std::vector<std::uint8_t>& bytes, const std::string& fragment) {
    std::string name = unique_name();
    SharedMemory shm = SharedMemory::create(name, bytes.size());
    Unlinker u{name};
    std::memcpy(shm.data(), bytes.data(), bytes.size());
    try {
        ShareableList::attach(name);
        ADD_FAILURE() << "attach accepted a corrupted block";
    } catch (const CorruptedBlock& e) {
        EXPECT_EQ(e.code(), shmpool::errc::corrupted_block);
        EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    }
    EXPECT_FALSE(ShareableList::is_valid_layout(shm.buf()));
}

// The bytes of a valid list [7] (one int): count, 2 offsets, data, format, code.
std::vector<std::uint8_t> one_int() {
    std::vector<std::uint8_t> b(8 * 4 + 8 + 1, 0);
    b[0] = 1;     // count
    b[16] = 8;    // offsets[1]
    b[24] = 7;    // data
    b[32] = 'q';  // format
    b[40] = 0;    // code
    return b;
}

}  // namespace

TEST(ShareableListCorruption, TheReferenceBytesAreValid) {
    std::string name = unique_name();
    auto bytes = one_int();
    SharedMemory shm = SharedMemory::create(name, bytes.size());
    Unlinker u{name};
    std::memcpy(shm.data(), bytes.data(), bytes.size());
    EXPECT_EQ(ShareableList::attach(name).get(0), Value(7));
}

TEST(ShareableListCorruption, AttachRejectsBadHeadersWithAClearError) {
    expect_corrupted(std::vector<std::uint8_t>(8, 0), "fewer than");
    auto b = one_int();
    std::memset(b.data(), 0xff, 8);
    expect_corrupted(b, "negative");
    b = one_int();
    b[0] = 0;
    b[1] = 0;
    b[7] = 0x10;  // a huge count
    expect_corrupted(b, "does not fit");
    b = one_int();
    b[8] = 8;  // offsets[0] != 0
    expect_corrupted(b, "first offset");
    b = one_int();
    b[16] = 200;  // slot runs past the block
    expect_corrupted(b, "slot of item 0");
    b = one_int();
    b[16] = 4;  // slot too small
    expect_corrupted(b, "slot of item 0");
    b = one_int();
    b[32] = 'z';
    expect_corrupted(b, "unknown struct format");
    b = one_int();
    b[40] = 9;
    expect_corrupted(b, "not 0-3");
    b = one_int();
    b[40] = 1;  // str code with an int format
    expect_corrupted(b, "does not match");
    b = one_int();
    std::memcpy(&b[32], "16s", 3);  // sized format larger than the slot
    b[40] = 1;
    expect_corrupted(b, "slot of 8 bytes");
}

TEST(ShareableListCorruption, GetRechecksItemsChangedAfterAttach) {
    ShareableList list = ShareableList::create({1, "ab"});
    Unlinker u{list.name()};
    SharedMemory raw = SharedMemory::attach(list.name());
    std::byte* formats = raw.data() + 8 * 4 + 16;
    std::byte* codes = formats + 16;
    formats[0] = std::byte{'Z'};
    EXPECT_THROW(list.get(0), CorruptedBlock);
    EXPECT_THROW(list.type_at(0), CorruptedBlock);
    formats[0] = std::byte{'q'};
    EXPECT_EQ(list.get(0), Value(1));
    // A str whose bytes are not UTF-8 (CPython raises UnicodeDecodeError).
    std::byte* data = raw.data() + 8 * 4;
    data[8] = std::byte{0xff};
    try {
        list.get(1);
        ADD_FAILURE() << "invalid UTF-8 accepted";
    } catch (const CorruptedBlock& e) {
        EXPECT_EQ(e.code(), shmpool::errc::invalid_utf8);
    }
    codes[1] = std::byte{2};  // the same bytes read as bytes are fine
    EXPECT_EQ(list.get(1).get<Bytes>().size(), 2u);
}

TEST(ShareableListCorruption, GarbageNeverCrashes) {
    // Deterministic pseudo-random blocks: attach either works or throws CorruptedBlock, and every
    // get either works or throws CorruptedBlock.
    std::uint64_t seed = 12345;
    auto next = [&] {
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        return static_cast<std::uint8_t>(seed >> 56);
    };
    for (int round = 0; round < 300; ++round) {
        std::vector<std::uint8_t> bytes = one_int();
        bytes.resize(16 + round % 64, 0);
        for (std::size_t i = 0; i < bytes.size(); ++i) {
            if (next() < 40) bytes[i] = next();
        }
        std::string name = unique_name();
        SharedMemory shm = SharedMemory::create(name, bytes.size());
        Unlinker u{name};
        std::memcpy(shm.data(), bytes.data(), bytes.size());
        try {
            ShareableList list = ShareableList::attach(name);
            for (std::size_t i = 0; i < list.size(); ++i) {
                try {
                    (void)list.get(static_cast<std::ptrdiff_t>(i));
                } catch (const CorruptedBlock&) {
                }
            }
        } catch (const CorruptedBlock&) {
        }
    }
}
