#include "tc_frame.h"

#include "tc_cobs.h"
#include "tc_crc32.h"

namespace tc {
namespace {

uint16_t load_u16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }

uint32_t load_u32(const uint8_t* p) {
    return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
           (static_cast<uint32_t>(p[2]) << 16) | (static_cast<uint32_t>(p[3]) << 24);
}

}  // namespace

FrameEvent FrameDecoder::feed(uint8_t byte) {
    if (byte != 0) {
        if (count_ < sizeof(buffer_)) {
            buffer_[count_++] = byte;
        } else {
            overflow_ = true;  // keep discarding until the delimiter
        }
        return FrameEvent::none;
    }
    const FrameEvent event = finish();
    count_ = 0;
    overflow_ = false;
    return event;
}

FrameEvent FrameDecoder::finish() {
    if (overflow_) return FrameEvent::too_long;
    if (count_ == 0) return FrameEvent::none;

    size_t raw_length = 0;
    // In place: the decoded frame is never longer than its encoding, so the buffer's own size
    // never limits the decoding and an overlong frame is reported as such below.
    if (!cobs_decode(buffer_, count_, buffer_, sizeof(buffer_), &raw_length)) {
        return FrameEvent::malformed;
    }
    if (raw_length > TC_MAX_RAW_FRAME) return FrameEvent::too_long;
    if (raw_length < TC_HEADER_SIZE + TC_CRC_SIZE) return FrameEvent::malformed;

    const size_t body = raw_length - TC_CRC_SIZE;
    if (crc32(buffer_, body) != load_u32(buffer_ + body)) return FrameEvent::bad_crc;

    const uint16_t length = load_u16(buffer_ + 4);
    if (length != body - TC_HEADER_SIZE) return FrameEvent::malformed;

    frame_.type = buffer_[0];
    frame_.flags = buffer_[1];
    frame_.seq = load_u16(buffer_ + 2);
    frame_.length = length;
    frame_.payload = buffer_ + TC_HEADER_SIZE;
    return FrameEvent::frame;
}

size_t encode_frame(uint8_t type, uint8_t flags, uint16_t seq, const uint8_t* payload,
                    size_t length, uint8_t* out, size_t capacity) {
    if (length > TC_MAX_PAYLOAD || capacity < 1) return 0;
    const uint8_t header[TC_HEADER_SIZE] = {
        type, flags, static_cast<uint8_t>(seq), static_cast<uint8_t>(seq >> 8),
        static_cast<uint8_t>(length), static_cast<uint8_t>(length >> 8)};
    uint32_t crc = crc32(header, sizeof(header));
    crc = crc32(payload, length, crc);
    const uint8_t trailer[TC_CRC_SIZE] = {
        static_cast<uint8_t>(crc), static_cast<uint8_t>(crc >> 8), static_cast<uint8_t>(crc >> 16),
        static_cast<uint8_t>(crc >> 24)};

    CobsWriter writer(out, capacity - 1);  // room for the delimiter
    writer.put(header, sizeof(header));
    writer.put(payload, length);
    writer.put(trailer, sizeof(trailer));
    const size_t n = writer.finish();
    if (n == 0) return 0;
    out[n] = 0;
    return n + 1;
}

}  // namespace tc
