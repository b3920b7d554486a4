// ARM semihosting calls used by the test images (QEMU: -semihosting-config enable=on).
#pragma once
#include <stdint.h>

static inline int32_t tc_semihost(int32_t op, const void* arg) {
    register int32_t r0 __asm__("r0") = op;
    register const void* r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

// SYS_WRITE0: a NUL-terminated string to the debugger console (QEMU's stdout).
static inline void tc_semihost_puts(const char* s) { tc_semihost(0x04, s); }

// SYS_EXIT_EXTENDED with ADP_Stopped_ApplicationExit: QEMU exits with `code`.
[[noreturn]] static inline void tc_semihost_exit(int32_t code) {
    const uint32_t block[2] = {0x20026u, (uint32_t)code};
    tc_semihost(0x20, block);
    for (;;) {
    }
}
