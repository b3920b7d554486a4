// Request dispatch: decoded frames go to a handler picked by message type from a table; decoder
// errors and unknown types are answered with STATUS frames. Independent of any board, so the
// host build of the protocol runs exactly this code in the tests.
#pragma once
#include <stddef.h>
#include <stdint.h>

#include "tc_frame.h"
#include "tc_protocol_spec.h"

namespace tc {

// Builds reply frames and hands them to the transport.
class Responder {
public:
    using WriteFn = size_t (*)(const uint8_t* data, size_t n);
    explicit Responder(WriteFn write) : write_(write) {}

    // Sends one frame; false if the payload is too long (nothing is sent then).
    bool send(uint8_t type, uint16_t seq, const void* payload, size_t length,
              uint8_t flags = TC_FLAG_NONE);

    // STATUS: u8 code, u8 reserved, u16 detail (LE), then UTF-8 text (cut to fit).
    void status(uint16_t seq, uint8_t code, uint16_t detail = 0, const char* text = "");

    // LOG: UTF-8 text from the device, seq 0.
    void log(const char* text);

private:
    WriteFn write_;
    uint8_t buffer_[TC_MAX_ENCODED_FRAME];
    uint8_t payload_[TC_MAX_PAYLOAD];
};

using HandlerFn = void (*)(const Frame& request, Responder& out);

struct Route {
    uint8_t type;
    HandlerFn handler;
};

class Dispatcher {
public:
    // The seq the device expects next, for the detail of a damage report (see below).
    using ExpectedFn = uint16_t (*)();

    Dispatcher(const Route* routes, size_t count, Responder& out, ExpectedFn expected = nullptr)
        : routes_(routes), count_(count), out_(out), expected_(expected) {}

    // Feeds received bytes through the decoder; every completed frame or error gets its answer.
    // A damaged frame (BAD_CRC, MALFORMED, TOO_LONG) is answered at once with seq 0 and detail =
    // the seq the device expects next, so the host resends from there without a timeout.
    void receive(const uint8_t* data, size_t n);

    // Handles one decoder event (the frame is read from `decoder` when event is `frame`).
    void handle(FrameEvent event, const Frame& frame);

private:
    const Route* routes_;
    size_t count_;
    Responder& out_;
    ExpectedFn expected_;
    FrameDecoder decoder_;
};

}  // namespace tc
