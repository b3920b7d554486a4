// The learned state across resets (firmware built with -DTC_PERSIST=1): restored at boot, saved
// when the host ends a task. Without TC_PERSIST both calls do nothing and INFO says OFF.
#pragma once
#include <stdint.h>

namespace app {

struct LearnedState {
    uint8_t state;       // TC_PERSIST_STATE_*
    uint8_t error;       // tc_persist_status of the last failed load or save; 0: none
    uint16_t task;       // plan index of the state restored or last saved
    uint32_t sequence;   // its slot sequence number
};

// At boot, after tc_learner_init() succeeded: the newest state saved for this model, if any.
void restore_learned_state();

// At the end of a task (no mini-batch half formed). Returns the tc_persist_status; the call
// returns only when the flash is written (a NUCLEO erase stalls the core for a second or two).
int save_learned_state();

const LearnedState& learned_state();

}  // namespace app
