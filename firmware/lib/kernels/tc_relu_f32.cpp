#include "tc_relu_f32.h"

namespace {

void relu_fwd_plain(const float* x, float* y, int32_t n) {
    for (int32_t i = 0; i < n; ++i) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

void relu_bwd_plain(const float* x, const float* dy, float* dx, int32_t n) {
    for (int32_t i = 0; i < n; ++i) dx[i] = x[i] > 0.0f ? dy[i] : 0.0f;
}

}  // namespace

#if defined(TC_KERNELS_ARM_FPU)

// Eight values per round: VLDM, then per value a compare with zero, the flags moved to the core
// and VSELGT (NaN compares unordered, so it gives 0 as the portable loop does), VSTM.
#define TC_RELU_SEL(I, SRC)                              \
    "vcmp.f32 s" #I ", #0.0\n"                           \
    "vmrs APSR_nzcv, fpscr\n"                            \
    "vselgt.f32 s" #I ", " SRC #I ", %[zero]\n"

void tc_relu_f32_fwd(const float* x, float* y, int32_t n) {
    int32_t blocks = n >> 3;
    if (blocks > 0) {
        const float zero = 0.0f;
        __asm__ volatile(
            "1:\n"
            "vldmia %[x]!, {s0-s7}\n"
            TC_RELU_SEL(0, "s") TC_RELU_SEL(1, "s") TC_RELU_SEL(2, "s") TC_RELU_SEL(3, "s")
            TC_RELU_SEL(4, "s") TC_RELU_SEL(5, "s") TC_RELU_SEL(6, "s") TC_RELU_SEL(7, "s")
            "vstmia %[y]!, {s0-s7}\n"
            "subs %[n], %[n], #1\n"
            "bne 1b\n"
            : [x] "+r"(x), [y] "+r"(y), [n] "+r"(blocks)
            : [zero] "t"(zero)
            : "s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7", "cc", "memory");
    }
    relu_fwd_plain(x, y, n & 7);
}

// dx = x > 0 ? dy : 0 with x in s0-s7 and dy in s8-s15.
#define TC_RELU_BWD(I, J)                                \
    "vcmp.f32 s" #I ", #0.0\n"                           \
    "vmrs APSR_nzcv, fpscr\n"                            \
    "vselgt.f32 s" #I ", s" #J ", %[zero]\n"

void tc_relu_f32_bwd(const float* x, const float* dy, float* dx, int32_t n) {
    int32_t blocks = n >> 3;
    if (blocks > 0) {
        const float zero = 0.0f;
        __asm__ volatile(
            "1:\n"
            "vldmia %[x]!, {s0-s7}\n"
            "vldmia %[dy]!, {s8-s15}\n"
            TC_RELU_BWD(0, 8) TC_RELU_BWD(1, 9) TC_RELU_BWD(2, 10) TC_RELU_BWD(3, 11)
            TC_RELU_BWD(4, 12) TC_RELU_BWD(5, 13) TC_RELU_BWD(6, 14) TC_RELU_BWD(7, 15)
            "vstmia %[dx]!, {s0-s7}\n"
            "subs %[n], %[n], #1\n"
            "bne 1b\n"
            : [x] "+r"(x), [dy] "+r"(dy), [dx] "+r"(dx), [n] "+r"(blocks)
            : [zero] "t"(zero)
            : "s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9", "s10", "s11", "s12",
              "s13", "s14", "s15", "cc", "memory");
    }
    relu_bwd_plain(x, dy, dx, n & 7);
}
#undef TC_RELU_SEL
#undef TC_RELU_BWD

#else

void tc_relu_f32_fwd(const float* x, float* y, int32_t n) { relu_fwd_plain(x, y, n); }

void tc_relu_f32_bwd(const float* x, const float* dy, float* dx, int32_t n) {
    relu_bwd_plain(x, dy, dx, n);
}

#endif

void tc_relu6_f32_fwd(const float* x, float* y, int32_t n) {
    for (int32_t i = 0; i < n; ++i) y[i] = x[i] > 0.0f ? (x[i] < 6.0f ? x[i] : 6.0f) : 0.0f;
}

void tc_relu6_f32_bwd(const float* x, const float* dy, float* dx, int32_t n) {
    for (int32_t i = 0; i < n; ++i) dx[i] = (x[i] > 0.0f && x[i] < 6.0f) ? dy[i] : 0.0f;
}
