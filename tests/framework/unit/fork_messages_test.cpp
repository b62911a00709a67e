// The messages between a pool and its fork server (protocol/fork_messages.hpp), byte for byte: a
// change here is a change of that protocol, and must bump fork_protocol::version.
#include "protocol/fork_messages.hpp"

#include <gtest/gtest.h>

#include <cstddef>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace {

namespace fp = shmpool::detail::fork_protocol;

std::string hex(std::string_view bytes) {
    static constexpr char digits[] = "0123456789abcdef";
    std::string out;
    for (const char c : bytes) {
        const auto b = static_cast<unsigned char>(c);
        out += digits[b >> 4];
        out += digits[b & 15];
    }
    return out;
}

TEST(ForkMessages, ASpawnRequestHasVersionOnesGoldenBytes) {
    EXPECT_EQ(fp::version, 1u);
    const std::string bytes = fp::encode_request({"SHMPOOL_WORKER=3", "A=b"});
    // magic "FRKS" (little-endian), kind 2 (spawn), 2 entries, reserved; then the entries.
    EXPECT_EQ(hex(bytes.substr(0, sizeof(fp::RequestHead))), "46524b53020000000200000000000000");
    EXPECT_EQ(bytes.substr(sizeof(fp::RequestHead)), std::string("SHMPOOL_WORKER=3\0A=b\0", 21));
}

TEST(ForkMessages, AReplyHasVersionOnesGoldenBytes) {
    const fp::Reply exited{.kind = fp::Kind::exited, .pid = 0x1234, .value = 9, .peak_rss_kb = 77};
    std::string bytes(sizeof exited, '\0');
    std::memcpy(bytes.data(), &exited, sizeof exited);
    // magic, kind 5 (exited), pid, wait status, peak RSS in KiB (8 bytes).
    EXPECT_EQ(hex(bytes), "46524b530500000034120000090000004d00000000000000");
}

TEST(ForkMessages, ARequestDecodesToItsEntries) {
    std::vector<std::string_view> env;
    const std::string bytes = fp::encode_request({"SHMPOOL_WORKER=0", "EMPTY=", "X=a=b"});
    ASSERT_TRUE(fp::decode_request(bytes, env));
    EXPECT_EQ(env, (std::vector<std::string_view>{"SHMPOOL_WORKER=0", "EMPTY=", "X=a=b"}));
    ASSERT_TRUE(fp::decode_request(fp::encode_request({}), env));
    EXPECT_TRUE(env.empty());
}

TEST(ForkMessages, BytesThatAreNoRequestAreRefused) {
    std::vector<std::string_view> env;
    const std::string good = fp::encode_request({"A=1", "B=2"});
    EXPECT_FALSE(fp::decode_request(good.substr(0, 8), env)) << "shorter than the head";
    EXPECT_FALSE(fp::decode_request(good.substr(0, good.size() - 1), env))
        << "an unterminated entry";
    EXPECT_FALSE(fp::decode_request(good + "C=3", env)) << "bytes past the last entry";
    std::string wrong_magic = good;
    wrong_magic[0] = 'X';
    EXPECT_FALSE(fp::decode_request(wrong_magic, env));
    std::string wrong_kind = good;
    wrong_kind[4] = 3;  // spawned: a reply, not a request
    EXPECT_FALSE(fp::decode_request(wrong_kind, env));
}

}  // namespace
