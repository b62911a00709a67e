// The worked example of docs/shareable-list-layout.md is exactly what shmpool writes.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <sstream>

#include "shmpool/shm/shareable_list.hpp"
#include "test_support.hpp"

namespace {

// The hex bytes of the dump between the layout-example markers (address and comment columns
// dropped).
std::vector<std::uint8_t> documented_bytes() {
    std::ifstream in(shmpool::test::source_dir() + "/docs/shareable-list-layout.md");
    std::string line;
    bool inside = false;
    std::vector<std::uint8_t> bytes;
    while (std::getline(in, line)) {
        if (line.find("layout-example:begin") != std::string::npos) inside = true;
        if (line.find("layout-example:end") != std::string::npos) break;
        // Dump lines start with a four-digit hex address.
        if (!inside || line.size() < 6 || line[4] != ' ' ||
            line.find_first_not_of("0123456789abcdef") != 4) {
            continue;
        }
        std::istringstream fields(line.substr(6, 24));
        std::string hex;
        while (fields >> hex)
            bytes.push_back(static_cast<std::uint8_t>(std::stoul(hex, nullptr, 16)));
    }
    return bytes;
}

}  // namespace

TEST(LayoutDoc, WorkedExampleIsWhatShmpoolWrites) {
    std::vector<std::uint8_t> doc = documented_bytes();
    ASSERT_EQ(doc.size(), 166u);
    std::string name = shmpool::test::unique_name();
    auto list = shmpool::ShareableList::create(
        name,
        {42, "h\xc3\xa9", shmpool::Bytes(std::string("\x00\x01", 2)), shmpool::none, true, 2.5});
    auto buf = list.shm().buf();
    std::vector<std::uint8_t> written(
        reinterpret_cast<const std::uint8_t*>(buf.data()),
        reinterpret_cast<const std::uint8_t*>(buf.data()) + buf.size());
    EXPECT_EQ(written, doc);
    EXPECT_EQ(list.format(), "q8s8sxxxxxx?xxxxxxxx?d");
    list.unlink();
}
