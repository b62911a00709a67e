// Minimal UTF-8 helpers for the shm layer: validation and decoding of one sequence.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace shmpool::detail {

/// Length of the sequence a lead byte starts (1-4), or 0 for a byte that cannot lead one.
constexpr std::size_t utf8_sequence_length(unsigned char lead) noexcept {
    if (lead < 0x80) return 1;
    if (lead >= 0xc2 && lead <= 0xdf) return 2;
    if (lead >= 0xe0 && lead <= 0xef) return 3;
    if (lead >= 0xf0 && lead <= 0xf4) return 4;
    return 0;
}

/// Whether `text` is well-formed UTF-8 (no overlongs, no surrogates, nothing above U+10FFFF),
/// the same rule as CPython's strict decoder.
inline bool is_valid_utf8(std::string_view text) noexcept {
    const auto* p = reinterpret_cast<const unsigned char*>(text.data());
    const unsigned char* end = p + text.size();
    while (p < end) {
        // ASCII fast path, eight bytes at a time.
        if (end - p >= 8) {
            std::uint64_t chunk;
            std::memcpy(&chunk, p, 8);
            if ((chunk & 0x8080808080808080ULL) == 0) {
                p += 8;
                continue;
            }
        }
        unsigned char c = *p;
        if (c < 0x80) {
            ++p;
            continue;
        }
        std::size_t len = utf8_sequence_length(c);
        if (len == 0 || static_cast<std::size_t>(end - p) < len) return false;
        unsigned char c1 = p[1];
        if (len == 2) {
            if ((c1 & 0xc0) != 0x80) return false;
        } else if (len == 3) {
            if ((c1 & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80) return false;
            if (c == 0xe0 && c1 < 0xa0) return false;   // overlong
            if (c == 0xed && c1 >= 0xa0) return false;  // surrogate
        } else {
            if ((c1 & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80 || (p[3] & 0xc0) != 0x80) return false;
            if (c == 0xf0 && c1 < 0x90) return false;   // overlong
            if (c == 0xf4 && c1 >= 0x90) return false;  // above U+10FFFF
        }
        p += len;
    }
    return true;
}

/// Decodes one well-formed sequence.
inline char32_t utf8_decode(std::string_view seq) noexcept {
    const auto* p = reinterpret_cast<const unsigned char*>(seq.data());
    switch (seq.size()) {
        case 1:
            return p[0];
        case 2:
            return (char32_t(p[0] & 0x1f) << 6) | (p[1] & 0x3f);
        case 3:
            return (char32_t(p[0] & 0x0f) << 12) | (char32_t(p[1] & 0x3f) << 6) | (p[2] & 0x3f);
        default:
            return (char32_t(p[0] & 0x07) << 18) | (char32_t(p[1] & 0x3f) << 12) |
                   (char32_t(p[2] & 0x3f) << 6) | (p[3] & 0x3f);
    }
}

}  // namespace shmpool::detail
