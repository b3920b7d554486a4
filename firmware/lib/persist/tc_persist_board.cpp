// The board's persistence slots (bsp::flash) as a tc_persist_medium. Firmware builds with
// tinycil's board support only: the host tests hand the library a simulated flash instead, and
// an application on its own board support (the learner library without lib/bsp) its own medium.
#if defined(__arm__) && __has_include("bsp_flash.h")

#include "bsp_flash.h"
#include "tc_persist_runtime.h"

namespace {

bool board_erase(void*, int slot) { return bsp::flash::erase(slot); }

bool board_program(void*, int slot, uint32_t offset, const uint8_t* data, uint32_t n) {
    return bsp::flash::program(slot, offset, data, n);
}

const uint8_t* board_view(void*, int slot) { return bsp::flash::slot_view(slot); }

tc_persist_medium g_board_medium;

}  // namespace

const tc_persist_medium* tc_persist_board_medium(void) {
    g_board_medium.ctx = nullptr;
    g_board_medium.slot_size = bsp::flash::available() ? bsp::flash::slot_size() : 0;
    g_board_medium.program_unit = bsp::flash::kProgramUnit;
    g_board_medium.erase = &board_erase;
    g_board_medium.program = &board_program;
    g_board_medium.view = &board_view;
    return &g_board_medium;
}

#endif  // __arm__ && bsp_flash.h
