// On-target test image of the learned state's persistence, on the product's board support
// (start-up, bsp::flash, bsp::reset) and with the product's linker script (TC_PERSIST=1).
//
// mps2_an500 under QEMU: the image learns two tasks of the tiny test model and saves after each,
// then resets the system (SYSRESETREQ); after the reboot it must find task 2's state. It then
// starts a third save and resets the system in the middle of it; after that reboot task 2's state
// must still load. Finally it completes the third save, resets, and must find task 3's state.
// The boot count lives in the PSRAM too, next to the slots, and every boot prints "boot N"
// through semihosting, so a PSRAM that did not survive a reset shows as a second "boot 0".
// The exit code (semihosting) is 0 on success, otherwise the number of the failed check.
//
// nucleo_f746zg: the same image links (not run: no board here), to prove the flash driver and the
// slot reservation build for the real board.
#include <stdint.h>
#include <string.h>

#include "bsp.h"
#include "bsp_flash.h"
#include "bsp_internal.h"
#include "tc_crc32.h"
#include "tc_persist_runtime.h"
#include "tc_protocol_spec.h"
#include "tc_runtime.h"

namespace {

void say(const char* s) { bsp::detail::semihost(0x04, s); }  // SYS_WRITE0

void say_boot(uint32_t n) {
    char text[] = "boot 0\n";
    text[5] = static_cast<char>('0' + (n % 10));
    say(text);
}

uint32_t g_crc;
int crc_write(tc_state_writer*, const void* d, uint32_t n) {
    g_crc = tc::crc32(static_cast<const uint8_t*>(d), n, g_crc);
    return 0;
}

// CRC of the runtime's serialised state: equal CRCs of equal lengths stand for equal states.
uint32_t state_crc() {
    tc_state_writer w = {&crc_write, nullptr};
    g_crc = 0;
    if (tc_rt_save_state(&w) != TC_STATUS_OK) return 0;
    return g_crc ^ tc_rt_state_bytes();
}

// Deterministic samples of the tiny model: 6 int8 values, the class's own input raised.
void sample(uint32_t i, uint8_t cls, int8_t* x) {
    uint32_t h = 0x9E3779B9u * (i + 1);
    for (int k = 0; k < 6; ++k) {
        h ^= h << 13;
        h ^= h >> 17;
        h ^= h << 5;
        x[k] = static_cast<int8_t>(static_cast<int>(h % 41) - 20 + (k == cls ? 60 : 0));
    }
}

// Task t (1-based) of the tiny model: tasks 1 and 2 bring classes 2t and 2t+1 (the model grows
// to 4, then 6 classes: its plan's end); task 3 revisits classes 1 and 4. A few mini-batches, then
// two buffer samples.
bool learn_task(uint32_t t) {
    const uint8_t labels[2] = {static_cast<uint8_t>(t <= 2 ? 2 * t : 1),
                               static_cast<uint8_t>(t <= 2 ? 2 * t + 1 : 4)};
    const uint32_t seen = t <= 2 ? 2 * t + 2 : 6;
    if (tc_rt_begin_task(labels, 2) != TC_STATUS_OK) return false;
    int8_t x[4 * 6];
    uint8_t y[4];
    for (uint32_t batch = 0; batch < 5; ++batch) {
        for (uint32_t j = 0; j < 4; ++j) {
            y[j] = static_cast<uint8_t>((batch + j) % seen);
            sample(100 * t + 4 * batch + j, y[j], x + 6 * j);
        }
        if (tc_rt_train_samples(x, y, 4, 1, nullptr) != TC_STATUS_OK) return false;
    }
    sample(1000 + t, labels[0], x);
    sample(2000 + t, labels[1], x + 6);
    return tc_rt_add_buffer_samples(x, labels, 2) == TC_STATUS_OK;
}

// The state after `tasks` tasks, from a fresh runtime (the reference each boot recomputes).
uint32_t reference_crc(uint32_t tasks) {
    if (tc_rt_init() != TC_STATUS_OK) return 0;
    for (uint32_t t = 1; t <= tasks; ++t)
        if (!learn_task(t)) return 0;
    return state_crc();
}

// The board medium, but the system resets once `reset_after` payload bytes were programmed.
uint32_t g_reset_after;
uint32_t g_programmed;
const tc_persist_medium* g_board;
bool reset_erase(void* ctx, int slot) { return g_board->erase(ctx, slot); }
bool reset_program(void* ctx, int slot, uint32_t offset, const uint8_t* data, uint32_t n) {
    if (g_programmed + n > g_reset_after) {
        g_board->program(ctx, slot, offset, data, (g_reset_after - g_programmed) & ~3u);
        bsp::reset();  // the power cut, mid-save
    }
    g_programmed += n;
    return g_board->program(ctx, slot, offset, data, n);
}
const uint8_t* reset_view(void* ctx, int slot) { return g_board->view(ctx, slot); }

#if defined(TC_BOARD_MPS2_AN500)
// Boot counter beside the slots, in the PSRAM that a system reset keeps.
constexpr uint32_t kPhaseAddress = 0x60F00000;
constexpr uint32_t kPhaseMagic = 0xB0075EED;
#endif

}  // namespace

int main() {
    bsp::init();
    const tc_persist_medium* m = tc_persist_board_medium();
    g_board = m;
    if (!bsp::flash::available() || m->slot_size != 256 * 1024) return 10;
    if (tc_rt_init() != TC_STATUS_OK) return 11;
#if defined(TC_BOARD_MPS2_AN500)
    volatile uint32_t* phase = reinterpret_cast<volatile uint32_t*>(kPhaseAddress);
    const uint32_t boot = phase[0] == kPhaseMagic ? phase[1] : 0;
    phase[0] = kPhaseMagic;
    phase[1] = boot + 1;
#else
    const uint32_t boot = 0;
#endif
    say_boot(boot);
    tc_persist_slot_info info;
    switch (boot) {
        case 0: {  // power-on: nothing saved yet
            if (tc_persist_load_runtime(m, &info) != TC_PERSIST_NOTHING) return 20;
            if (!learn_task(1)) return 21;
            if (tc_persist_save_runtime(m, -1, &info) != TC_PERSIST_OK || info.slot != 0) return 22;
            if (!learn_task(2)) return 23;
            if (tc_persist_save_runtime(m, info.slot, &info) != TC_PERSIST_OK || info.slot != 1)
                return 24;
            say("saved tasks 1 and 2, resetting\n");
            bsp::reset();
        }
        case 1: {  // after the reset: task 2's state; then a save cut by a reset
            const uint32_t want = reference_crc(2);
            if (tc_rt_init() != TC_STATUS_OK) return 30;
            if (tc_persist_load_runtime(m, &info) != TC_PERSIST_OK) return 31;
            if (info.slot != 1 || state_crc() != want) return 32;
            say("task 2 restored; saving task 3, reset in the middle\n");
            if (!learn_task(3)) return 33;
            static tc_persist_medium cut;
            cut = *m;
            cut.erase = &reset_erase;
            cut.program = &reset_program;
            cut.view = &reset_view;
            g_reset_after = tc_rt_state_bytes() / 2;  // half the payload programmed
            tc_persist_save_runtime(&cut, info.slot, &info);
            return 34;  // not reached: the reset came first
        }
        case 2: {  // after the torn save: still task 2; now save task 3 for real
            const uint32_t want = reference_crc(2);
            if (tc_rt_init() != TC_STATUS_OK) return 40;
            if (tc_persist_load_runtime(m, &info) != TC_PERSIST_OK) return 41;
            if (info.slot != 1 || state_crc() != want) return 42;
            say("torn save lost nothing; saving task 3\n");
            if (!learn_task(3)) return 43;
            if (tc_persist_save_runtime(m, info.slot, &info) != TC_PERSIST_OK || info.slot != 0)
                return 44;
            bsp::reset();
        }
        case 3: {  // task 3's state, in slot 0 with the highest sequence
            const uint32_t want = reference_crc(3);
            if (tc_rt_init() != TC_STATUS_OK) return 50;
            if (tc_persist_load_runtime(m, &info) != TC_PERSIST_OK) return 51;
            if (info.slot != 0 || info.sequence != 3 || state_crc() != want) return 52;
            say("task 3 restored\n");
            return 0;
        }
        default:
            return 60;
    }
}
