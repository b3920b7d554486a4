// Board support: the one interface the rest of the firmware uses to reach the hardware.
// Each board implements it in board_<id>.cpp, compiled only when the board manifest defines
// TC_BOARD_<ID>; start-up, fault handling and memory accounting shared by all boards are in
// startup.cpp.
#pragma once
#include <stddef.h>
#include <stdint.h>

namespace bsp {

// Brings up clocks, caches, the serial port (receive interrupt on) and the counter. Called once
// from main(); the FPU is already enabled by the reset handler.
void init();

// Copies up to `max` received bytes out of the interrupt-driven receive ring; never waits.
size_t serial_read(uint8_t* dst, size_t max);

// Bytes waiting in the receive ring (received, not yet read): what the serial flow control's
// credit leaves out of the ring's free space.
size_t serial_rx_pending();

// Sends `n` bytes. Waits while the transmitter is busy, but never forever: when the port stays
// busy past a bound (host not reading), the rest of the bytes are dropped and counted.
// Returns the bytes actually sent.
size_t serial_write(const uint8_t* src, size_t n);

// Received bytes lost since boot: ring full, or the UART's own overrun flag.
uint32_t rx_overruns();
// Bytes dropped by serial_write since boot.
uint32_t tx_drops();

// Performance counter. counter_read() returns the units named by counter_kind() (TC_COUNTER_*:
// core cycles on the NUCLEO, executed instructions on the emulated board under
// `-icount shift=0,align=off,sleep=off`) since counter_reset(). The hardware counter is 32 bits
// wide and extended to 64 bits at each read, so read at least once per hardware wrap (about 19 s
// at 216 MHz, 171 s of virtual time on the emulated board).
void counter_reset();
uint64_t counter_read();
uint8_t counter_kind();
uint32_t clock_hz();  // core clock actually running

// Sleeps until the next interrupt, unless received bytes are already waiting.
void wait_for_interrupt();

[[noreturn]] void reset();  // system reset through SCB AIRCR.SYSRESETREQ

const char* board_name();  // the board id, e.g. "mps2_an500"

// Ends an on-target test run. Emulated board: semihosting exit, QEMU exits with `code`. On real
// hardware: a breakpoint when a debugger is attached, then the core parks.
[[noreturn]] void exit(int code);

// Exit code of the emulated board when a HardFault ends the run.
constexpr int kHardFaultExitCode = 0xFA;

struct MemoryUsage {
    uint32_t ram_used;     // stack reserve + .data + .bss
    uint32_t ram_total;    // the board's RAM budget (linker region)
    uint32_t flash_used;   // vector table + code + constants + .data initialisers
    uint32_t flash_total;  // the board's flash budget (linker region)
};
MemoryUsage memory_usage();

// Differs at every boot, so the host recognises a device that restarted; see board_*.cpp for
// where each board's randomness comes from.
uint32_t session_id();

}  // namespace bsp
