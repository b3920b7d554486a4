#include "tc_persist_runtime.h"

#include "tc_protocol_spec.h"
#include "tc_runtime.h"

namespace {

int produce_runtime_state(tc_state_writer* w, void*) {
    return tc_rt_save_state(w) == TC_STATUS_OK ? 0 : 1;
}

bool model_signature(uint8_t signature[8]) {
    tc_rt_desc d;
    tc_rt_describe(&d);
    for (int i = 0; i < 8; ++i) signature[i] = d.signature[i];
    return d.has_model != 0;
}

}  // namespace

int tc_persist_save_runtime(const tc_persist_medium* m, tc_persist_slot_info* out) {
    uint8_t signature[8];
    if (!model_signature(signature)) return TC_PERSIST_PRODUCER_FAILED;
    return tc_persist_save(m, signature, &produce_runtime_state, nullptr, out);
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
