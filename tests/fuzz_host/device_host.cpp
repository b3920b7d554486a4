// The firmware's serial front end built for the host, under AddressSanitizer and
// UndefinedBehaviorSanitizer (tests only). Two modes:
//
//   device_host serve
//       runs the firmware's own main() (firmware/src/main.cpp) with a TCP server for a serial
//       port: the link tests drive the firmware's protocol, sequencer and handlers over a real
//       socket, as they drive the emulated board, in a fraction of the time.
//   device_host fuzz SEED SECONDS [ITERATIONS]
//       feeds random and crafted conversations (valid frames of every request with payloads at
//       and beyond their limits, mutated frames, garbage, overlong frames) to the firmware's
//       dispatcher, handlers and runtime, with a fixed seed. After every conversation the device
//       must still answer a HELLO and a SYNC; every byte it sends must decode as a valid frame.
//       Any sanitizer report aborts the run. Prints one line of counts at the end.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <vector>

#include "bsp.h"
#include "handlers.h"
#include "host_bsp.h"
#include "learn_handlers.h"
#include "model_data.h"
#include "tc_cobs.h"
#include "tc_crc32.h"
#include "tc_dispatch.h"
#include "tc_frame.h"
#include "tc_protocol_spec.h"
#include "tc_runtime.h"

int tc_firmware_main();  // firmware/src/main.cpp, compiled with -Dmain=tc_firmware_main

namespace {

// ---- random numbers (xorshift64*: reproducible from the seed) ----------------------------------
uint64_t g_rng = 1;
uint64_t next() {
    g_rng ^= g_rng >> 12;
    g_rng ^= g_rng << 25;
    g_rng ^= g_rng >> 27;
    return g_rng * 0x2545F4914F6CDD1Dull;
}
uint32_t below(uint32_t n) { return n ? static_cast<uint32_t>(next() % n) : 0; }
bool chance(uint32_t percent) { return below(100) < percent; }

// ---- what the device sends back ----------------------------------------------------------------
struct Checker {
    tc::FrameDecoder decoder;
    uint64_t bytes = 0, frames = 0, bad = 0;
    bool want_info = false, got_info = false;
    bool want_ack = false, got_ack = false;
    uint16_t want_seq = 0;
};
Checker g_check;

size_t sink(const uint8_t* data, size_t n) {
    for (size_t i = 0; i < n; ++i) {
        const tc::FrameEvent e = g_check.decoder.feed(data[i]);
        if (e == tc::FrameEvent::none) continue;
        if (e != tc::FrameEvent::frame) {
            ++g_check.bad;  // the device sent something that is not a valid frame
            continue;
        }
        ++g_check.frames;
        const tc::Frame& f = g_check.decoder.frame();
        if (f.type == TC_MSG_INFO && f.seq == g_check.want_seq && g_check.want_info)
            g_check.got_info = true;
        if (f.type == TC_MSG_ACK && f.seq == g_check.want_seq && g_check.want_ack &&
            f.length >= sizeof(tc_ack_t) && f.payload[0] == TC_STATUS_OK)
            g_check.got_ack = true;
    }
    g_check.bytes += n;
    return n;
}

tc::Responder responder(sink);
tc::Dispatcher dispatcher(app::kRoutes, app::kRouteCount, responder, app::expected_seq);

// ---- building conversations --------------------------------------------------------------------
using Bytes = std::vector<uint8_t>;

void put_frame(Bytes& out, uint8_t type, uint8_t flags, uint16_t seq, const Bytes& payload) {
    static uint8_t wire[TC_MAX_ENCODED_FRAME];
    const size_t n = tc::encode_frame(type, flags, seq, payload.data(), payload.size(), wire,
                                      sizeof(wire));
    out.insert(out.end(), wire, wire + n);
}

// A raw frame with any length field and CRC, COBS-encoded: frames that pass COBS and fail later.
void put_raw(Bytes& out, const Bytes& raw) {
    static uint8_t wire[2 * TC_MAX_ENCODED_FRAME];
    const size_t n = tc::cobs_encode(raw.data(), raw.size(), wire, sizeof(wire));
    out.insert(out.end(), wire, wire + n);
    out.push_back(0);
}

void put16(Bytes& b, uint16_t v) { b.push_back(static_cast<uint8_t>(v)); b.push_back(static_cast<uint8_t>(v >> 8)); }
void put32(Bytes& b, uint32_t v) { put16(b, static_cast<uint16_t>(v)); put16(b, static_cast<uint16_t>(v >> 16)); }
void putf(Bytes& b, float f) { uint32_t v; memcpy(&v, &f, 4); put32(b, v); }

float odd_float() {
    static const float values[] = {0.05f, 0.01f, 0.9f, 0.0f, -1.0f, 1e30f, -1e30f, 1e-40f,
                                   __builtin_nanf(""), __builtin_inff(), -__builtin_inff(), 5.0f};
    if (chance(20)) {
        float f;
        const uint32_t bits = static_cast<uint32_t>(next());
        memcpy(&f, &bits, 4);
        return f;
    }
    return values[below(sizeof(values) / sizeof(values[0]))];
}

uint8_t label() { return chance(90) ? static_cast<uint8_t>(below(8)) : static_cast<uint8_t>(next()); }

Bytes samples_payload(uint16_t max_count, size_t input_size) {
    Bytes p;
    const uint16_t count = chance(80) ? static_cast<uint16_t>(below(max_count + 1))
                                      : static_cast<uint16_t>(next());
    put16(p, count);
    p.push_back(static_cast<uint8_t>(below(8)));  // flags: END_OF_BATCH/EVAL_*, END_OF_TASK
    p.push_back(0);
    const size_t real = count > max_count ? below(max_count + 1) : count;
    for (size_t i = 0; i < real; ++i) p.push_back(label());
    for (size_t i = 0; i < real * input_size; ++i) p.push_back(static_cast<uint8_t>(next()));
    if (chance(10)) p.push_back(static_cast<uint8_t>(next()));      // one byte too many
    if (chance(10) && !p.empty()) p.pop_back();                     // or too few
    if (p.size() > TC_MAX_PAYLOAD) p.resize(TC_MAX_PAYLOAD);
    return p;
}

Bytes request_payload(uint8_t type, size_t input_size) {
    Bytes p;
    switch (type) {
        case TC_MSG_SYNC:
            put32(p, static_cast<uint32_t>(next()));
            break;
        case TC_MSG_UNLOCK: {
            // Mostly the model's own key, so the keyed requests run; sometimes a wrong one.
#if defined(TC_DEVICE_KEY)
            const uint8_t key[TC_DEVICE_KEY_BYTES] = TC_DEVICE_KEY;
#else
            const uint8_t key[TC_DEVICE_KEY_BYTES] = {};
#endif
            p.assign(key, key + TC_DEVICE_KEY_BYTES);
            if (chance(20)) p[below(TC_DEVICE_KEY_BYTES)] ^= static_cast<uint8_t>(1 + below(255));
            if (chance(5)) p.resize(below(TC_DEVICE_KEY_BYTES + 4), 0);
            break;
        }
        case TC_MSG_BEGIN_TASK: {
            const uint16_t n = static_cast<uint16_t>(below(5));
            put16(p, chance(90) ? n : static_cast<uint16_t>(next()));
            for (uint16_t i = 0; i < n; ++i) p.push_back(label());
            break;
        }
        case TC_MSG_TRAIN_CONTROL:
            putf(p, chance(60) ? 0.05f : odd_float());
            putf(p, chance(60) ? 0.5f : odd_float());
            putf(p, chance(60) ? 5.0f : odd_float());
            put16(p, static_cast<uint16_t>(chance(90) ? below(8) : next()));
            put16(p, static_cast<uint16_t>(chance(90) ? below(8) : next()));
            put32(p, static_cast<uint32_t>(next()));
            put16(p, static_cast<uint16_t>(below(4)));
            put16(p, static_cast<uint16_t>(chance(90) ? below(4) : next()));  // balance_steps
            putf(p, chance(60) ? 0.1f : odd_float());                        // balance_lr_scale
            p.push_back(static_cast<uint8_t>(chance(90) ? below(2) : next()));  // asymmetric_ce
            p.insert(p.end(), 3, 0);
            if (chance(10)) p.pop_back();
            break;
        case TC_MSG_TRAIN_SAMPLES:
        case TC_MSG_BUFFER_SAMPLES:
            return samples_payload(16, input_size);
        case TC_MSG_EVAL_SAMPLES:
            return samples_payload(TC_EVAL_MAX_SAMPLES + 2, input_size);
        default:
            if (chance(30))
                for (uint32_t i = below(40); i > 0; --i) p.push_back(static_cast<uint8_t>(next()));
            break;
    }
    return p;
}

uint8_t request_type() {
    static const uint8_t types[] = {TC_MSG_SYNC, TC_MSG_UNLOCK, TC_MSG_BEGIN_TASK,
                                    TC_MSG_TRAIN_CONTROL,
                                    TC_MSG_TRAIN_SAMPLES, TC_MSG_TRAIN_SAMPLES,
                                    TC_MSG_TRAIN_SAMPLES, TC_MSG_BUFFER_SAMPLES,
                                    TC_MSG_EVAL_SAMPLES, TC_MSG_STATS, TC_MSG_SELFTEST,
                                    TC_MSG_HELLO};
    if (chance(5)) {
        const uint8_t t = static_cast<uint8_t>(next());
        return t == TC_MSG_RESET ? TC_MSG_HELLO : t;  // RESET would end the process
    }
    return types[below(sizeof(types))];
}

uint16_t request_seq() {
    const uint16_t expected = app::expected_seq();
    switch (below(6)) {
        case 0: return static_cast<uint16_t>(next());
        case 1: return static_cast<uint16_t>(expected - 1 - below(10));  // a repeat
        case 2: return static_cast<uint16_t>(expected + 1 + below(3));   // past a gap
        default: return expected;
    }
}

void mutate(Bytes& b) {
    for (uint32_t k = 1 + below(3); k > 0 && !b.empty(); --k) {
        const size_t i = below(static_cast<uint32_t>(b.size()));
        switch (below(5)) {
            case 0: b[i] ^= static_cast<uint8_t>(1u << below(8)); break;
            case 1: b.erase(b.begin() + static_cast<long>(i)); break;
            case 2: b.insert(b.begin() + static_cast<long>(i), static_cast<uint8_t>(next())); break;
            case 3: b.resize(i); break;
            default: {
                const size_t n = below(static_cast<uint32_t>(b.size() - i)) + 1;
                Bytes copy(b.begin() + static_cast<long>(i), b.begin() + static_cast<long>(i + n));
                b.insert(b.begin() + static_cast<long>(i), copy.begin(), copy.end());
            }
        }
    }
}

void conversation(Bytes& out, size_t input_size) {
    if (chance(80))  // the session's owner first: the keyed requests run
        put_frame(out, TC_MSG_UNLOCK, 0, app::expected_seq(), request_payload(TC_MSG_UNLOCK, 0));
    for (uint32_t piece = 1 + below(12); piece > 0; --piece) {
        const uint32_t kind = below(100);
        if (kind < 60) {  // a valid request
            const uint8_t type = request_type();
            uint8_t flags = static_cast<uint8_t>(below(16) << TC_FLAG_SEND_SHIFT);
            if (chance(type == TC_MSG_SYNC ? 90 : 3)) flags |= TC_FLAG_SYNC;
            if (chance(3)) flags = static_cast<uint8_t>(next());
            put_frame(out, type, flags, request_seq(), request_payload(type, input_size));
        } else if (kind < 80) {  // a damaged one
            Bytes frame;
            const uint8_t type = request_type();
            put_frame(frame, type, 0, request_seq(), request_payload(type, input_size));
            mutate(frame);
            out.insert(out.end(), frame.begin(), frame.end());
        } else if (kind < 88) {  // garbage, zeros included
            for (uint32_t i = 1 + below(300); i > 0; --i)
                out.push_back(chance(5) ? 0 : static_cast<uint8_t>(next()));
        } else if (kind < 92) {  // longer than any frame before its delimiter
            for (uint32_t i = TC_MAX_ENCODED_FRAME - 3 + below(3000); i > 0; --i)
                out.push_back(static_cast<uint8_t>(1 + below(255)));
            out.push_back(0);
        } else {  // valid COBS, wrong length field, short frames or a wrong CRC
            Bytes raw;
            const uint32_t n = chance(50) ? below(12) : below(TC_MAX_RAW_FRAME + 20);
            for (uint32_t i = 0; i < n; ++i) raw.push_back(static_cast<uint8_t>(next()));
            if (raw.size() >= TC_HEADER_SIZE + TC_CRC_SIZE && chance(70)) {
                const size_t body = raw.size() - TC_CRC_SIZE;
                uint32_t crc = tc::crc32(raw.data(), body);  // a right CRC, a random length
                memcpy(raw.data() + body, &crc, 4);
            }
            put_raw(out, raw);
        }
    }
}

void feed(const Bytes& data) {
    size_t i = 0;
    while (i < data.size()) {
        const size_t n = 1 + below(chance(50) ? 8 : 400);
        const size_t k = n < data.size() - i ? n : data.size() - i;
        dispatcher.receive(data.data() + i, k);
        i += k;
    }
}

// The device must still answer: a HELLO (INFO) and a new session's SYNC (ACK OK).
bool still_answers(uint32_t iteration) {
    Bytes probe = {0};
    g_check.want_seq = static_cast<uint16_t>(next());
    g_check.want_info = true;
    g_check.got_info = false;
    put_frame(probe, TC_MSG_HELLO, 0, g_check.want_seq, Bytes());
    feed(probe);
    g_check.want_info = false;
    if (!g_check.got_info) {
        printf("FINDING: no INFO answer to HELLO after conversation %u\n", iteration);
        return false;
    }
    Bytes sync = {0};
    Bytes nonce;
    put32(nonce, static_cast<uint32_t>(next()));
    g_check.want_seq = static_cast<uint16_t>(next());
    g_check.want_ack = true;
    g_check.got_ack = false;
    put_frame(sync, TC_MSG_SYNC, TC_FLAG_SYNC, g_check.want_seq, nonce);
    feed(sync);
    g_check.want_ack = false;
    if (!g_check.got_ack) {
        printf("FINDING: no ACK to a new session's SYNC after conversation %u\n", iteration);
        return false;
    }
    return true;
}

int fuzz(uint64_t seed, double seconds, uint64_t max_iterations) {
    g_rng = seed * 0x9E3779B97F4A7C15ull + 1;
    host::use_memory(sink);
    host::set_session_id(0x5EED0001u);
    bsp::init();
    const int status = tc_rt_init();
    app::set_runtime_status(status);
    tc_rt_desc desc;
    tc_rt_describe(&desc);
    const size_t input_size = desc.has_model ? desc.input_size : 6;

    timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    uint64_t iterations = 0, fed = 0;
    Bytes data;
    for (;;) {
        clock_gettime(CLOCK_MONOTONIC, &t);
        const double elapsed = (t.tv_sec - t0.tv_sec) + 1e-9 * (t.tv_nsec - t0.tv_nsec);
        if (elapsed >= seconds || (max_iterations && iterations >= max_iterations)) break;
        data.clear();
        conversation(data, input_size);
        feed(data);
        fed += data.size();
        ++iterations;
        if (!still_answers(static_cast<uint32_t>(iterations))) return 1;
        if (g_check.bad) {
            printf("FINDING: the device sent %llu undecodable frames\n",
                   static_cast<unsigned long long>(g_check.bad));
            return 1;
        }
    }
    tc_rt_describe(&desc);
    printf("fuzz seed=%llu iterations=%llu bytes_in=%llu bytes_out=%llu replies=%llu "
           "runtime=%d classes_seen=%u findings=0\n",
           static_cast<unsigned long long>(seed), static_cast<unsigned long long>(iterations),
           static_cast<unsigned long long>(fed), static_cast<unsigned long long>(g_check.bytes),
           static_cast<unsigned long long>(g_check.frames), status, desc.classes_seen);
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc >= 2 && strcmp(argv[1], "serve") == 0) {
        host::use_socket_server();
        return tc_firmware_main();
    }
    if (argc >= 4 && strcmp(argv[1], "fuzz") == 0) {
        return fuzz(strtoull(argv[2], nullptr, 10), atof(argv[3]),
                    argc >= 5 ? strtoull(argv[4], nullptr, 10) : 0);
    }
    fprintf(stderr, "usage: device_host serve | device_host fuzz SEED SECONDS [ITERATIONS]\n");
    return 2;
}
