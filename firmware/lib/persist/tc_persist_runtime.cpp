#include "tc_persist_runtime.h"

#include <string.h>

#include "tc_protocol_spec.h"
#include "tc_runtime.h"

namespace {

// Checks, as the state streams past, that every float of it is finite: the training parameters
// of the fixed part and every tail weight and bias. It follows the layout tc_runtime.h documents
// (TC_RT_STATE_VERSION 1): the fixed part (TC_RT_STATE_FIXED_BYTES, n_tail at byte 2, lr,
// momentum and clip_norm at bytes 16, 20, 24), then per tail layer u16 in, u16 out and
// (out * in + out) floats, then the replay samples (bytes, not checked). A float is not finite
// when its exponent bits are all ones (IEEE 754 binary32: NaN or infinity).
struct FiniteScan {
    tc_state_writer base;
    tc_state_writer* inner;  // where the bytes go after the scan
    enum Phase { kFixed, kLayerHead, kFloats, kRest } phase;
    uint8_t fixed[TC_RT_STATE_FIXED_BYTES];
    uint32_t at;             // bytes of the current piece (fixed part, layer head, float) so far
    uint8_t word[4];
    uint16_t layers_left;
    uint32_t floats_left;
    bool finite;

    static bool finite_bits(const uint8_t* p) {
        uint32_t u;
        memcpy(&u, p, 4);
        return (u & 0x7F800000u) != 0x7F800000u;
    }

    void next_layer() {
        at = 0;
        phase = layers_left > 0 ? kLayerHead : kRest;
    }

    void take(uint8_t b) {
        switch (phase) {
            case kFixed:
                fixed[at++] = b;
                if (at == TC_RT_STATE_FIXED_BYTES) {
                    memcpy(&layers_left, fixed + 2, 2);
                    for (uint32_t off = 16; off < 28; off += 4)
                        if (!finite_bits(fixed + off)) finite = false;
                    next_layer();
                }
                break;
            case kLayerHead:
                word[at++] = b;
                if (at == TC_RT_STATE_LAYER_BYTES) {
                    uint16_t in, out;
                    memcpy(&in, word, 2);
                    memcpy(&out, word + 2, 2);
                    floats_left = static_cast<uint32_t>(out) * in + out;
                    --layers_left;
                    at = 0;
                    if (floats_left > 0) phase = kFloats;
                    else next_layer();
                }
                break;
            case kFloats:
                word[at++] = b;
                if (at == 4) {
                    if (!finite_bits(word)) finite = false;
                    at = 0;
                    if (--floats_left == 0) next_layer();
                }
                break;
            case kRest:
                break;
        }
    }

    static int write(tc_state_writer* self, const void* data, uint32_t n) {
        FiniteScan* s = static_cast<FiniteScan*>(self->ctx);
        const uint8_t* p = static_cast<const uint8_t*>(data);
        for (uint32_t i = 0; i < n && s->phase != kRest; ++i) s->take(p[i]);
        return s->inner->write(s->inner, data, n);
    }
};

int produce_runtime_state(tc_state_writer* w, void*) {
    FiniteScan scan;
    scan.base.write = &FiniteScan::write;
    scan.base.ctx = &scan;
    scan.inner = w;
    scan.phase = FiniteScan::kFixed;
    scan.at = 0;
    scan.layers_left = 0;
    scan.floats_left = 0;
    scan.finite = true;
    static_assert(TC_RT_STATE_VERSION == 1, "FiniteScan follows state format version 1");
    if (tc_rt_save_state(&scan.base) != TC_STATUS_OK) return TC_PERSIST_PRODUCER_FAILED;
    // Checked on the dry run, before anything is erased: a diverged state never reaches flash.
    return scan.finite ? 0 : TC_PERSIST_NOT_FINITE;
}

bool model_signature(uint8_t signature[8]) {
    tc_rt_desc d;
    tc_rt_describe(&d);
    for (int i = 0; i < 8; ++i) signature[i] = d.signature[i];
    return d.has_model != 0;
}

}  // namespace

int tc_persist_save_runtime(const tc_persist_medium* m, int running_slot,
                            tc_persist_slot_info* out) {
    uint8_t signature[8];
    if (!model_signature(signature)) return TC_PERSIST_PRODUCER_FAILED;
    return tc_persist_save_keeping(m, signature, running_slot, &produce_runtime_state, nullptr,
                                   out);
}

int tc_persist_load_runtime(const tc_persist_medium* m, tc_persist_slot_info* out) {
    uint8_t signature[8];
    if (!model_signature(signature)) return TC_PERSIST_NOTHING;
    tc_persist_slot_info slots[TC_PERSIST_SLOTS];
    int n = 0;
    for (int s = 0; s < TC_PERSIST_SLOTS; ++s) {
        const int status = tc_persist_check_slot(m, s, signature, &slots[n]);
        if (status == TC_PERSIST_UNAVAILABLE) return status;
        if (status == TC_PERSIST_OK) ++n;
    }
    if (n == 0) return TC_PERSIST_NOTHING;
    // Newest first (serial-number order, as tc_persist_find).
    if (n == 2 && (int32_t)(slots[1].sequence - slots[0].sequence) > 0) {
        const tc_persist_slot_info t = slots[0];
        slots[0] = slots[1];
        slots[1] = t;
    }
    for (int i = 0; i < n; ++i) {
        if (tc_rt_load_state(slots[i].payload, slots[i].payload_bytes) == TC_STATUS_OK) {
            if (out) *out = slots[i];
            return TC_PERSIST_OK;
        }
    }
    return TC_PERSIST_REJECTED;
}
