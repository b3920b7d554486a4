// tinycil firmware: answers the host's requests over the serial protocol. The serial port carries
// nothing but frames.
#include <stdio.h>

#include "bsp.h"
#include "handlers.h"
#include "learn_handlers.h"
#include "learned_state.h"
#include "tc_dispatch.h"
#include "tc_learner.h"

// Build-system tests only (tests/test_firmware_build.py): with these defines set to sizes beyond
// the board's budget the link must fail with "region `RAM' overflowed" / "region `FLASH'
// overflowed".
#if defined(TC_TEST_RAM_HOG)
volatile unsigned char tc_test_ram_hog[TC_TEST_RAM_HOG];
#endif
#if defined(TC_TEST_FLASH_HOG)
const volatile unsigned char tc_test_flash_hog[TC_TEST_FLASH_HOG] = {1};
#endif

namespace {

size_t write_serial(const uint8_t* data, size_t n) { return bsp::serial_write(data, n); }

tc::Responder responder(write_serial);
tc::Dispatcher dispatcher(app::kRoutes, app::kRouteCount, responder, app::expected_seq);

}  // namespace

int main() {
    bsp::init();

#if defined(TC_TEST_RAM_HOG)
    tc_test_ram_hog[0] = 1;
#endif
#if defined(TC_TEST_FLASH_HOG)
    (void)tc_test_flash_hog[TC_TEST_FLASH_HOG - 1];
#endif
#if defined(TC_TEST_FAULT)
    // Fault-path test only: an undefined instruction must end the emulated run with
    // bsp::kHardFaultExitCode (tests/test_firmware_boot.py).
    __asm volatile("udf #0");
#endif

    // The learner starts at boot, so INFO describes its model from the first HELLO. A firmware
    // built without a model still boots and answers: every learning request then reports NO_MODEL.
    const int runtime_status = tc_learner_init();
    app::set_runtime_status(runtime_status);
    if (runtime_status == TC_STATUS_OK) app::restore_learned_state();

    char banner[96];
    snprintf(banner, sizeof(banner), "tinycil firmware on %s, build %s", bsp::board_name(),
             TC_BUILD_ID);
    responder.log(banner);

    uint32_t overruns_reported = 0;
    uint8_t chunk[64];
    for (;;) {
        const size_t n = bsp::serial_read(chunk, sizeof(chunk));
        if (n > 0) {
            dispatcher.receive(chunk, n);
        } else {
            bsp::wait_for_interrupt();
        }

        // Lost bytes are never silent: tell the host at once, with the seq to resend from (as a
        // damage report does); the count of lost bytes is in the text.
        const uint32_t overruns = bsp::rx_overruns();
        if (overruns != overruns_reported) {
            const uint32_t lost = overruns - overruns_reported;
            overruns_reported = overruns;
            char text[48];
            snprintf(text, sizeof(text), "receive overrun: %lu bytes lost",
                     static_cast<unsigned long>(lost));
            responder.status(0, TC_STATUS_RX_OVERRUN, app::expected_seq(), text);
        }
    }
}
