#include "tc_crc32.h"

namespace tc {
namespace {

struct Table {
    uint32_t entry[256];
};

constexpr Table make_table() {
    Table table{};
    for (uint32_t i = 0; i < 256; ++i) {
        uint32_t c = i;
        for (int bit = 0; bit < 8; ++bit) c = (c & 1u) ? (c >> 1) ^ 0xEDB88320u : c >> 1;
        table.entry[i] = c;
    }
    return table;
}

// Computed by the compiler, stored in flash: 1 KB for a byte-at-a-time CRC.
constexpr Table kTable = make_table();

}  // namespace

uint32_t crc32(const uint8_t* data, size_t n, uint32_t crc) {
    crc = ~crc;
    for (size_t i = 0; i < n; ++i) crc = kTable.entry[(crc ^ data[i]) & 0xFFu] ^ (crc >> 8);
    return ~crc;
}

}  // namespace tc
