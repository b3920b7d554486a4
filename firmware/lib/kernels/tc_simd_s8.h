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
#else
static inline uint32_t tc_sxtab16(uint32_t a, uint32_t b) {
    const uint32_t lo = (a + (uint32_t)(int32_t)(int8_t)(b & 0xff)) & 0xffffu;
    const uint32_t hi = ((a >> 16) + (uint32_t)(int32_t)(int8_t)((b >> 16) & 0xff)) & 0xffffu;
    return lo | (hi << 16);
}
static inline int32_t tc_smlad(uint32_t a, uint32_t b, int32_t acc) {
    const int32_t lo = (int32_t)(int16_t)(a & 0xffff) * (int32_t)(int16_t)(b & 0xffff);
    const int32_t hi = (int32_t)(int16_t)(a >> 16) * (int32_t)(int16_t)(b >> 16);
    return (int32_t)((uint32_t)acc + (uint32_t)lo + (uint32_t)hi);
}
#endif

// One group of four taps of the 2 x 2 block below.
static inline void tc_s16_dot_2x2_group(const uint32_t* pw, const uint32_t* px, int32_t* a00,
                                        int32_t* a01, int32_t* a10, int32_t* a11) {
    *a00 = tc_smlad(pw[0], px[0], *a00);
    *a00 = tc_smlad(pw[1], px[1], *a00);
    *a10 = tc_smlad(pw[2], px[0], *a10);
    *a10 = tc_smlad(pw[3], px[1], *a10);
    *a01 = tc_smlad(pw[0], px[2], *a01);
    *a01 = tc_smlad(pw[1], px[3], *a01);
    *a11 = tc_smlad(pw[2], px[2], *a11);
    *a11 = tc_smlad(pw[3], px[3], *a11);
}

// Two interleaved int16 operands, each a sequence of groups [row0: 4 values][row1: 4 values],
// `kp` values per row (a multiple of 4). acc[2 * i + j] += dot(w row i, x row j).
static inline void tc_s16_dot_2x2(const int16_t* w, const int16_t* x, int32_t kp,
                                  int32_t acc[4]) {
    const uint32_t* pw = (const uint32_t*)w;
    const uint32_t* px = (const uint32_t*)x;
    int32_t a00 = acc[0], a01 = acc[1], a10 = acc[2], a11 = acc[3];
    int32_t groups = kp >> 2;
    if (groups & 1) {
        tc_s16_dot_2x2_group(pw, px, &a00, &a01, &a10, &a11);
        pw += 4;
        px += 4;
    }
    groups >>= 1;
#if defined(TC_KERNELS_ARM_DSP)
    // Eight taps per iteration: 8 LDRD + 16 SMLAD + 2 loop instructions for 32 MACs. GCC keeps
    // to single-word loads from C, hence the assembly.
    if (groups > 0) {
        uint32_t wa, wb, va, vb, xa, xb;
        __asm__ volatile(
            "1:\n"
            "ldrd %[wa], %[wb], [%[pw]], #16\n"
            "ldrd %[va], %[vb], [%[pw], #-8]\n"
            "ldrd %[xa], %[xb], [%[px]], #16\n"
            "smlad %[a00], %[wa], %[xa], %[a00]\n"
            "smlad %[a00], %[wb], %[xb], %[a00]\n"
            "smlad %[a10], %[va], %[xa], %[a10]\n"
            "smlad %[a10], %[vb], %[xb], %[a10]\n"
            "ldrd %[xa], %[xb], [%[px], #-8]\n"
            "smlad %[a01], %[wa], %[xa], %[a01]\n"
            "smlad %[a01], %[wb], %[xb], %[a01]\n"
            "smlad %[a11], %[va], %[xa], %[a11]\n"
            "smlad %[a11], %[vb], %[xb], %[a11]\n"
            "ldrd %[wa], %[wb], [%[pw]], #16\n"
            "ldrd %[va], %[vb], [%[pw], #-8]\n"
            "ldrd %[xa], %[xb], [%[px]], #16\n"
            "smlad %[a00], %[wa], %[xa], %[a00]\n"
            "smlad %[a00], %[wb], %[xb], %[a00]\n"
            "smlad %[a10], %[va], %[xa], %[a10]\n"
            "smlad %[a10], %[vb], %[xb], %[a10]\n"
            "ldrd %[xa], %[xb], [%[px], #-8]\n"
            "smlad %[a01], %[wa], %[xa], %[a01]\n"
            "smlad %[a01], %[wb], %[xb], %[a01]\n"
            "smlad %[a11], %[va], %[xa], %[a11]\n"
            "smlad %[a11], %[vb], %[xb], %[a11]\n"
            "subs %[n], %[n], #1\n"
            "bne 1b\n"
            : [pw] "+r"(pw), [px] "+r"(px), [n] "+r"(groups), [a00] "+r"(a00), [a01] "+r"(a01),
              [a10] "+r"(a10), [a11] "+r"(a11), [wa] "=&r"(wa), [wb] "=&r"(wb), [va] "=&r"(va),
              [vb] "=&r"(vb), [xa] "=&r"(xa), [xb] "=&r"(xb)
            :
            : "cc", "memory");
    }
#else
    for (; groups > 0; --groups) {
        tc_s16_dot_2x2_group(pw, px, &a00, &a01, &a10, &a11);
        tc_s16_dot_2x2_group(pw + 4, px + 4, &a00, &a01, &a10, &a11);
        pw += 8;
        px += 8;
    }
#endif
    acc[0] = a00;
    acc[1] = a01;
    acc[2] = a10;
    acc[3] = a11;
}
