#include "handlers.h"

#include <string.h>

#include "bsp.h"
#include "learn_handlers.h"
#include "learned_state.h"
#include "tc_learner.h"

namespace app {
namespace {

void copy_text(char* dst, size_t size, const char* text) {
    // NUL padded; a text that fills the field has no terminator (the host trims padding).
    size_t i = 0;
    for (; i < size && text[i] != '\0'; ++i) dst[i] = text[i];
    for (; i < size; ++i) dst[i] = '\0';
}

void handle_hello(const tc::Frame& request, tc::Responder& out) {
    tc_info_t info;
    fill_info(info);
    out.send(TC_MSG_INFO, request.seq, &info, sizeof(info));
}

}  // namespace

void fill_info(tc_info_t& info) {
    memset(&info, 0, sizeof(info));
    info.protocol_version = TC_PROTOCOL_VERSION;
    info.max_payload = TC_MAX_PAYLOAD;
    copy_text(info.board, sizeof(info.board), bsp::board_name());
    copy_text(info.build_id, sizeof(info.build_id), TC_BUILD_ID);
    info.clock_hz = bsp::clock_hz();
    info.counter_kind = bsp::counter_kind();
    // All zero (no signature, input NONE, no classes) when the firmware has no model.
    tc_rt_desc desc;
    tc_learner_describe(&desc);
    if (desc.has_model) {
        info.input_type = desc.input_type;
        info.input_rank = desc.input_rank;
        info.buffer_store = desc.buffer_store;
        for (size_t i = 0; i < 4; ++i) info.input_shape[i] = desc.input_shape[i];
        memcpy(info.model_signature, desc.signature, sizeof(info.model_signature));
        info.classes_max = desc.classes_max;
        info.classes_seen = desc.classes_seen;
        info.buffer_capacity = desc.buffer_capacity;
        info.buffer_fill = desc.buffer_fill;
    }
    const bsp::MemoryUsage memory = bsp::memory_usage();
    info.ram_used = memory.ram_used;
    info.ram_total = memory.ram_total;
    info.flash_used = memory.flash_used;
    info.flash_total = memory.flash_total;
    info.session_id = bsp::session_id();
    info.rx_overruns = bsp::rx_overruns();
    const LearnedState& learned = learned_state();
    info.persist = learned.state;
    info.persist_error = learned.error;
    info.persist_task = learned.task;
    info.persist_sequence = learned.sequence;
}

const tc::Route kRoutes[] = {
    {TC_MSG_HELLO, handle_hello},
    {TC_MSG_RESET, handle_reset},
    {TC_MSG_SYNC, handle_sync},
    {TC_MSG_UNLOCK, handle_unlock},
    {TC_MSG_BEGIN_TASK, handle_begin_task},
    {TC_MSG_TRAIN_CONTROL, handle_train_control},
    {TC_MSG_TRAIN_SAMPLES, handle_train_samples},
    {TC_MSG_BUFFER_SAMPLES, handle_buffer_samples},
    {TC_MSG_EVAL_SAMPLES, handle_eval_samples},
    {TC_MSG_STATS, handle_stats},
    {TC_MSG_SELFTEST, handle_selftest},
};
const size_t kRouteCount = sizeof(kRoutes) / sizeof(kRoutes[0]);

}  // namespace app
