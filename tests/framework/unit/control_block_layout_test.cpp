// The control block's bytes, and the slot areas' record formats, as docs/design/slot-protocol.md
// states them: a change here is a change of protocol, and must bump control_layout_version.
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "protocol/control_block.hpp"
#include "protocol/records.hpp"
#include "protocol/slot.hpp"

namespace {

using namespace shmpool::detail;

std::string hex(const std::byte* p, std::size_t n) {
    static constexpr char digits[] = "0123456789abcdef";
    std::string out;
    for (std::size_t i = 0; i < n; ++i) {
        const auto b = static_cast<unsigned>(p[i]);
        out += digits[b >> 4];
        out += digits[b & 15];
    }
    return out;
}

TEST(ControlBlockLayout, TheHeaderHasVersionThreesGoldenBytes) {
    std::vector<std::byte> block(control_size(2, 4096));
    format_control_block(block.data(), {.workers = 2,
                                        .slot_bytes = 4096,
                                        .timeouts = true,
                                        .threads_per_worker = 3,
                                        .measure_busy = false,
                                        .worker_spin_ns = 20000,
                                        .initializer = "init",
                                        .parent_pid = 0x1234,
                                        .max_result_bytes = 0x40000000});
    // magic "SHMPPOOL", version 3, refused_by 0 | workers 2, slot_bytes 4096, bell 0, sleeping 0
    // | helpers 0, timeouts 1, threads 3, measure_busy 0 | worker_spin_ns 20000 | "init" ...
    EXPECT_EQ(hex(block.data(), 64),
              "53484d50504f4f4c0300000000000000"
              "02000000001000000000000000000000"
              "00000000010000000300000000000000"
              "204e000000000000696e697400000000");
    // ... | parent_pid 0x1234, prefault_shared_blocks 0 | max_result_bytes 1 GiB | padding
    EXPECT_EQ(hex(block.data() + 184, 24),
              "34120000000000000000004000000000"
              "0000000000000000");
    EXPECT_EQ(sizeof(ControlHeader), 256u);
    // Each slot: its header, then per buffer a request area and a response area.
    EXPECT_EQ(control_size(2, 4096), 256u + 2 * (128u + 4 * 4096u));
    const ControlView view(block.data());
    EXPECT_EQ(reinterpret_cast<std::byte*>(&view.slot(1)) - block.data(), 256 + 128 + 4 * 4096);
    EXPECT_EQ(view.request(0) - block.data(), 256 + 128);
    EXPECT_EQ(view.response(0) - view.request(0), 4096);
    EXPECT_EQ(view.request(0, 1) - view.request(0), 2 * 4096);
    EXPECT_EQ(view.response(0, 1) - view.request(0, 1), 4096);
}

TEST(ControlBlockLayout, TheSlotHeaderHasVersionThreesOffsets) {
    EXPECT_EQ(offsetof(SlotHeader, doorbell), 0u);
    EXPECT_EQ(offsetof(SlotHeader, worker_sleeping), 4u);
    EXPECT_EQ(offsetof(SlotHeader, attached_pid), 8u);
    EXPECT_EQ(offsetof(SlotHeader, ready_pid), 12u);
    EXPECT_EQ(offsetof(SlotHeader, start_failure), 16u);
    EXPECT_EQ(offsetof(SlotHeader, item_started_ns), 24u);
    EXPECT_EQ(offsetof(SlotHeader, buffers), 64u);
    EXPECT_EQ(sizeof(SlotHeader), 128u);
    EXPECT_EQ(offsetof(BufferHeader, state), 0u);
    EXPECT_EQ(offsetof(BufferHeader, completed), 4u);
    EXPECT_EQ(offsetof(BufferHeader, request_bytes), 8u);
    EXPECT_EQ(offsetof(BufferHeader, response_bytes), 12u);
    EXPECT_EQ(offsetof(BufferHeader, posted), 16u);
    EXPECT_EQ(offsetof(BufferHeader, chunk_busy_ns), 24u);
    EXPECT_EQ(sizeof(BufferHeader), 32u);
    EXPECT_EQ(static_cast<unsigned>(SlotState::queued), 1u);
    EXPECT_EQ(static_cast<unsigned>(SlotState::shutdown), 4u);
}

TEST(ControlBlockLayout, AWorkerTellsAPoolOfItsLayoutFromOthers) {
    std::vector<std::byte> block(control_size(1, 4096));
    EXPECT_EQ(check_control_block(block.data(), block.size(), 0), LayoutCheck::not_a_pool);
    format_control_block(block.data(), {.workers = 1, .slot_bytes = 4096, .initializer = ""});
    EXPECT_EQ(check_control_block(block.data(), block.size(), 0), LayoutCheck::ok);
    EXPECT_EQ(check_control_block(block.data(), block.size(), 1), LayoutCheck::no_such_slot);
    EXPECT_EQ(check_control_block(block.data(), 100, 0), LayoutCheck::not_a_pool);
    reinterpret_cast<ControlPrefix*>(block.data())->layout_version = 99;
    EXPECT_EQ(check_control_block(block.data(), block.size(), 0), LayoutCheck::other_version);
}

TEST(SlotRecords, ARequestHasItsGoldenBytes) {
    std::vector<std::byte> area(64);
    RequestWriter out(area.data(), area.size());
    ASSERT_TRUE(out.begin("t", 0, 0));
    ASSERT_TRUE(out.add_item("ab", 2));
    ASSERT_TRUE(out.add_item("c", 1));
    const std::uint32_t bytes = out.finish(2);
    // [u64 1]["t"][u32 count 2][u32 in 0][u32 out 0] [u64 2]["ab"] [u64 1]["c"]
    EXPECT_EQ(hex(area.data(), bytes),
              "010000000000000074020000000000000000000000"
              "02000000000000006162"
              "010000000000000063");
    const Request r = read_request(area.data(), bytes);
    EXPECT_EQ(r.task, "t");
    EXPECT_EQ(r.count, 2u);
    shmpool::Reader items = r.items;
    EXPECT_EQ(items.raw<std::uint64_t>(), 2u);
    EXPECT_EQ(std::string(items.view(2), 2), "ab");
}

TEST(SlotRecords, AnItemThatDoesNotFitIsRefusedWholeAndATruncatedRequestThrows) {
    std::vector<std::byte> area(32);
    RequestWriter out(area.data(), area.size());
    ASSERT_TRUE(out.begin("task", 0, 0));  // 8 + 4 + 12 = 24 bytes
    EXPECT_FALSE(out.add_item("abcdefgh", 8));
    EXPECT_EQ(out.room(), 8u);
    EXPECT_FALSE(RequestWriter(area.data(), 10).begin("task", 0, 0));
    EXPECT_THROW(read_request(area.data(), 20), std::length_error);
}

TEST(SlotRecords, ResultRecordsHaveTheirGoldenBytesAndReadersNeverOverrun) {
    std::vector<std::byte> area(16);
    RecordWriter out(area.data(), 16);
    ASSERT_TRUE(out.put(RecordKind::value, "xy"));
    ASSERT_TRUE(out.put(RecordKind::error, "z"));
    EXPECT_FALSE(out.put(RecordKind::value, "too long for the rest"));
    EXPECT_EQ(hex(area.data(), out.used()), "0002000000787901010000007a");
    RecordReader in(area.data(), out.used());
    RecordReader::Record r;
    ASSERT_TRUE(in.next(r));
    EXPECT_EQ(r.kind, RecordKind::value);
    EXPECT_EQ(r.bytes, "xy");
    ASSERT_TRUE(in.next(r));
    EXPECT_EQ(r.kind, RecordKind::error);
    EXPECT_FALSE(in.next(r));
    // A length that claims more than was written ends the read.
    area[1] = std::byte{0xff};
    RecordReader bad(area.data(), out.used());
    EXPECT_FALSE(bad.next(r));
}

TEST(SlotRecords, PackedErrorsFollowTheResults) {
    std::vector<std::byte> area(64);
    PackedErrors out(area.data(), 64, 4, 4, 0);  // 4 results of 4 bytes: errors from byte 16
    EXPECT_EQ(out.start(), 16u);
    ASSERT_TRUE(out.fits(2));
    const std::uint32_t end = out.put(2, "ab");
    EXPECT_EQ(end, 16u + 8u + 2u);
    EXPECT_EQ(hex(area.data() + 16, 10), "02000000020000006162");
    PackedErrors in(area.data(), 64, 4, 4, end);
    PackedErrors::Error e;
    ASSERT_TRUE(in.next(e));
    EXPECT_EQ(e.position, 2u);
    EXPECT_EQ(e.payload, "ab");
    EXPECT_FALSE(in.next(e));
}

TEST(SlotRecords, AnErrorPayloadCarriesTypeAndMessageAndNonsenseDecodesAsUnknown) {
    const ErrorText e = read_error_payload(error_payload("std::out_of_range", "no such item"));
    EXPECT_EQ(e.type, "std::out_of_range");
    EXPECT_EQ(e.message, "no such item");
    EXPECT_EQ(read_error_payload("\x01\x02").type, "unknown");
}

}  // namespace
