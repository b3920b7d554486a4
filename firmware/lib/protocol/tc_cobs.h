// Consistent Overhead Byte Stuffing (Cheshire and Baker, 1999): removes every 0x00 from a frame
// so that 0x00 can delimit frames on the wire. Canonical form: a block of 254 non-zero bytes is
// closed by code 0xFF and no empty block follows it at the end of the input.
#pragma once
#include <stddef.h>
#include <stdint.h>

namespace tc {

// Worst-case encoded size of n bytes (without the delimiter).
constexpr size_t cobs_max_encoded(size_t n) { return n + n / 254 + 1; }

// Incremental encoder writing into a caller's buffer, so a frame can be encoded from its pieces
// (header, payload, CRC) without first being copied into one buffer.
class CobsWriter {
public:
    CobsWriter(uint8_t* out, size_t capacity);
    void put(uint8_t byte);
    void put(const uint8_t* data, size_t n);
    // Closes the last block; returns the encoded length, or 0 if the buffer was too small.
    size_t finish();

private:
    void close_block();
    uint8_t* out_;
    size_t capacity_;
    size_t pos_;
    size_t code_pos_;
    uint8_t code_;
    bool after_full_block_;
    bool overflow_;
};

// Encodes n bytes; returns the encoded length or 0 if `capacity` is too small.
size_t cobs_encode(const uint8_t* src, size_t n, uint8_t* dst, size_t capacity);

// Decodes n encoded bytes (no delimiter) into dst; dst may equal src (decoding in place never
// overtakes the input). Returns false on a malformed encoding (a zero byte, a block running past
// the end) or when the output would exceed `capacity`; *out_len is then meaningless.
bool cobs_decode(const uint8_t* src, size_t n, uint8_t* dst, size_t capacity, size_t* out_len);

}  // namespace tc
