#include "tc_dispatch.h"

#include <string.h>

namespace tc {

bool Responder::send(uint8_t type, uint16_t seq, const void* payload, size_t length,
                     uint8_t flags) {
    const size_t n = encode_frame(type, flags, seq, static_cast<const uint8_t*>(payload), length,
                                  buffer_, sizeof(buffer_));
    if (n == 0) return false;
    write_(buffer_, n);
    return true;
}

void Responder::status(uint16_t seq, uint8_t code, uint16_t detail, const char* text) {
    size_t text_length = strlen(text);
    if (text_length > TC_MAX_PAYLOAD - 4) text_length = TC_MAX_PAYLOAD - 4;
    payload_[0] = code;
    payload_[1] = 0;
    payload_[2] = static_cast<uint8_t>(detail);
    payload_[3] = static_cast<uint8_t>(detail >> 8);
    memcpy(payload_ + 4, text, text_length);
    send(TC_MSG_STATUS, seq, payload_, 4 + text_length);
}

void Responder::log(const char* text) {
    size_t text_length = strlen(text);
    if (text_length > TC_MAX_PAYLOAD) text_length = TC_MAX_PAYLOAD;
    send(TC_MSG_LOG, 0, text, text_length);
}

void Dispatcher::receive(const uint8_t* data, size_t n) {
    for (size_t i = 0; i < n; ++i) {
        const FrameEvent event = decoder_.feed(data[i]);
        if (event != FrameEvent::none) handle(event, decoder_.frame());
    }
}

void Dispatcher::handle(FrameEvent event, const Frame& frame) {
    // A frame that failed its checks has no sequence number worth trusting: reply with seq 0,
    // and tell which seq the device still waits for (most likely the damaged frame's).
    const uint16_t expected = expected_ ? expected_() : 0;
    switch (event) {
        case FrameEvent::none:
            return;
        case FrameEvent::bad_crc:
            out_.status(0, TC_STATUS_BAD_CRC, expected, "frame CRC mismatch");
            return;
        case FrameEvent::malformed:
            out_.status(0, TC_STATUS_MALFORMED, expected, "malformed frame");
            return;
        case FrameEvent::too_long:
            out_.status(0, TC_STATUS_TOO_LONG, expected, "frame too long");
            return;
        case FrameEvent::frame:
            break;
    }
    for (size_t i = 0; i < count_; ++i) {
        if (routes_[i].type == frame.type) {
            routes_[i].handler(frame, out_);
            return;
        }
    }
    out_.status(frame.seq, TC_STATUS_UNKNOWN_TYPE, frame.type, "unknown message type");
}

}  // namespace tc
