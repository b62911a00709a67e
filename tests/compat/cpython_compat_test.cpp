// Interop with the machine's CPython: byte-for-byte equal lists, and reads and writes both ways.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "json_codec.hpp"
#include "shmpool/shm/shareable_list.hpp"
#include "test_support.hpp"

using shmpool::CorruptedBlock;
using shmpool::ShareableList;
using shmpool::SharedMemory;
using shmpool::Value;
using shmpool::test::unique_name;
using shmpool::test::Unlinker;

namespace {

shmpool::test::ProcessResult python(std::vector<std::string> args) {
    args.insert(args.begin(), {shmpool::test::python_path(),
                               shmpool::test::source_dir() + "/tests/compat/cpython_peer.py"});
    return shmpool::test::run_process(args);
}

std::string py_ok(std::vector<std::string> args) {
    auto r = python(std::move(args));
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return shmpool::test::chomp(r.out);
}

std::string hex_of(const SharedMemory& shm) {
    std::string out;
    for (std::byte b : shm.buf())
        out += fmt::format("{:02x}", static_cast<unsigned>(b));
    return out;
}

std::vector<Value> values(const std::string& json) {
    return shmpool::cli::values_from_json(shmpool::cli::parse_json(json));
}

// Lists that CPython itself handles correctly (ASCII text, no trailing NULs).
const char* const byte_for_byte_lists[] = {
    "[]",
    R"([1, "a", {"bytes": "78"}, null, true, 2.5])",
    R"(["", "1234567", "12345678", "123456789", "123456789012345", "1234567890123456", "12345678901234567"])",
    R"([{"bytes": ""}, {"bytes": "0001"}, {"bytes": "00112233445566778899aabbccddeeff01"}])",
    R"([-9223372036854775808, 9223372036854775807, 0, -1])",
    R"([0.0, -0.0, 1e-300, 1.7976931348623157e308, {"float": "nan"}, {"float": "inf"}, {"float": "-inf"}])",
    R"([true, false, null, null, true])",
    R"(["it's \"quoted\"", "tab\there", "\u007f"])",
};

}  // namespace

TEST(CPythonCompat, ListsAreByteForByteEqual) {
    for (const char* json : byte_for_byte_lists) {
        std::string ours = unique_name();
        std::string theirs = unique_name();
        Unlinker u{ours, theirs};
        ShareableList list = ShareableList::create(ours, values(json));
        py_ok({"create", theirs, json});
        EXPECT_EQ(hex_of(list.shm()), hex_of(SharedMemory::attach(theirs))) << json;
        EXPECT_EQ(py_ok({"dump", ours}), hex_of(list.shm())) << json;
    }
}

TEST(CPythonCompat, TypeChangingSetsAreByteForByteEqual) {
    const std::string initial = R"([1, "abcdefghij", 2.5, null, true, {"bytes": "0102"}])";
    const std::string sets =
        R"([[0, "8 bytes!"], [1, 7], [2, null], [3, false], [4, "s"], [5, 3.25], [1, "back to str"],
            [0, {"bytes": "ff"}], [-1, "xyz"], [2, -42], [3, "12345678"], [4, 1.5], [-6, null]])";
    std::string ours = unique_name();
    std::string theirs = unique_name();
    Unlinker u{ours, theirs};
    ShareableList list = ShareableList::create(ours, values(initial));
    py_ok({"create", theirs, initial});
    for (const auto& step : shmpool::cli::parse_json(sets)) {
        list.set(step[0].get<std::ptrdiff_t>(), shmpool::cli::value_from_json(step[1]));
    }
    py_ok({"set", theirs, sets});
    EXPECT_EQ(hex_of(list.shm()), hex_of(SharedMemory::attach(theirs)));
    EXPECT_EQ(list.format(), nlohmann::json::parse(py_ok({"read", theirs}))["format"]);
}

TEST(CPythonCompat, CPythonReadsOurListsIncludingNonAsciiText) {
    std::string name = unique_name();
    Unlinker u{name};
    // Sized by UTF-8 bytes, so CPython reads the whole text back (its own lists would truncate).
    ShareableList list = ShareableList::create(
        name,
        {"\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\xe3\x83\x86\xe3\x82\xad\xe3\x82\xb9\xe3\x83\x88",
         "caf\xc3\xa9", "\xf0\x9f\x98\x80", 12, 0.1, shmpool::Bytes("\x00\x01"), shmpool::none,
         true, "quote'", 1e22});
    auto read = nlohmann::json::parse(py_ok({"read", name}));
    std::vector<Value> got;
    for (const auto& v : read["values"])
        got.push_back(shmpool::cli::value_from_json(v));
    EXPECT_EQ(got, list.to_vector());
    EXPECT_EQ(read["format"], list.format());
    EXPECT_EQ(read["repr"], fmt::format("{}", list));  // our repr is CPython's, escapes included
}

TEST(CPythonCompat, WeReadCPythonsLists) {
    const std::string json = R"([42, "caf\u00e9", {"bytes": "00ff"}, null, false, -2.5e-10, "x"])";
    std::string name = unique_name();
    Unlinker u{name};
    py_ok({"create", name, json});
    ShareableList list = ShareableList::attach(name);
    EXPECT_EQ(list.to_vector(), values(json));
    EXPECT_EQ(list.format(), nlohmann::json::parse(py_ok({"read", name}))["format"]);
}

TEST(CPythonCompat, CPythonWritesWeRead) {
    std::string name = unique_name();
    Unlinker u{name};
    ShareableList list = ShareableList::create(name, {0, "0123456789abcdef", 0.0, shmpool::none});
    py_ok({"set", name,
           R"([[0, "py"], [1, 99], [2, true], [3, {"bytes": "7071"}], [-3, "caf\u00e9"]])"});
    EXPECT_EQ(list.to_vector(),
              (std::vector<Value>{"py", "caf\xc3\xa9", true, shmpool::Bytes("pq")}));
}

TEST(CPythonCompat, WeWriteCPythonReads) {
    std::string name = unique_name();
    Unlinker u{name};
    py_ok({"create", name, R"([1, 2, 3, "abcdefgh"])"});
    ShareableList list = ShareableList::attach(name);
    list.set(0, "ab");
    list.set(1, shmpool::none);
    list.set(2, shmpool::Bytes("\x7f"));
    list.set(3, "\xc3\xa9t\xc3\xa9");
    auto read = nlohmann::json::parse(py_ok({"read", name}));
    EXPECT_EQ(read["values"],
              nlohmann::json::parse(R"(["ab", null, {"bytes": "7f"}, "\u00e9t\u00e9"])"));
}

TEST(CPythonCompat, TextCPythonTruncatedIsAnErrorNotGarbage) {
    // CPython sizes this 7-character str at 8 bytes and cuts its 21 UTF-8 bytes mid-character;
    // CPython itself then fails to read it back (UnicodeDecodeError). We fail the same way.
    std::string name = unique_name();
    Unlinker u{name};
    py_ok({"create", name, R"(["\u65e5\u672c\u8a9e\u30c6\u30ad\u30b9\u30c8", 1])"});
    EXPECT_EQ(nlohmann::json::parse(py_ok({"get", name, "0"}))["error"], "UnicodeDecodeError");
    ShareableList list = ShareableList::attach(name);
    try {
        (void)list.get(0);
        ADD_FAILURE() << "truncated UTF-8 was returned";
    } catch (const CorruptedBlock& e) {
        EXPECT_EQ(e.code(), shmpool::errc::invalid_utf8);
    }
    EXPECT_EQ(list.get(1), Value(1));
}

TEST(CPythonCompat, CliShowJsonMatchesWhatCPythonReads) {
    std::string name = unique_name();
    Unlinker u{name};
    py_ok({"create", name, R"([3, 0.5, "s", {"bytes": "01"}, null, true])"});
    auto r = shmpool::test::run_process({shmpool::test::cli_path(), "show", name, "--json"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(nlohmann::json::parse(r.out), nlohmann::json::parse(py_ok({"read", name}))["values"]);
}
