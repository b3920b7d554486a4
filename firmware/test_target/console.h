// Text output of the on-target test images: the board's serial port (QEMU prints it when started
// with -serial stdio).
#pragma once
#include <stdint.h>
#include <string.h>

#include "bsp.h"

inline void tc_print(const char* s) {
    bsp::serial_write(reinterpret_cast<const uint8_t*>(s), strlen(s));
}

inline void tc_print_int(int64_t v) {
    char buf[24];
    int i = 23;
    buf[i] = 0;
    const bool neg = v < 0;
    uint64_t u = neg ? 0 - (uint64_t)v : (uint64_t)v;
    do {
        buf[--i] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (neg) buf[--i] = '-';
    tc_print(buf + i);
}
