#include "learned_state.h"

#include "tc_persist_runtime.h"
#include "tc_protocol_spec.h"
#include "tc_learner.h"

namespace app {
namespace {

LearnedState g_state = {TC_PERSIST_STATE_OFF, 0, 0, 0};

#if defined(TC_PERSIST) && TC_PERSIST
// The slot whose state the runtime runs (restored at boot or saved since); -1: the exported
// state. A save never overwrites it, whatever the slots' sequence numbers say: after a boot that
// refused the newest slot, the runtime runs the older one, and that is the one to keep.
int g_running_slot = -1;

uint16_t current_task() {
    tc_rt_desc desc;
    tc_learner_describe(&desc);
    return desc.task;
}
#endif

}  // namespace

void restore_learned_state() {
#if defined(TC_PERSIST) && TC_PERSIST
    tc_persist_slot_info info;
    const int status = tc_persist_load_runtime(tc_persist_board_medium(), &info);
    if (status == TC_PERSIST_OK) {
        g_state = {TC_PERSIST_STATE_RESTORED, 0, current_task(), info.sequence};
        g_running_slot = info.slot;
    } else if (status == TC_PERSIST_NOTHING) {
        g_state = {TC_PERSIST_STATE_EMPTY, 0, current_task(), 0};
    } else {
        g_state = {TC_PERSIST_STATE_FAILED, static_cast<uint8_t>(status), current_task(), 0};
    }
#endif
}

int save_learned_state() {
#if defined(TC_PERSIST) && TC_PERSIST
    tc_persist_slot_info info;
    const int status = tc_persist_save_runtime(tc_persist_board_medium(), g_running_slot, &info);
    if (status == TC_PERSIST_OK) {
        g_state = {TC_PERSIST_STATE_SAVED, 0, current_task(), info.sequence};
        g_running_slot = info.slot;
    } else {
        // The previous save stays loadable; task and sequence keep naming it.
        g_state.state = TC_PERSIST_STATE_FAILED;
        g_state.error = static_cast<uint8_t>(status);
    }
    return status;
#else
    return TC_PERSIST_UNAVAILABLE;
#endif
}

const LearnedState& learned_state() { return g_state; }

}  // namespace app
