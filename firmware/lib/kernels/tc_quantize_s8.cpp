#include "tc_quantize_s8.h"

void tc_quantize_s8(const float* x, int8_t* q, int32_t n, float scale, int32_t zero_point) {
    for (int32_t i = 0; i < n; ++i) {
        const float v = x[i] / scale;
        // roundf (half away from zero, as TFLite) is exact, so libraries cannot disagree.
        const float t = roundf(v);
        int32_t r;
        if (t > 1e6f) r = 1000000;
        else if (t < -1e6f) r = -1000000;
        else r = (int32_t)t;
        r += zero_point;
        q[i] = (int8_t)(r < -128 ? -128 : (r > 127 ? 127 : r));
    }
}

void tc_dequantize_s8(const int8_t* q, float* x, int32_t n, float scale, int32_t zero_point) {
    int32_t done = 0;
#if defined(TC_KERNELS_ARM_FPU)
    // A latent is dequantised for every training sample: eight values per round, one word
    // load per four, SXTAB sign-extends a byte and subtracts the zero point in one instruction,
    // VMOV moves two at a time, then VCVT and VMUL each and one VSTM (4.1 instructions per value
    // instead of 8). The same two roundings as below: (float)(q - zp), then the product.
    // (Word loads may be unaligned: the Cortex-M7 allows it for LDR.)
    int32_t blocks = n >> 3;
    if (blocks > 0) {
        const int8_t* qp = q;
        float* xp = x;
        const int32_t neg_zp = -zero_point;
        __asm__ volatile(
            "1:\n"
            "ldr r4, [%[q]], #4\n"
            "ldr r5, [%[q]], #4\n"
            "sxtab r6, %[nz], r4\n sxtab r7, %[nz], r4, ror #8\n"
            "sxtab r8, %[nz], r4, ror #16\n sxtab r9, %[nz], r4, ror #24\n"
            "vmov s0, s1, r6, r7\n vmov s2, s3, r8, r9\n"
            "sxtab r6, %[nz], r5\n sxtab r7, %[nz], r5, ror #8\n"
            "sxtab r8, %[nz], r5, ror #16\n sxtab r9, %[nz], r5, ror #24\n"
            "vmov s4, s5, r6, r7\n vmov s6, s7, r8, r9\n"
            "vcvt.f32.s32 s0, s0\n vcvt.f32.s32 s1, s1\n vcvt.f32.s32 s2, s2\n"
            "vcvt.f32.s32 s3, s3\n vcvt.f32.s32 s4, s4\n vcvt.f32.s32 s5, s5\n"
            "vcvt.f32.s32 s6, s6\n vcvt.f32.s32 s7, s7\n"
            "vmul.f32 s0, s0, %[s]\n vmul.f32 s1, s1, %[s]\n vmul.f32 s2, s2, %[s]\n"
            "vmul.f32 s3, s3, %[s]\n vmul.f32 s4, s4, %[s]\n vmul.f32 s5, s5, %[s]\n"
            "vmul.f32 s6, s6, %[s]\n vmul.f32 s7, s7, %[s]\n"
            "vstmia %[x]!, {s0-s7}\n"
            "subs %[n], %[n], #1\n"
            "bne 1b\n"
            : [q] "+r"(qp), [x] "+r"(xp), [n] "+r"(blocks)
            : [nz] "r"(neg_zp), [s] "t"(scale)
            : "r4", "r5", "r6", "r7", "r8", "r9", "s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7",
              "cc", "memory");
        done = n & ~7;
    }
#endif
    for (int32_t i = done; i < n; ++i) x[i] = scale * (float)(q[i] - zero_point);
}

void tc_quantize_multiplier(double real, int32_t* multiplier, int32_t* shift) {
    if (real == 0.0) {
        *multiplier = 0;
        *shift = 0;
        return;
    }
    int exponent = 0;
    const double q = frexp(real, &exponent);
    *shift = exponent;
    int64_t q_fixed = (int64_t)round(q * (double)(1ll << 31));
    if (q_fixed == (1ll << 31)) {
        q_fixed /= 2;
        ++*shift;
    }
    if (*shift < -31) {
        *shift = 0;
        q_fixed = 0;
    }
    *multiplier = (int32_t)q_fixed;
}
