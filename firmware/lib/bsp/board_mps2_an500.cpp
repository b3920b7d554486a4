// mps2_an500: QEMU's Cortex-M7 machine (Arm MPS2 FPGA image AN500), the emulated board.
// Peripherals are from the Cortex-M System Design Kit (CMSDK): UART0 at 0x40004000 (RX interrupt
// IRQ 0) and APB timer 0 at 0x40000000, both clocked at the 25 MHz system clock.
#if defined(TC_BOARD_MPS2_AN500)

#include <stdint.h>

#include "bsp.h"
#include "bsp_internal.h"
#include "cortex_m7.h"
#include "rx_ring.h"
#include "tc_protocol_spec.h"

using namespace bsp::cm7;

namespace {

constexpr uint32_t kSystemClockHz = 25000000;

// With `-icount shift=0` QEMU executes one instruction per nanosecond of virtual time, so one
// tick of a 25 MHz timer is exactly 40 instructions.
constexpr uint32_t kInstructionsPerTick = 1000000000u / kSystemClockHz;

// CMSDK APB UART
constexpr uint32_t UART0 = 0x40004000;
constexpr uint32_t UART_DATA = UART0 + 0x00;
constexpr uint32_t UART_STATE = UART0 + 0x04;
constexpr uint32_t UART_CTRL = UART0 + 0x08;
constexpr uint32_t UART_INTCLEAR = UART0 + 0x0C;
constexpr uint32_t UART_BAUDDIV = UART0 + 0x10;
constexpr uint32_t STATE_TX_FULL = 1u << 0;
constexpr uint32_t STATE_RX_FULL = 1u << 1;
constexpr uint32_t STATE_RX_OVERRUN = 1u << 3;
constexpr uint32_t CTRL_TX_EN = 1u << 0;
constexpr uint32_t CTRL_RX_EN = 1u << 1;
constexpr uint32_t CTRL_RX_INT_EN = 1u << 3;
constexpr uint32_t INT_RX = 1u << 1;
constexpr unsigned kUart0RxIrq = 0;

// CMSDK APB timer: a 32-bit down counter that reloads from RELOAD after reaching zero.
constexpr uint32_t TIMER0 = 0x40000000;
constexpr uint32_t TIMER_CTRL = TIMER0 + 0x00;
constexpr uint32_t TIMER_VALUE = TIMER0 + 0x04;
constexpr uint32_t TIMER_RELOAD = TIMER0 + 0x08;
constexpr uint32_t TIMER_CTRL_ENABLE = 1u << 0;

// A transmitter that stays full this many polls means nobody reads the port.
constexpr uint32_t kTxSpinLimit = 2000000;

bsp::RxRing<TC_DEVICE_RX_RING> rx_ring;
uint32_t tx_dropped;
uint32_t counter_last;
uint64_t counter_ticks;
uint32_t session;

}  // namespace

extern "C" void UART0RX_Handler() {
    // Clear first: a byte arriving after the drain raises the interrupt again.
    reg(UART_INTCLEAR) = INT_RX;
    uint32_t state = reg(UART_STATE);
    while (state & STATE_RX_FULL) {
        rx_ring.push(static_cast<uint8_t>(reg(UART_DATA)));
        state = reg(UART_STATE);
    }
    if (state & STATE_RX_OVERRUN) {
        rx_ring.count_lost();
        reg(UART_STATE) = STATE_RX_OVERRUN;  // write 1 to clear
    }
}

// 16 system exceptions + 32 interrupts (the AN500 uses fewer; the rest fall to the default).
extern "C" __attribute__((section(".isr_vector"), used))
const bsp::detail::Handler tc_vector_table[16 + 32] = {
    TC_CORE_VECTORS,
    UART0RX_Handler,  // IRQ 0: UART0 receive
    // IRQ 1-31
    Default_Handler, Default_Handler, Default_Handler, Default_Handler, Default_Handler,
    Default_Handler, Default_Handler, Default_Handler, Default_Handler, Default_Handler,
    Default_Handler, Default_Handler, Default_Handler, Default_Handler, Default_Handler,
    Default_Handler, Default_Handler, Default_Handler, Default_Handler, Default_Handler,
    Default_Handler, Default_Handler, Default_Handler, Default_Handler, Default_Handler,
    Default_Handler, Default_Handler, Default_Handler, Default_Handler, Default_Handler,
    Default_Handler,
};

namespace bsp {

void init() {
    // The manifest's baud rate (the dev-platform passes TC_SERIAL_BAUD). QEMU ignores the
    // divider; hardware needs >= 16.
    reg(UART_BAUDDIV) = kSystemClockHz / TC_SERIAL_BAUD;
    reg(UART_CTRL) = CTRL_TX_EN | CTRL_RX_EN | CTRL_RX_INT_EN;
    nvic_enable(kUart0RxIrq, 0x40);

    reg(TIMER_CTRL) = 0;
    reg(TIMER_RELOAD) = 0xFFFFFFFFu;
    reg(TIMER_VALUE) = 0xFFFFFFFFu;
    reg(TIMER_CTRL) = TIMER_CTRL_ENABLE;
    counter_reset();

    // Session id. QEMU starts every run from the same state and, under -icount, runs
    // deterministically, so the randomness must come from the host: the semihosting clock
    // (seconds since the epoch, SYS_TIME) and the host's elapsed-time counter (SYS_ELAPSED,
    // nanoseconds since QEMU started, whose low bits vary run to run). Without semihosting these
    // calls return -1 (see hard_fault_dispatch) and only the timer's value remains, which still
    // differs between runs without -icount (the timer then follows wall time).
    uint32_t h = detail::mix32(0x7C1D5EEDu, reg(TIMER_VALUE));
    h = detail::mix32(h, static_cast<uint32_t>(detail::semihost(0x11, nullptr)));  // SYS_TIME
    uint32_t elapsed[2] = {0, 0};
    if (detail::semihost(0x30, elapsed) == 0) {  // SYS_ELAPSED
        h = detail::mix32(h, elapsed[0]);
        h = detail::mix32(h, elapsed[1]);
    }
    session = detail::mix32(h, reg(TIMER_VALUE));

    irq_enable();
}

size_t serial_read(uint8_t* dst, size_t max) { return rx_ring.pop(dst, max); }

size_t serial_rx_pending() { return rx_ring.size(); }

size_t serial_write(const uint8_t* src, size_t n) {
    for (size_t i = 0; i < n; ++i) {
        uint32_t spins = 0;
        while (reg(UART_STATE) & STATE_TX_FULL) {
            if (++spins > kTxSpinLimit) {
                tx_dropped += n - i;
                return i;
            }
        }
        reg(UART_DATA) = src[i];
    }
    return n;
}

uint32_t rx_overruns() { return rx_ring.lost(); }
uint32_t tx_drops() { return tx_dropped; }

void counter_reset() {
    reg(TIMER_VALUE) = 0xFFFFFFFFu;
    counter_last = 0xFFFFFFFFu;
    counter_ticks = 0;
}

uint64_t counter_read() {
    const uint32_t now = reg(TIMER_VALUE);
    counter_ticks += counter_last - now;  // down counter; modulo 2^32 across a reload
    counter_last = now;
    return counter_ticks * kInstructionsPerTick;
}

uint8_t counter_kind() { return TC_COUNTER_INSTRUCTIONS; }
uint32_t clock_hz() { return kSystemClockHz; }

void wait_for_interrupt() {
    // With interrupts masked, a byte that arrives between the check and the wfi still wakes the
    // core (a pending interrupt ends wfi even while PRIMASK is set); it is handled on unmask.
    irq_disable();
    if (rx_ring.empty()) wfi();
    irq_enable();
}

const char* board_name() { return TC_BOARD_ID; }

uint32_t session_id() { return session; }

}  // namespace bsp

namespace bsp::detail {

void board_fault() {
    bsp::exit(kHardFaultExitCode);
}

}  // namespace bsp::detail

#endif  // TC_BOARD_MPS2_AN500
