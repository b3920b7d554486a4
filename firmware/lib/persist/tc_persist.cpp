#include "tc_persist.h"

#include <string.h>

#include "tc_crc32.h"

namespace {

// Header field offsets (all little-endian).
constexpr uint32_t kOffMagic = 0;
constexpr uint32_t kOffVersion = 4;      // u16
constexpr uint32_t kOffHeaderBytes = 6;  // u16
constexpr uint32_t kOffSignature = 8;    // u8[8]
constexpr uint32_t kOffSequence = 16;
constexpr uint32_t kOffPayloadBytes = 20;
constexpr uint32_t kOffPayloadCrc = 24;
constexpr uint32_t kOffHeaderCrc = 28;   // the last word: programmed last of all
constexpr uint32_t kErased = 0xFFFFFFFFu;

// Payload bytes staged before each program operation (a multiple of any program unit allowed).
constexpr uint32_t kStageBytes = 256;

uint32_t get32(const uint8_t* p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
uint16_t get16(const uint8_t* p) { return (uint16_t)(p[0] | p[1] << 8); }
void put32(uint8_t* p, uint32_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}
void put16(uint8_t* p, uint16_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

// Serial-number order: a is newer than b when it is less than half the number space ahead.
bool newer(uint32_t a, uint32_t b) { return (int32_t)(a - b) > 0; }

bool medium_ok(const tc_persist_medium* m) {
    return m != nullptr && m->slot_size > TC_PERSIST_HEADER_BYTES && m->program_unit >= 1 &&
           m->program_unit <= 16 && (m->program_unit & (m->program_unit - 1)) == 0 &&
           TC_PERSIST_HEADER_BYTES % m->program_unit == 0 && m->erase && m->program && m->view;
}

// Streams the payload into the slot being written, after its header.
struct SlotWriter {
    tc_state_writer base;  // the writer handed to the producer; its ctx points here
    const tc_persist_medium* m;
    int slot;
    uint32_t written;      // payload bytes programmed so far
    uint32_t total;        // payload bytes received
    uint32_t crc;
    uint32_t staged;
    int failure;           // TC_PERSIST_* once something went wrong
    alignas(4) uint8_t stage[kStageBytes];

    bool flush(bool last) {
        uint32_t n = staged;
        if (last) {  // pad the tail to whole program units with 0xFF, which programs nothing
            while (n % m->program_unit) stage[n++] = 0xFF;
        }
        if (n == 0) return true;
        if (!m->program(m->ctx, slot, TC_PERSIST_HEADER_BYTES + written, stage, n)) {
            failure = TC_PERSIST_PROGRAM_FAILED;
            return false;
        }
        written += n;
        staged = 0;
        return true;
    }

    static int write(tc_state_writer* self, const void* data, uint32_t n) {
        SlotWriter* w = static_cast<SlotWriter*>(self->ctx);
        if (w->failure) return 1;
        const uint32_t room = w->m->slot_size - TC_PERSIST_HEADER_BYTES;
        if (n > room - w->total) {
            w->failure = TC_PERSIST_TOO_LARGE;
            return 1;
        }
        const uint8_t* p = static_cast<const uint8_t*>(data);
        w->crc = tc::crc32(p, n, w->crc);
        w->total += n;
        while (n > 0) {
            uint32_t k = kStageBytes - w->staged;
            if (k > n) k = n;
            memcpy(w->stage + w->staged, p, k);
            w->staged += k;
            p += k;
            n -= k;
            if (w->staged == kStageBytes && !w->flush(false)) return 1;
        }
        return 0;
    }
};

// The dry run's writer: measures the payload and its CRC, refuses what would not fit a slot.
struct MeasureWriter {
    tc_state_writer base;
    uint32_t room;
    uint32_t total;
    uint32_t crc;
    int failure;

    static int write(tc_state_writer* self, const void* data, uint32_t n) {
        MeasureWriter* w = static_cast<MeasureWriter*>(self->ctx);
        if (w->failure) return 1;
        if (n > w->room - w->total) {
            w->failure = TC_PERSIST_TOO_LARGE;
            return 1;
        }
        w->crc = tc::crc32(static_cast<const uint8_t*>(data), n, w->crc);
        w->total += n;
        return 0;
    }
};

// The save's result for a producer's return value (0 when it succeeded).
int producer_status(int produced) {
    if (produced == 0) return TC_PERSIST_OK;
    if (produced >= TC_PERSIST_TOO_LARGE && produced <= TC_PERSIST_NOT_FINITE &&
        produced != TC_PERSIST_REJECTED)
        return produced;
    return TC_PERSIST_PRODUCER_FAILED;
}

struct BytesProducer {
    const uint8_t* data;
    uint32_t n;
    static int produce(tc_state_writer* w, void* arg) {
        const BytesProducer* b = static_cast<const BytesProducer*>(arg);
        return w->write(w, b->data, b->n);
    }
};

}  // namespace

int tc_persist_check_slot(const tc_persist_medium* m, int slot, const uint8_t signature[8],
                          tc_persist_slot_info* out) {
    if (!medium_ok(m) || slot < 0 || slot >= TC_PERSIST_SLOTS) return TC_PERSIST_UNAVAILABLE;
    const uint8_t* h = m->view(m->ctx, slot);
    if (h == nullptr) return TC_PERSIST_UNAVAILABLE;
    if (get32(h + kOffMagic) != TC_PERSIST_MAGIC ||
        get16(h + kOffVersion) != TC_PERSIST_FORMAT_VERSION ||
        get16(h + kOffHeaderBytes) != TC_PERSIST_HEADER_BYTES ||
        tc::crc32(h, kOffHeaderCrc) != get32(h + kOffHeaderCrc))
        return TC_PERSIST_NOTHING;
    if (memcmp(h + kOffSignature, signature, 8) != 0) return TC_PERSIST_NOTHING;
    const uint32_t n = get32(h + kOffPayloadBytes);
    if (n > m->slot_size - TC_PERSIST_HEADER_BYTES) return TC_PERSIST_NOTHING;
    const uint8_t* payload = h + TC_PERSIST_HEADER_BYTES;
    if (tc::crc32(payload, n) != get32(h + kOffPayloadCrc)) return TC_PERSIST_NOTHING;
    if (out) {
        out->slot = slot;
        out->sequence = get32(h + kOffSequence);
        out->payload_bytes = n;
        out->payload = payload;
    }
    return TC_PERSIST_OK;
}

int tc_persist_find(const tc_persist_medium* m, const uint8_t signature[8],
                    tc_persist_slot_info* out) {
    if (!medium_ok(m)) return TC_PERSIST_UNAVAILABLE;
    tc_persist_slot_info best = {-1, 0, 0, nullptr};
    for (int s = 0; s < TC_PERSIST_SLOTS; ++s) {
        tc_persist_slot_info info;
        if (tc_persist_check_slot(m, s, signature, &info) != TC_PERSIST_OK) continue;
        if (best.slot < 0 || newer(info.sequence, best.sequence)) best = info;
    }
    if (out) *out = best;
    return best.slot < 0 ? TC_PERSIST_NOTHING : TC_PERSIST_OK;
}

int tc_persist_save_keeping(const tc_persist_medium* m, const uint8_t signature[8], int keep,
                            tc_persist_producer produce, void* arg, tc_persist_slot_info* out) {
    if (!medium_ok(m)) return TC_PERSIST_UNAVAILABLE;
    tc_persist_slot_info newest;
    const bool have = tc_persist_find(m, signature, &newest) == TC_PERSIST_OK;
    // The slot to write: never `keep`, the state the caller runs (which need not be the newest
    // valid one: a runtime that refused the newest at boot runs the older). Without one, never
    // the newest valid slot: with two valid slots, the older is written.
    const int target = (keep == 0 || keep == 1) ? 1 - keep : have ? 1 - newest.slot : 0;
    // Newer than every valid save, so the new state is the one loaded next.
    uint32_t sequence = have ? newest.sequence + 1u : 1u;

    // Dry run: nothing is erased before the producer has succeeded and its payload fits, so a
    // save that fails there (a half-formed mini-batch, a state too large, non-finite weights)
    // leaves both slots as they were.
    MeasureWriter dry;
    dry.base.write = &MeasureWriter::write;
    dry.base.ctx = &dry;
    dry.room = m->slot_size - TC_PERSIST_HEADER_BYTES;
    dry.total = dry.crc = 0;
    dry.failure = 0;
    const int dry_status = producer_status(produce(&dry.base, arg));
    if (dry.failure) return dry.failure;
    if (dry_status != TC_PERSIST_OK) return dry_status;

    if (!m->erase(m->ctx, target)) return TC_PERSIST_ERASE_FAILED;

    SlotWriter w;
    w.base.write = &SlotWriter::write;
    w.base.ctx = &w;
    w.m = m;
    w.slot = target;
    w.written = w.total = w.crc = w.staged = 0;
    w.failure = 0;
    const int produced = producer_status(produce(&w.base, arg));
    if (w.failure) return w.failure;
    if (produced != TC_PERSIST_OK) return produced;
    if (!w.flush(true)) return w.failure;
    // The producer must have written what its dry run measured.
    if (w.total != dry.total || w.crc != dry.crc) return TC_PERSIST_PRODUCER_FAILED;

    // Read back: the payload as programmed must carry the CRC of what the producer wrote.
    const uint8_t* view = m->view(m->ctx, target);
    if (tc::crc32(view + TC_PERSIST_HEADER_BYTES, w.total) != w.crc)
        return TC_PERSIST_VERIFY_FAILED;

    // The commit record. An erased word reads 0xFFFFFFFF, so a header CRC of that value could not
    // be told from "not yet programmed": skip such a sequence number (1 in 2^32).
    alignas(4) uint8_t h[TC_PERSIST_HEADER_BYTES];
    uint32_t header_crc = kErased;
    while (header_crc == kErased) {
        put32(h + kOffMagic, TC_PERSIST_MAGIC);
        put16(h + kOffVersion, TC_PERSIST_FORMAT_VERSION);
        put16(h + kOffHeaderBytes, TC_PERSIST_HEADER_BYTES);
        memcpy(h + kOffSignature, signature, 8);
        put32(h + kOffSequence, sequence);
        put32(h + kOffPayloadBytes, w.total);
        put32(h + kOffPayloadCrc, w.crc);
        header_crc = tc::crc32(h, kOffHeaderCrc);
        if (header_crc == kErased) ++sequence;
    }
    put32(h + kOffHeaderCrc, header_crc);
    // In ascending order, so the header CRC word is the very last one programmed.
    for (uint32_t off = 0; off < TC_PERSIST_HEADER_BYTES; off += m->program_unit) {
        if (!m->program(m->ctx, target, off, h + off, m->program_unit))
            return TC_PERSIST_PROGRAM_FAILED;
    }
    if (memcmp(view, h, TC_PERSIST_HEADER_BYTES) != 0) return TC_PERSIST_VERIFY_FAILED;
    tc_persist_slot_info info;
    if (tc_persist_check_slot(m, target, signature, &info) != TC_PERSIST_OK)
        return TC_PERSIST_VERIFY_FAILED;
    if (out) *out = info;
    return TC_PERSIST_OK;
}

int tc_persist_save(const tc_persist_medium* m, const uint8_t signature[8],
                    tc_persist_producer produce, void* arg, tc_persist_slot_info* out) {
    return tc_persist_save_keeping(m, signature, -1, produce, arg, out);
}

int tc_persist_save_bytes(const tc_persist_medium* m, const uint8_t signature[8],
                          const uint8_t* payload, uint32_t n, tc_persist_slot_info* out) {
    BytesProducer b = {payload, n};
    return tc_persist_save(m, signature, &BytesProducer::produce, &b, out);
}

const char* tc_persist_status_name(int status) {
    switch (status) {
        case TC_PERSIST_OK: return "ok";
        case TC_PERSIST_NOTHING: return "no saved state for this model";
        case TC_PERSIST_UNAVAILABLE: return "no persistence slots in this build (TC_PERSIST=1)";
        case TC_PERSIST_TOO_LARGE: return "state larger than a slot";
        case TC_PERSIST_ERASE_FAILED: return "flash erase failed";
        case TC_PERSIST_PROGRAM_FAILED: return "flash program failed";
        case TC_PERSIST_VERIFY_FAILED: return "flash read-back differs from what was written";
        case TC_PERSIST_PRODUCER_FAILED: return "the state could not be serialised";
        case TC_PERSIST_REJECTED: return "the runtime refused the saved state";
        case TC_PERSIST_NOT_FINITE:
            return "the learned state holds NaN or infinite weights: not saved (lower the "
                   "learning rate)";
        default: return "unknown";
    }
}
