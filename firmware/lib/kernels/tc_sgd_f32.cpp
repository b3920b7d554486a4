#include "tc_sgd_f32.h"

namespace {

// Portable element loops: the reference order, and the remainders of the blocked loops.
void sgd_plain(float* w, float* v, const float* g, int32_t n, float lr, float momentum) {
    for (int32_t i = 0; i < n; ++i) {
        const float vi = momentum * v[i] + g[i];
        v[i] = vi;
        w[i] = w[i] - lr * vi;
    }
}

void sgd_fma(float* w, float* v, const float* g, int32_t n, float lr, float momentum,
             float scale) {
    for (int32_t i = 0; i < n; ++i) {
        const float gi = scale == 1.0f ? g[i] : g[i] * scale;
        const float vi = fmaf(momentum, v[i], gi);
        v[i] = vi;
        w[i] = fmaf(-lr, vi, w[i]);
    }
}

// One row of the outer-product update: g = a * x[c].
void sgd_outer_row(float* w, float* v, float a, const float* x, int32_t n, float lr,
                   float momentum) {
    for (int32_t i = 0; i < n; ++i) {
        const float vi = fmaf(momentum, v[i], a * x[i]);
        v[i] = vi;
        w[i] = fmaf(-lr, vi, w[i]);
    }
}

float sum_squares_plain(const float* p, int32_t n, float acc) {
    for (int32_t i = 0; i < n; ++i) acc = fmaf(p[i], p[i], acc);
    return acc;
}

}  // namespace

#if defined(TC_KERNELS_ARM_FPU)

// Eight elements per round: three VLDM, 32 arithmetic instructions, two VSTM, two for the loop
// (4.9 instructions per element; the rounding of every product forbids fusing).
// Registers: v s0-s7, g s8-s15, w s16-s23.
void tc_sgd_momentum_f32(float* w, float* v, const float* g, int32_t n, float lr,
                         float momentum) {
    int32_t blocks = n >> 3;
    if (blocks > 0) {
        float* wp = w;
        float* vp = v;
        const float* gp = g;
        __asm__ volatile(
            "1:\n"
            "vldmia %[v], {s0-s7}\n"
            "vldmia %[g]!, {s8-s15}\n"
            "vldmia %[w], {s16-s23}\n"
            "vmul.f32 s0, s0, %[m]\n vmul.f32 s1, s1, %[m]\n vmul.f32 s2, s2, %[m]\n"
            "vmul.f32 s3, s3, %[m]\n vmul.f32 s4, s4, %[m]\n vmul.f32 s5, s5, %[m]\n"
            "vmul.f32 s6, s6, %[m]\n vmul.f32 s7, s7, %[m]\n"
            "vadd.f32 s0, s0, s8\n vadd.f32 s1, s1, s9\n vadd.f32 s2, s2, s10\n"
            "vadd.f32 s3, s3, s11\n vadd.f32 s4, s4, s12\n vadd.f32 s5, s5, s13\n"
            "vadd.f32 s6, s6, s14\n vadd.f32 s7, s7, s15\n"
            "vmul.f32 s8, %[lr], s0\n vmul.f32 s9, %[lr], s1\n vmul.f32 s10, %[lr], s2\n"
            "vmul.f32 s11, %[lr], s3\n vmul.f32 s12, %[lr], s4\n vmul.f32 s13, %[lr], s5\n"
            "vmul.f32 s14, %[lr], s6\n vmul.f32 s15, %[lr], s7\n"
            "vsub.f32 s16, s16, s8\n vsub.f32 s17, s17, s9\n vsub.f32 s18, s18, s10\n"
            "vsub.f32 s19, s19, s11\n vsub.f32 s20, s20, s12\n vsub.f32 s21, s21, s13\n"
            "vsub.f32 s22, s22, s14\n vsub.f32 s23, s23, s15\n"
            "vstmia %[v]!, {s0-s7}\n"
            "vstmia %[w]!, {s16-s23}\n"
            "subs %[n], %[n], #1\n"
            "bne 1b\n"
            : [w] "+r"(wp), [v] "+r"(vp), [g] "+r"(gp), [n] "+r"(blocks)
            : [m] "t"(momentum), [lr] "t"(lr)
            : "s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9", "s10", "s11", "s12",
              "s13", "s14", "s15", "s16", "s17", "s18", "s19", "s20", "s21", "s22", "s23", "cc",
              "memory");
    }
    const int32_t done = n & ~7;
    sgd_plain(w + done, v + done, g + done, n - done, lr, momentum);
}

// Eight elements per round: three VLDM, 8 VFMA + 8 VFMS (+ 8 VMUL when clipping), two VSTM and
// two loop instructions: 2.9 instructions per element (3.9 when clipping).
// Registers: v s0-s7, g then the new v s8-s15, w s16-s23.
#define TC_SGD_FMA_BODY(SCALE)                                       \
    "1:\n"                                                           \
    "vldmia %[v], {s0-s7}\n"                                         \
    "vldmia %[g]!, {s8-s15}\n"                                       \
    "vldmia %[w], {s16-s23}\n"                                       \
    SCALE                                                            \
    "vfma.f32 s8, %[m], s0\n vfma.f32 s9, %[m], s1\n"                \
    "vfma.f32 s10, %[m], s2\n vfma.f32 s11, %[m], s3\n"              \
    "vfma.f32 s12, %[m], s4\n vfma.f32 s13, %[m], s5\n"              \
    "vfma.f32 s14, %[m], s6\n vfma.f32 s15, %[m], s7\n"              \
    "vfms.f32 s16, %[lr], s8\n vfms.f32 s17, %[lr], s9\n"            \
    "vfms.f32 s18, %[lr], s10\n vfms.f32 s19, %[lr], s11\n"          \
    "vfms.f32 s20, %[lr], s12\n vfms.f32 s21, %[lr], s13\n"          \
    "vfms.f32 s22, %[lr], s14\n vfms.f32 s23, %[lr], s15\n"          \
    "vstmia %[v]!, {s8-s15}\n"                                       \
    "vstmia %[w]!, {s16-s23}\n"                                      \
    "subs %[n], %[n], #1\n"                                          \
    "bne 1b\n"
#define TC_SGD_FMA_SCALE                                             \
    "vmul.f32 s8, s8, %[s]\n vmul.f32 s9, s9, %[s]\n"                \
    "vmul.f32 s10, s10, %[s]\n vmul.f32 s11, s11, %[s]\n"            \
    "vmul.f32 s12, s12, %[s]\n vmul.f32 s13, s13, %[s]\n"            \
    "vmul.f32 s14, s14, %[s]\n vmul.f32 s15, s15, %[s]\n"
#define TC_SGD_FMA_OPERANDS                                                                  \
    : [w] "+r"(wp), [v] "+r"(vp), [g] "+r"(gp), [n] "+r"(blocks)                             \
    : [m] "t"(momentum), [lr] "t"(lr), [s] "t"(scale)                                        \
    : "s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9", "s10", "s11", "s12", "s13", \
      "s14", "s15", "s16", "s17", "s18", "s19", "s20", "s21", "s22", "s23", "cc", "memory"

void tc_sgd_momentum_fma_f32(float* w, float* v, const float* g, int32_t n, float lr,
                             float momentum, float scale) {
    int32_t blocks = n >> 3;
    if (blocks > 0) {
        float* wp = w;
        float* vp = v;
        const float* gp = g;
        if (scale == 1.0f)
            __asm__ volatile(TC_SGD_FMA_BODY("") TC_SGD_FMA_OPERANDS);
        else
            __asm__ volatile(TC_SGD_FMA_BODY(TC_SGD_FMA_SCALE) TC_SGD_FMA_OPERANDS);
    }
    const int32_t done = n & ~7;
    sgd_fma(w + done, v + done, g + done, n - done, lr, momentum, scale);
}
#undef TC_SGD_FMA_BODY
#undef TC_SGD_FMA_SCALE
#undef TC_SGD_FMA_OPERANDS

// Four rows x eight columns per round: one VLDM of x shared by the rows; per row 2 VLDM,
// 8 VMUL (the gradient), 8 VFMA (the velocity), 8 VFMS (the weight) and 2 VSTM: 3.6
// instructions per weight, against about 1.2 to store the gradient, 1.1 for its norm and 2.9
// for the update when it is stored. Registers: x s0-s7, g then the new v s8-s15, v then w
// s16-s23, the four rows' factors, momentum and lr wherever the compiler puts them (s24-s31).
#define TC_OUTER_ROW(V, W, A)                                                  \
    "vldmia %[" V "], {s16-s23}\n"                                             \
    "vmul.f32 s8, %[" A "], s0\n vmul.f32 s9, %[" A "], s1\n"                  \
    "vmul.f32 s10, %[" A "], s2\n vmul.f32 s11, %[" A "], s3\n"                \
    "vmul.f32 s12, %[" A "], s4\n vmul.f32 s13, %[" A "], s5\n"                \
    "vmul.f32 s14, %[" A "], s6\n vmul.f32 s15, %[" A "], s7\n"                \
    "vfma.f32 s8, %[m], s16\n vfma.f32 s9, %[m], s17\n"                        \
    "vfma.f32 s10, %[m], s18\n vfma.f32 s11, %[m], s19\n"                      \
    "vfma.f32 s12, %[m], s20\n vfma.f32 s13, %[m], s21\n"                      \
    "vfma.f32 s14, %[m], s22\n vfma.f32 s15, %[m], s23\n"                      \
    "vstmia %[" V "]!, {s8-s15}\n"                                             \
    "vldmia %[" W "], {s16-s23}\n"                                             \
    "vfms.f32 s16, %[lr], s8\n vfms.f32 s17, %[lr], s9\n"                      \
    "vfms.f32 s18, %[lr], s10\n vfms.f32 s19, %[lr], s11\n"                    \
    "vfms.f32 s20, %[lr], s12\n vfms.f32 s21, %[lr], s13\n"                    \
    "vfms.f32 s22, %[lr], s14\n vfms.f32 s23, %[lr], s15\n"                    \
    "vstmia %[" W "]!, {s16-s23}\n"

#define TC_OUTER_ROW4(V, W, A)                                                 \
    "vldmia %[" V "], {s16-s19}\n"                                            \
    "vmul.f32 s8, %[" A "], s0\n vmul.f32 s9, %[" A "], s1\n"                 \
    "vmul.f32 s10, %[" A "], s2\n vmul.f32 s11, %[" A "], s3\n"               \
    "vfma.f32 s8, %[m], s16\n vfma.f32 s9, %[m], s17\n"                       \
    "vfma.f32 s10, %[m], s18\n vfma.f32 s11, %[m], s19\n"                     \
    "vstmia %[" V "]!, {s8-s11}\n"                                            \
    "vldmia %[" W "], {s16-s19}\n"                                            \
    "vfms.f32 s16, %[lr], s8\n vfms.f32 s17, %[lr], s9\n"                     \
    "vfms.f32 s18, %[lr], s10\n vfms.f32 s19, %[lr], s11\n"                   \
    "vstmia %[" W "]!, {s16-s19}\n"

void tc_sgd_momentum_outer_f32(float* w, float* v, int32_t rows, int32_t cols, const float* dy,
                               const float* x, float lr, float momentum, float scale) {
    int32_t r = 0;
    const int32_t blocks = cols >> 3, done = cols & ~7;
    const bool scaled = scale != 1.0f;
    for (; r + 4 <= rows; r += 4) {
        float a0 = dy[r], a1 = dy[r + 1], a2 = dy[r + 2], a3 = dy[r + 3];
        if (scaled) {
            a0 *= scale;
            a1 *= scale;
            a2 *= scale;
            a3 *= scale;
        }
        float* w0 = w + (size_t)r * cols;
        float* v0 = v + (size_t)r * cols;
        float *w1 = w0 + cols, *w2 = w1 + cols, *w3 = w2 + cols;
        float *v1 = v0 + cols, *v2 = v1 + cols, *v3 = v2 + cols;
        const float* xp = x;
        if (blocks > 0) {
            int32_t n = blocks;
            __asm__ volatile(
                "1:\n"
                "vldmia %[x]!, {s0-s7}\n"
                TC_OUTER_ROW("v0", "w0", "a0") TC_OUTER_ROW("v1", "w1", "a1")
                TC_OUTER_ROW("v2", "w2", "a2") TC_OUTER_ROW("v3", "w3", "a3")
                "subs %[n], %[n], #1\n"
                "bne 1b\n"
                : [x] "+r"(xp), [w0] "+r"(w0), [w1] "+r"(w1), [w2] "+r"(w2), [w3] "+r"(w3),
                  [v0] "+r"(v0), [v1] "+r"(v1), [v2] "+r"(v2), [v3] "+r"(v3), [n] "+r"(n)
                : [a0] "t"(a0), [a1] "t"(a1), [a2] "t"(a2), [a3] "t"(a3), [m] "t"(momentum),
                  [lr] "t"(lr)
                : "s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9", "s10", "s11",
                  "s12", "s13", "s14", "s15", "s16", "s17", "s18", "s19", "s20", "s21", "s22",
                  "s23", "cc", "memory");
        }
        // The pointers now stand at column `done` of their rows.
        if (cols & 4)  // four columns left: the same on half a block
            __asm__ volatile(
                "vldmia %[x]!, {s0-s3}\n"
                TC_OUTER_ROW4("v0", "w0", "a0") TC_OUTER_ROW4("v1", "w1", "a1")
                TC_OUTER_ROW4("v2", "w2", "a2") TC_OUTER_ROW4("v3", "w3", "a3")
                : [x] "+r"(xp), [w0] "+r"(w0), [w1] "+r"(w1), [w2] "+r"(w2), [w3] "+r"(w3),
                  [v0] "+r"(v0), [v1] "+r"(v1), [v2] "+r"(v2), [v3] "+r"(v3)
                : [a0] "t"(a0), [a1] "t"(a1), [a2] "t"(a2), [a3] "t"(a3), [m] "t"(momentum),
                  [lr] "t"(lr)
                : "s0", "s1", "s2", "s3", "s8", "s9", "s10", "s11", "s16", "s17", "s18", "s19",
                  "memory");
        const int32_t rest = cols & 3;
        if (rest) {
            const int32_t c = cols - rest;
            sgd_outer_row(w0, v0, a0, x + c, rest, lr, momentum);
            sgd_outer_row(w1, v1, a1, x + c, rest, lr, momentum);
            sgd_outer_row(w2, v2, a2, x + c, rest, lr, momentum);
            sgd_outer_row(w3, v3, a3, x + c, rest, lr, momentum);
        }
    }
    for (; r < rows; ++r) {  // a row left over: eight columns per round
        const float a = scale == 1.0f ? dy[r] : dy[r] * scale;
        float* wr = w + (size_t)r * cols;
        float* vr = v + (size_t)r * cols;
        const float* xp = x;
        if (blocks > 0) {
            int32_t n = blocks;
            __asm__ volatile(
                "1:\n"
                "vldmia %[x]!, {s0-s7}\n"
                TC_OUTER_ROW("v0", "w0", "a0")
                "subs %[n], %[n], #1\n"
                "bne 1b\n"
                : [x] "+r"(xp), [w0] "+r"(wr), [v0] "+r"(vr), [n] "+r"(n)
                : [a0] "t"(a), [m] "t"(momentum), [lr] "t"(lr)
                : "s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9", "s10", "s11",
                  "s12", "s13", "s14", "s15", "s16", "s17", "s18", "s19", "s20", "s21", "s22",
                  "s23", "cc", "memory");
        }
        sgd_outer_row(wr, vr, a, xp, cols - done, lr, momentum);
    }
}
#undef TC_OUTER_ROW
#undef TC_OUTER_ROW4

// Sixteen squares per VLDM into one accumulator, in element order.
float tc_f32_sum_squares(const float* p, int32_t n, float acc) {
    int32_t blocks = n >> 4;
    if (blocks > 0) {
        __asm__ volatile(
            "1:\n"
            "vldmia %[p]!, {s0-s15}\n"
            "vfma.f32 %[acc], s0, s0\n vfma.f32 %[acc], s1, s1\n"
            "vfma.f32 %[acc], s2, s2\n vfma.f32 %[acc], s3, s3\n"
            "vfma.f32 %[acc], s4, s4\n vfma.f32 %[acc], s5, s5\n"
            "vfma.f32 %[acc], s6, s6\n vfma.f32 %[acc], s7, s7\n"
            "vfma.f32 %[acc], s8, s8\n vfma.f32 %[acc], s9, s9\n"
            "vfma.f32 %[acc], s10, s10\n vfma.f32 %[acc], s11, s11\n"
            "vfma.f32 %[acc], s12, s12\n vfma.f32 %[acc], s13, s13\n"
            "vfma.f32 %[acc], s14, s14\n vfma.f32 %[acc], s15, s15\n"
            "subs %[n], %[n], #1\n"
            "bne 1b\n"
            : [p] "+r"(p), [n] "+r"(blocks), [acc] "+t"(acc)
            :
            : "s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9", "s10", "s11", "s12",
              "s13", "s14", "s15", "cc", "memory");
    }
    return sum_squares_plain(p, n & 15, acc);
}

#else  // portable versions: the same per-element operation order

void tc_sgd_momentum_f32(float* w, float* v, const float* g, int32_t n, float lr,
                         float momentum) {
    sgd_plain(w, v, g, n, lr, momentum);
}

void tc_sgd_momentum_fma_f32(float* w, float* v, const float* g, int32_t n, float lr,
                             float momentum, float scale) {
    sgd_fma(w, v, g, n, lr, momentum, scale);
}

void tc_sgd_momentum_outer_f32(float* w, float* v, int32_t rows, int32_t cols, const float* dy,
                               const float* x, float lr, float momentum, float scale) {
    for (int32_t r = 0; r < rows; ++r) {
        const float a = scale == 1.0f ? dy[r] : dy[r] * scale;
        sgd_outer_row(w + (size_t)r * cols, v + (size_t)r * cols, a, x, cols, lr, momentum);
    }
}

float tc_f32_sum_squares(const float* p, int32_t n, float acc) {
    return sum_squares_plain(p, n, acc);
}

#endif

float tc_grad_global_norm_f32(float* const* grads, const int32_t* sizes, int32_t count) {
    float sum = 0.0f;
    for (int32_t t = 0; t < count; ++t) sum = tc_f32_sum_squares(grads[t], sizes[t], sum);
    return sqrtf(sum);
}

float tc_clip_factor_f32(float norm, float max_norm) {
    return max_norm > 0.0f && norm > max_norm ? max_norm / norm : 1.0f;
}

float tc_clip_grad_global_norm_f32(float* const* grads, const int32_t* sizes, int32_t count,
                                   float max_norm) {
    const float norm = tc_grad_global_norm_f32(grads, sizes, count);
    if (norm > max_norm) {
        const float scale = max_norm / norm;
        for (int32_t t = 0; t < count; ++t) tc_f32_scale_set(grads[t], scale, grads[t], sizes[t]);
    }
    return norm;
}
