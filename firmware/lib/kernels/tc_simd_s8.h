// Dual 16-bit multiply-accumulate helpers for the int8 kernels: SMLAD on Cortex-M4/M7 (DSP
// extension), the same arithmetic in portable C elsewhere.
#pragma once
#include <string.h>

#include "tc_kernels_common.h"

#if defined(TC_KERNELS_ARM_DSP)
#include <arm_acle.h>
static inline int32_t tc_smlad(uint32_t a, uint32_t b, int32_t acc) {
    return (int32_t)__smlad((int16x2_t)a, (int16x2_t)b, acc);
}
// Adds the sign-extended bytes 0 and 2 of b to the two halfwords of a.
static inline uint32_t tc_sxtab16(uint32_t a, uint32_t b) {
    return (uint32_t)__sxtab16((int16x2_t)a, (int8x4_t)b);
}
// The same for bytes 1 and 3 of b (one instruction: GCC does not fold the rotate itself).
static inline uint32_t tc_sxtab16_ror8(uint32_t a, uint32_t b) {
    uint32_t r;
    __asm__("sxtab16 %0, %1, %2, ror #8" : "=r"(r) : "r"(a), "r"(b));
    return r;
}
// Single 16 x 16 multiply-accumulates of chosen halves: bottom x top, top x bottom.
static inline int32_t tc_smlabt(uint32_t a, uint32_t b, int32_t acc) {
    return __smlabt((int32_t)a, (int32_t)b, acc);
}
static inline int32_t tc_smlatb(uint32_t a, uint32_t b, int32_t acc) {
    return __smlatb((int32_t)a, (int32_t)b, acc);
}
#else
static inline int32_t tc_smlabt(uint32_t a, uint32_t b, int32_t acc) {
    return (int32_t)((uint32_t)acc +
                     (uint32_t)((int32_t)(int16_t)(a & 0xffff) * (int32_t)(int16_t)(b >> 16)));
}
static inline int32_t tc_smlatb(uint32_t a, uint32_t b, int32_t acc) {
    return (int32_t)((uint32_t)acc +
                     (uint32_t)((int32_t)(int16_t)(a >> 16) * (int32_t)(int16_t)(b & 0xffff)));
}
static inline uint32_t tc_sxtab16(uint32_t a, uint32_t b) {
    const uint32_t lo = (a + (uint32_t)(int32_t)(int8_t)(b & 0xff)) & 0xffffu;
    const uint32_t hi = ((a >> 16) + (uint32_t)(int32_t)(int8_t)((b >> 16) & 0xff)) & 0xffffu;
    return lo | (hi << 16);
}
static inline uint32_t tc_sxtab16_ror8(uint32_t a, uint32_t b) {
    return tc_sxtab16(a, (b >> 8) | (b << 24));
}
static inline int32_t tc_smlad(uint32_t a, uint32_t b, int32_t acc) {
    const int32_t lo = (int32_t)(int16_t)(a & 0xffff) * (int32_t)(int16_t)(b & 0xffff);
    const int32_t hi = (int32_t)(int16_t)(a >> 16) * (int32_t)(int16_t)(b >> 16);
    return (int32_t)((uint32_t)acc + (uint32_t)lo + (uint32_t)hi);
}
#endif
