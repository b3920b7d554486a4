#include "tc_persist_runtime.h"

#include <string.h>

#include "tc_model.h"
#include "tc_protocol_spec.h"
#include "tc_runtime.h"

namespace {

// Checks, as the state streams past, that every float of it is finite: the training parameters
// of the fixed part and every tail weight and bias. The layout is tc_runtime.h's (the fixed part
// of TC_RT_STATE_FIXED_BYTES with lr, momentum, clip_norm and balance_lr_scale at the offsets
// tc_runtime.h names, and the replay area's count and sample size read from it; then per
// tail layer a TC_RT_STATE_LAYER_BYTES head, its weights and its bias; then the discriminant
// head's TC_RT_STATE_HEAD_BYTES (classes, features) and its weights and biases; then the replay
// samples, bytes that are not checked). How many floats each layer holds is asked of the runtime
// (tc_rt_tail_params: its weight count; a layer with weights has one bias per output), not read
// from the stream, and the stream's length must then come out exactly: a state whose layout
// this scan does not know is refused rather than scanned in the wrong places. A float is not
// finite when its exponent bits are all ones (IEEE 754 binary32: NaN or infinity).
struct FiniteScan {
    tc_state_writer base;
    tc_state_writer* inner;  // where the bytes go after the scan
    uint32_t layer_floats[TC_MAX_TAIL_LAYERS];
    uint16_t layers;
    uint32_t head_floats;    // the discriminant head's weights and biases (tc_rt_head_params)
    uint16_t head_classes, head_features;
    bool head_done;
    enum Phase { kFixed, kLayerHead, kHead, kFloats, kRest } phase;
    uint8_t fixed[TC_RT_STATE_FIXED_BYTES];
    uint32_t at;             // bytes of the current piece (fixed part, layer head, float) so far
    uint8_t word[4];
    uint16_t layer;
    uint32_t floats_left;
    uint32_t rest_left;      // replay bytes still expected after the last layer
    bool finite;
    bool layout_ok;

    static bool finite_bits(const uint8_t* p) {
        uint32_t u;
        memcpy(&u, p, 4);
        return (u & 0x7F800000u) != 0x7F800000u;
    }

    bool start() {
        layers = 0;
        for (uint16_t l = 0; l < TC_MAX_TAIL_LAYERS; ++l) {
            uint16_t out = 0, in = 0;
            const int32_t weights = tc_rt_tail_params(l, nullptr, nullptr, &out, &in);
            if (weights < 0) break;
            layer_floats[l] = static_cast<uint32_t>(weights) + (weights > 0 ? out : 0u);
            ++layers;
        }
        head_classes = head_features = 0;
        const int32_t head = tc_rt_head_params(nullptr, nullptr, &head_classes, &head_features);
        head_floats = head > 0 ? static_cast<uint32_t>(head) + head_classes : 0u;
        head_done = false;
        phase = kFixed;
        at = 0;
        layer = 0;
        floats_left = rest_left = 0;
        finite = layout_ok = true;
        return layers > 0;
    }

    void next_layer() {
        at = 0;
        if (layer < layers) {
            phase = kLayerHead;
            return;
        }
        if (!head_done) {
            phase = kHead;
            return;
        }
        uint32_t ram_count, sample_size;
        memcpy(&ram_count, fixed + TC_RT_STATE_RAM_COUNT_AT, 4);
        memcpy(&sample_size, fixed + TC_RT_STATE_SAMPLE_SIZE_AT, 4);
        rest_left = ram_count * (sample_size + 1u);
        phase = kRest;
    }

    void take(uint8_t b) {
        switch (phase) {
            case kFixed:
                fixed[at++] = b;
                if (at == TC_RT_STATE_FIXED_BYTES) {
                    uint16_t n_tail;
                    memcpy(&n_tail, fixed + 2, 2);
                    if (n_tail != layers) layout_ok = false;
                    for (uint32_t off = TC_RT_STATE_LR_AT; off < TC_RT_STATE_LR_AT + 12; off += 4)
                        if (!finite_bits(fixed + off)) finite = false;
                    if (!finite_bits(fixed + TC_RT_STATE_BALANCE_LR_SCALE_AT)) finite = false;
                    for (uint32_t off = TC_RT_STATE_HEAD_AT; off < TC_RT_STATE_HEAD_AT + 8; off += 4)
                        if (!finite_bits(fixed + off)) finite = false;
                    next_layer();
                }
                break;
            case kLayerHead:
                word[at++] = b;
                if (at == TC_RT_STATE_LAYER_BYTES) {
                    floats_left = layer_floats[layer++];
                    at = 0;
                    if (floats_left > 0) phase = kFloats;
                    else next_layer();
                }
                break;
            case kHead:
                word[at++] = b;
                if (at == TC_RT_STATE_HEAD_BYTES) {
                    uint16_t classes, features;
                    memcpy(&classes, word, 2);
                    memcpy(&features, word + 2, 2);
                    if (classes != head_classes || features != head_features) layout_ok = false;
                    head_done = true;
                    floats_left = head_floats;
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
                if (rest_left == 0) layout_ok = false;  // longer than the layout says
                else --rest_left;
                break;
        }
    }

    bool complete() const { return layout_ok && phase == kRest && rest_left == 0; }

    static int write(tc_state_writer* self, const void* data, uint32_t n) {
        FiniteScan* s = static_cast<FiniteScan*>(self->ctx);
        const uint8_t* p = static_cast<const uint8_t*>(data);
        if (s->phase == kRest && n <= s->rest_left) {
            s->rest_left -= n;  // replay bytes: nothing to check, skip the byte loop
        } else {
            for (uint32_t i = 0; i < n; ++i) s->take(p[i]);
        }
        return s->inner->write(s->inner, data, n);
    }
};

int produce_runtime_state(tc_state_writer* w, void*) {
    FiniteScan scan;
    scan.base.write = &FiniteScan::write;
    scan.base.ctx = &scan;
    scan.inner = w;
    if (!scan.start()) return TC_PERSIST_PRODUCER_FAILED;
    if (tc_rt_save_state(&scan.base) != TC_STATUS_OK) return TC_PERSIST_PRODUCER_FAILED;
    if (!scan.complete()) return TC_PERSIST_PRODUCER_FAILED;  // a layout this scan does not know
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
