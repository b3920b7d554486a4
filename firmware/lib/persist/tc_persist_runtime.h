// The runtime's learned state (tc_rt_save_state / tc_rt_load_state) kept in two persistence
// slots (tc_persist.h). The firmware calls these with tc_persist_board_medium(); tests call them
// with a simulated flash.
#pragma once

#include "tc_persist.h"

// Saves the runtime's current learned state, signed with the running model's signature, never
// into `running_slot`: the slot whose state the runtime runs (restored at boot or saved since;
// -1: none, the runtime runs the exported state). Choosing it from the slots' sequence numbers
// alone would be wrong after a boot that refused the newest slot and runs the older one.
// TC_PERSIST_OK, or the reason it failed (the previous save then stays loadable; a failure
// before the flash is touched leaves both slots as they were): TC_PERSIST_PRODUCER_FAILED also
// while a mini-batch is half formed (save between batches), TC_PERSIST_NOT_FINITE when a weight,
// a bias or a training parameter is NaN or infinite (a diverged state is never saved).
int tc_persist_save_runtime(const tc_persist_medium* m, int running_slot,
                            tc_persist_slot_info* out);

// Restores the newest state saved for the running model into the runtime (after tc_rt_init);
// out->slot names the slot it came from (pass it to tc_persist_save_runtime).
// TC_PERSIST_OK; TC_PERSIST_NOTHING when no slot holds a state of this model (the runtime keeps
// its exported initial state); TC_PERSIST_REJECTED when the runtime refused every valid slot.
// When the newest slot is refused, the older valid one is tried.
int tc_persist_load_runtime(const tc_persist_medium* m, tc_persist_slot_info* out);

// The board's slots (bsp::flash); a medium without slots when the build has no TC_PERSIST, so
// the calls above answer TC_PERSIST_UNAVAILABLE. Only in firmware builds.
const tc_persist_medium* tc_persist_board_medium(void);
