// CRC-32 of IEEE 802.3 (zlib, PNG, Ethernet): reflected polynomial 0xEDB88320, initial value and
// final xor 0xFFFFFFFF. Python's zlib.crc32 computes the same value.
#pragma once
#include <stddef.h>
#include <stdint.h>

namespace tc {

// Continues a CRC: start with crc = 0 for a new message, or pass the previous result to extend.
uint32_t crc32(const uint8_t* data, size_t n, uint32_t crc = 0);

}  // namespace tc
