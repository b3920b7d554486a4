// Frames of the serial protocol: COBS(header + payload + crc32) followed by one 0x00.
// Layout (tinycil/protocol_spec.py): type u8, flags u8, seq u16 LE, length u16 LE, payload,
// crc32 u32 LE over everything before it.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "tc_protocol_spec.h"

namespace tc {

struct Frame {
    uint8_t type;
    uint8_t flags;
    uint16_t seq;
    uint16_t length;
    const uint8_t* payload;  // points into the decoder's buffer; valid until the next feed()
};

enum class FrameEvent : uint8_t {
    none,       // byte consumed, no frame completed
    frame,      // a valid frame: see FrameDecoder::frame()
    bad_crc,    // decoded, but the CRC does not match
    malformed,  // bad COBS, shorter than header + CRC, or length field disagrees
    too_long,   // more than TC_MAX_ENCODED_FRAME bytes (or TC_MAX_RAW_FRAME decoded) before 0x00
};

// Streaming decoder fed byte by byte. Every 0x00 ends a frame, so after garbage or a lost byte
// the decoder is back in step at the next delimiter. Empty frames (0x00 0x00) are ignored: a
// sender may start with 0x00 to flush whatever partial frame the receiver holds.
class FrameDecoder {
public:
    FrameEvent feed(uint8_t byte);
    const Frame& frame() const { return frame_; }

private:
    FrameEvent finish();
    // Encoded bytes of the frame in progress; decoded in place at the delimiter.
    uint8_t buffer_[TC_MAX_ENCODED_FRAME - 1];
    size_t count_ = 0;
    bool overflow_ = false;
    Frame frame_{};
};

// Encodes a complete frame (with its delimiter) into `out`. Returns the number of bytes, or 0 if
// the payload is longer than TC_MAX_PAYLOAD or `capacity` is too small (TC_MAX_ENCODED_FRAME
// always suffices).
size_t encode_frame(uint8_t type, uint8_t flags, uint16_t seq, const uint8_t* payload,
                    size_t length, uint8_t* out, size_t capacity);

}  // namespace tc
