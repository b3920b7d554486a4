#include "tc_kernels_common.h"

bool tc_window_dims_init(tc_window_dims* d, int32_t batch, int32_t in_h, int32_t in_w,
                         int32_t in_c, int32_t out_c, int32_t k_h, int32_t k_w, int32_t stride_h,
                         int32_t stride_w, tc_padding padding, int32_t depth_multiplier) {
    d->batch = batch;
    d->in_h = in_h;
    d->in_w = in_w;
    d->in_c = in_c;
    d->out_c = out_c;
    d->k_h = k_h;
    d->k_w = k_w;
    d->stride_h = stride_h;
    d->stride_w = stride_w;
    d->depth_multiplier = depth_multiplier;
    d->out_h = 0;
    d->out_w = 0;
    d->pad_top = 0;
    d->pad_left = 0;
    if (batch <= 0 || in_h <= 0 || in_w <= 0 || in_c <= 0 || out_c <= 0 || k_h <= 0 ||
        k_w <= 0 || stride_h <= 0 || stride_w <= 0 || depth_multiplier <= 0)
        return false;
    if (padding == TC_PADDING_SAME) {
        d->out_h = (in_h + stride_h - 1) / stride_h;
        d->out_w = (in_w + stride_w - 1) / stride_w;
        const int32_t total_h = (d->out_h - 1) * stride_h + k_h - in_h;
        const int32_t total_w = (d->out_w - 1) * stride_w + k_w - in_w;
        d->pad_top = total_h > 0 ? total_h / 2 : 0;
        d->pad_left = total_w > 0 ? total_w / 2 : 0;
    } else {
        if (k_h > in_h || k_w > in_w) return false;
        d->out_h = (in_h - k_h) / stride_h + 1;
        d->out_w = (in_w - k_w) / stride_w + 1;
    }
    return true;
}

namespace {

// Element loops: the reference order, and the few leftover elements of the blocked loops.
void scale_set_plain(float* d, float a, const float* x, int32_t n) {
    for (int32_t i = 0; i < n; ++i) d[i] = a * x[i];
}

float dot1_plain(const float* x, const float* w, int32_t n, float acc) {
    for (int32_t i = 0; i < n; ++i) acc = fmaf(x[i], w[i], acc);
    return acc;
}

void axpy1_plain(float* y, float a, const float* x, int32_t n) {
    for (int32_t i = 0; i < n; ++i) y[i] = fmaf(a, x[i], y[i]);
}

}  // namespace

#if defined(TC_KERNELS_ARM_FPU)

#define TC_S8_CLOBBER "s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7"
#define TC_S16_CLOBBER TC_S8_CLOBBER, "s8", "s9", "s10", "s11", "s12", "s13", "s14", "s15"

// One row, eight floats per round (a row left over beside the four-row blocks, or a kernel row
// of a convolution): two VLDM, eight VFMA, two loop instructions.
float tc_f32_dot1(const float* x, const float* w, int32_t n, float acc) {
    int32_t blocks = n >> 3;
    if (blocks > 0)
        __asm__ volatile(
            "1:\n"
            "vldmia %[x]!, {s0-s7}\n"
            "vldmia %[w]!, {s8-s15}\n"
            "vfma.f32 %[acc], s0, s8\n vfma.f32 %[acc], s1, s9\n"
            "vfma.f32 %[acc], s2, s10\n vfma.f32 %[acc], s3, s11\n"
            "vfma.f32 %[acc], s4, s12\n vfma.f32 %[acc], s5, s13\n"
            "vfma.f32 %[acc], s6, s14\n vfma.f32 %[acc], s7, s15\n"
            "subs %[n], %[n], #1\n"
            "bne 1b\n"
            : [x] "+r"(x), [w] "+r"(w), [n] "+r"(blocks), [acc] "+t"(acc)
            :
            : TC_S16_CLOBBER, "cc", "memory");
    return dot1_plain(x, w, n & 7, acc);
}

void tc_f32_axpy1(float* y, float a, const float* x, int32_t n) {
    int32_t blocks = n >> 3;
    if (blocks > 0)
        __asm__ volatile(
            "1:\n"
            "vldmia %[y], {s0-s7}\n"
            "vldmia %[x]!, {s8-s15}\n"
            "vfma.f32 s0, %[a], s8\n vfma.f32 s1, %[a], s9\n"
            "vfma.f32 s2, %[a], s10\n vfma.f32 s3, %[a], s11\n"
            "vfma.f32 s4, %[a], s12\n vfma.f32 s5, %[a], s13\n"
            "vfma.f32 s6, %[a], s14\n vfma.f32 s7, %[a], s15\n"
            "vstmia %[y]!, {s0-s7}\n"
            "subs %[n], %[n], #1\n"
            "bne 1b\n"
            : [x] "+r"(x), [y] "+r"(y), [n] "+r"(blocks)
            : [a] "t"(a)
            : TC_S16_CLOBBER, "cc", "memory");
    axpy1_plain(y, a, x, n & 7);
}

void tc_f32_scale_set(float* d, float a, const float* x, int32_t n) {
    int32_t blocks = n >> 3;
    if (blocks > 0)
        __asm__ volatile(
            "1:\n"
            "vldmia %[x]!, {s8-s15}\n"
            "vmul.f32 s0, %[a], s8\n vmul.f32 s1, %[a], s9\n"
            "vmul.f32 s2, %[a], s10\n vmul.f32 s3, %[a], s11\n"
            "vmul.f32 s4, %[a], s12\n vmul.f32 s5, %[a], s13\n"
            "vmul.f32 s6, %[a], s14\n vmul.f32 s7, %[a], s15\n"
            "vstmia %[d]!, {s0-s7}\n"
            "subs %[n], %[n], #1\n"
            "bne 1b\n"
            : [x] "+r"(x), [d] "+r"(d), [n] "+r"(blocks)
            : [a] "t"(a)
            : TC_S16_CLOBBER, "cc", "memory");
    scale_set_plain(d, a, x, n & 7);
}

// Blocks of eight floats: one VLDM brings in eight values, so a block of 4 rows x 8 columns
// costs 5 loads + 32 VFMA + 2 loop instructions.
void tc_f32_dot4(const float* x, const float* w, int32_t w_stride, int32_t n, float acc[4]) {
    const float* w0 = w;
    const float* w1 = w + w_stride;
    const float* w2 = w + 2 * w_stride;
    const float* w3 = w + 3 * w_stride;
    int32_t blocks = n >> 3;
    if (blocks > 0) {
        __asm__ volatile(
            "vldmia %[acc], {s16-s19}\n"
            "1:\n"
            "vldmia %[x]!, {s0-s7}\n"
            "vldmia %[w0]!, {s8-s15}\n"
            "vfma.f32 s16, s0, s8\n"
            "vfma.f32 s16, s1, s9\n"
            "vfma.f32 s16, s2, s10\n"
            "vfma.f32 s16, s3, s11\n"
            "vfma.f32 s16, s4, s12\n"
            "vfma.f32 s16, s5, s13\n"
            "vfma.f32 s16, s6, s14\n"
            "vfma.f32 s16, s7, s15\n"
            "vldmia %[w1]!, {s8-s15}\n"
            "vfma.f32 s17, s0, s8\n"
            "vfma.f32 s17, s1, s9\n"
            "vfma.f32 s17, s2, s10\n"
            "vfma.f32 s17, s3, s11\n"
            "vfma.f32 s17, s4, s12\n"
            "vfma.f32 s17, s5, s13\n"
            "vfma.f32 s17, s6, s14\n"
            "vfma.f32 s17, s7, s15\n"
            "vldmia %[w2]!, {s8-s15}\n"
            "vfma.f32 s18, s0, s8\n"
            "vfma.f32 s18, s1, s9\n"
            "vfma.f32 s18, s2, s10\n"
            "vfma.f32 s18, s3, s11\n"
            "vfma.f32 s18, s4, s12\n"
            "vfma.f32 s18, s5, s13\n"
            "vfma.f32 s18, s6, s14\n"
            "vfma.f32 s18, s7, s15\n"
            "vldmia %[w3]!, {s8-s15}\n"
            "vfma.f32 s19, s0, s8\n"
            "vfma.f32 s19, s1, s9\n"
            "vfma.f32 s19, s2, s10\n"
            "vfma.f32 s19, s3, s11\n"
            "vfma.f32 s19, s4, s12\n"
            "vfma.f32 s19, s5, s13\n"
            "vfma.f32 s19, s6, s14\n"
            "vfma.f32 s19, s7, s15\n"
            "subs %[n], %[n], #1\n"
            "bne 1b\n"
            "vstmia %[acc], {s16-s19}\n"
            : [x] "+r"(x), [w0] "+r"(w0), [w1] "+r"(w1), [w2] "+r"(w2), [w3] "+r"(w3),
              [n] "+r"(blocks)
            : [acc] "r"(acc)
            : "s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9", "s10", "s11", "s12",
              "s13", "s14", "s15", "s16", "s17", "s18", "s19", "cc", "memory");
    }
    if (n & 4)  // four columns left: the same pattern on half a block
        __asm__ volatile(
            "vldmia %[acc], {s16-s19}\n"
            "vldmia %[x]!, {s0-s3}\n"
            "vldmia %[w0]!, {s8-s11}\n"
            "vfma.f32 s16, s0, s8\n vfma.f32 s16, s1, s9\n"
            "vfma.f32 s16, s2, s10\n vfma.f32 s16, s3, s11\n"
            "vldmia %[w1]!, {s8-s11}\n"
            "vfma.f32 s17, s0, s8\n vfma.f32 s17, s1, s9\n"
            "vfma.f32 s17, s2, s10\n vfma.f32 s17, s3, s11\n"
            "vldmia %[w2]!, {s8-s11}\n"
            "vfma.f32 s18, s0, s8\n vfma.f32 s18, s1, s9\n"
            "vfma.f32 s18, s2, s10\n vfma.f32 s18, s3, s11\n"
            "vldmia %[w3]!, {s8-s11}\n"
            "vfma.f32 s19, s0, s8\n vfma.f32 s19, s1, s9\n"
            "vfma.f32 s19, s2, s10\n vfma.f32 s19, s3, s11\n"
            "vstmia %[acc], {s16-s19}\n"
            : [x] "+r"(x), [w0] "+r"(w0), [w1] "+r"(w1), [w2] "+r"(w2), [w3] "+r"(w3)
            : [acc] "r"(acc)
            : "s0", "s1", "s2", "s3", "s8", "s9", "s10", "s11", "s16", "s17", "s18", "s19",
              "memory");
    // One to three columns left: inline, each row's chain in column order (a call per row
    // would cost more than these few taps).
    const int32_t rest = n & 3;
    if (rest == 0) return;
    float a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3];
    for (int32_t i = 0; i < rest; ++i) {
        const float xi = x[i];
        a0 = fmaf(xi, w0[i], a0);
        a1 = fmaf(xi, w1[i], a1);
        a2 = fmaf(xi, w2[i], a2);
        a3 = fmaf(xi, w3[i], a3);
    }
    acc[0] = a0;
    acc[1] = a1;
    acc[2] = a2;
    acc[3] = a3;
}

void tc_f32_axpy4(float* y, const float a[4], const float* w, int32_t w_stride, int32_t n) {
    const float* w0 = w;
    const float* w1 = w + w_stride;
    const float* w2 = w + 2 * w_stride;
    const float* w3 = w + 3 * w_stride;
    int32_t blocks = n >> 3;
    if (blocks > 0) {
        __asm__ volatile(
            "vldmia %[a], {s16-s19}\n"
            "1:\n"
            "vldmia %[y], {s0-s7}\n"
            "vldmia %[w0]!, {s8-s15}\n"
            "vfma.f32 s0, s16, s8\n"
            "vfma.f32 s1, s16, s9\n"
            "vfma.f32 s2, s16, s10\n"
            "vfma.f32 s3, s16, s11\n"
            "vfma.f32 s4, s16, s12\n"
            "vfma.f32 s5, s16, s13\n"
            "vfma.f32 s6, s16, s14\n"
            "vfma.f32 s7, s16, s15\n"
            "vldmia %[w1]!, {s8-s15}\n"
            "vfma.f32 s0, s17, s8\n"
            "vfma.f32 s1, s17, s9\n"
            "vfma.f32 s2, s17, s10\n"
            "vfma.f32 s3, s17, s11\n"
            "vfma.f32 s4, s17, s12\n"
            "vfma.f32 s5, s17, s13\n"
            "vfma.f32 s6, s17, s14\n"
            "vfma.f32 s7, s17, s15\n"
            "vldmia %[w2]!, {s8-s15}\n"
            "vfma.f32 s0, s18, s8\n"
            "vfma.f32 s1, s18, s9\n"
            "vfma.f32 s2, s18, s10\n"
            "vfma.f32 s3, s18, s11\n"
            "vfma.f32 s4, s18, s12\n"
            "vfma.f32 s5, s18, s13\n"
            "vfma.f32 s6, s18, s14\n"
            "vfma.f32 s7, s18, s15\n"
            "vldmia %[w3]!, {s8-s15}\n"
            "vfma.f32 s0, s19, s8\n"
            "vfma.f32 s1, s19, s9\n"
            "vfma.f32 s2, s19, s10\n"
            "vfma.f32 s3, s19, s11\n"
            "vfma.f32 s4, s19, s12\n"
            "vfma.f32 s5, s19, s13\n"
            "vfma.f32 s6, s19, s14\n"
            "vfma.f32 s7, s19, s15\n"
            "vstmia %[y]!, {s0-s7}\n"
            "subs %[n], %[n], #1\n"
            "bne 1b\n"
            : [y] "+r"(y), [w0] "+r"(w0), [w1] "+r"(w1), [w2] "+r"(w2), [w3] "+r"(w3),
              [n] "+r"(blocks)
            : [a] "r"(a)
            : "s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9", "s10", "s11", "s12",
              "s13", "s14", "s15", "s16", "s17", "s18", "s19", "cc", "memory");
    }
    if (n & 4)
        __asm__ volatile(
            "vldmia %[a], {s16-s19}\n"
            "vldmia %[y], {s0-s3}\n"
            "vldmia %[w0]!, {s8-s11}\n"
            "vfma.f32 s0, s16, s8\n vfma.f32 s1, s16, s9\n"
            "vfma.f32 s2, s16, s10\n vfma.f32 s3, s16, s11\n"
            "vldmia %[w1]!, {s8-s11}\n"
            "vfma.f32 s0, s17, s8\n vfma.f32 s1, s17, s9\n"
            "vfma.f32 s2, s17, s10\n vfma.f32 s3, s17, s11\n"
            "vldmia %[w2]!, {s8-s11}\n"
            "vfma.f32 s0, s18, s8\n vfma.f32 s1, s18, s9\n"
            "vfma.f32 s2, s18, s10\n vfma.f32 s3, s18, s11\n"
            "vldmia %[w3]!, {s8-s11}\n"
            "vfma.f32 s0, s19, s8\n vfma.f32 s1, s19, s9\n"
            "vfma.f32 s2, s19, s10\n vfma.f32 s3, s19, s11\n"
            "vstmia %[y]!, {s0-s3}\n"
            : [y] "+r"(y), [w0] "+r"(w0), [w1] "+r"(w1), [w2] "+r"(w2), [w3] "+r"(w3)
            : [a] "r"(a)
            : "s0", "s1", "s2", "s3", "s8", "s9", "s10", "s11", "s16", "s17", "s18", "s19",
              "memory");
    const int32_t rest = n & 3;
    for (int32_t i = 0; i < rest; ++i)
        y[i] = fmaf(a[3], w3[i], fmaf(a[2], w2[i], fmaf(a[1], w1[i], fmaf(a[0], w0[i], y[i]))));
}

void tc_f32_ger4(float* d, int32_t d_stride, const float a[4], const float* x, int32_t n) {
    float* d0 = d;
    float* d1 = d + d_stride;
    float* d2 = d + 2 * d_stride;
    float* d3 = d + 3 * d_stride;
    int32_t blocks = n >> 3;
    if (blocks > 0) {
        __asm__ volatile(
            "vldmia %[a], {s16-s19}\n"
            "1:\n"
            "vldmia %[x]!, {s0-s7}\n"
            "vldmia %[d0], {s8-s15}\n"
            "vfma.f32 s8, s16, s0\n"
            "vfma.f32 s9, s16, s1\n"
            "vfma.f32 s10, s16, s2\n"
            "vfma.f32 s11, s16, s3\n"
            "vfma.f32 s12, s16, s4\n"
            "vfma.f32 s13, s16, s5\n"
            "vfma.f32 s14, s16, s6\n"
            "vfma.f32 s15, s16, s7\n"
            "vstmia %[d0]!, {s8-s15}\n"
            "vldmia %[d1], {s8-s15}\n"
            "vfma.f32 s8, s17, s0\n"
            "vfma.f32 s9, s17, s1\n"
            "vfma.f32 s10, s17, s2\n"
            "vfma.f32 s11, s17, s3\n"
            "vfma.f32 s12, s17, s4\n"
            "vfma.f32 s13, s17, s5\n"
            "vfma.f32 s14, s17, s6\n"
            "vfma.f32 s15, s17, s7\n"
            "vstmia %[d1]!, {s8-s15}\n"
            "vldmia %[d2], {s8-s15}\n"
            "vfma.f32 s8, s18, s0\n"
            "vfma.f32 s9, s18, s1\n"
            "vfma.f32 s10, s18, s2\n"
            "vfma.f32 s11, s18, s3\n"
            "vfma.f32 s12, s18, s4\n"
            "vfma.f32 s13, s18, s5\n"
            "vfma.f32 s14, s18, s6\n"
            "vfma.f32 s15, s18, s7\n"
            "vstmia %[d2]!, {s8-s15}\n"
            "vldmia %[d3], {s8-s15}\n"
            "vfma.f32 s8, s19, s0\n"
            "vfma.f32 s9, s19, s1\n"
            "vfma.f32 s10, s19, s2\n"
            "vfma.f32 s11, s19, s3\n"
            "vfma.f32 s12, s19, s4\n"
            "vfma.f32 s13, s19, s5\n"
            "vfma.f32 s14, s19, s6\n"
            "vfma.f32 s15, s19, s7\n"
            "vstmia %[d3]!, {s8-s15}\n"
            "subs %[n], %[n], #1\n"
            "bne 1b\n"
            : [x] "+r"(x), [d0] "+r"(d0), [d1] "+r"(d1), [d2] "+r"(d2), [d3] "+r"(d3),
              [n] "+r"(blocks)
            : [a] "r"(a)
            : "s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9", "s10", "s11", "s12",
              "s13", "s14", "s15", "s16", "s17", "s18", "s19", "cc", "memory");
    }
    if (n & 4) {
#define TC_GER_ROW4(D, A)                                              \
    "vldmia %[" D "], {s8-s11}\n"                                     \
    "vfma.f32 s8, " A ", s0\n vfma.f32 s9, " A ", s1\n"              \
    "vfma.f32 s10, " A ", s2\n vfma.f32 s11, " A ", s3\n"            \
    "vstmia %[" D "]!, {s8-s11}\n"
        __asm__ volatile(
            "vldmia %[a], {s16-s19}\n"
            "vldmia %[x]!, {s0-s3}\n"
            TC_GER_ROW4("d0", "s16") TC_GER_ROW4("d1", "s17")
            TC_GER_ROW4("d2", "s18") TC_GER_ROW4("d3", "s19")
            : [x] "+r"(x), [d0] "+r"(d0), [d1] "+r"(d1), [d2] "+r"(d2), [d3] "+r"(d3)
            : [a] "r"(a)
            : "s0", "s1", "s2", "s3", "s8", "s9", "s10", "s11", "s16", "s17", "s18", "s19",
              "memory");
#undef TC_GER_ROW4
    }
    // One to three columns left: inline (a call per row would cost more than these few taps).
    const int32_t rest = n & 3;
    if (rest == 0) return;
    const float a0 = a[0], a1 = a[1], a2 = a[2], a3 = a[3];
    for (int32_t i = 0; i < rest; ++i) {
        const float xi = x[i];
        d0[i] = fmaf(a0, xi, d0[i]);
        d1[i] = fmaf(a1, xi, d1[i]);
        d2[i] = fmaf(a2, xi, d2[i]);
        d3[i] = fmaf(a3, xi, d3[i]);
    }
}

// Sixteen zeros per VSTM: clearing n floats costs about n / 16 instructions.
void tc_f32_zero(float* p, int32_t n) {
    int32_t blocks = n >> 4;
    if (blocks > 0) {
        const uint32_t zero = 0;
        __asm__ volatile(
            "vmov s0, s1, %[z], %[z]\n"
            "vmov s2, s3, %[z], %[z]\n"
            "vmov s4, s5, %[z], %[z]\n"
            "vmov s6, s7, %[z], %[z]\n"
            "vmov s8, s9, %[z], %[z]\n"
            "vmov s10, s11, %[z], %[z]\n"
            "vmov s12, s13, %[z], %[z]\n"
            "vmov s14, s15, %[z], %[z]\n"
            "1:\n"
            "vstmia %[p]!, {s0-s15}\n"
            "subs %[n], %[n], #1\n"
            "bne 1b\n"
            : [p] "+r"(p), [n] "+r"(blocks)
            : [z] "r"(zero)
            : "s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9", "s10", "s11", "s12",
              "s13", "s14", "s15", "cc", "memory");
    }
    for (int32_t i = 0; i < (n & 15); ++i) p[i] = 0.0f;
}

// Eight floats per VLDM/VSTM pair: copying n floats costs about n / 4 instructions.
void tc_f32_copy(float* d, const float* s, int32_t n) {
    int32_t blocks = n >> 3;
    if (blocks > 0)
        __asm__ volatile(
            "1:\n"
            "vldmia %[s]!, {s0-s7}\n"
            "vstmia %[d]!, {s0-s7}\n"
            "subs %[n], %[n], #1\n"
            "bne 1b\n"
            : [d] "+r"(d), [s] "+r"(s), [n] "+r"(blocks)
            :
            : TC_S8_CLOBBER, "cc", "memory");
    if (n & 4)
        __asm__ volatile(
            "vldmia %[s]!, {s0-s3}\n"
            "vstmia %[d]!, {s0-s3}\n"
            : [d] "+r"(d), [s] "+r"(s)
            :
            : "s0", "s1", "s2", "s3", "memory");
    for (int32_t i = 0; i < (n & 3); ++i) d[i] = s[i];
}

#define TC_GER_SET_ROW(D, A)          \
    "vmul.f32 s8, " A ", s0\n"        \
    "vmul.f32 s9, " A ", s1\n"        \
    "vmul.f32 s10, " A ", s2\n"       \
    "vmul.f32 s11, " A ", s3\n"       \
    "vmul.f32 s12, " A ", s4\n"       \
    "vmul.f32 s13, " A ", s5\n"       \
    "vmul.f32 s14, " A ", s6\n"       \
    "vmul.f32 s15, " A ", s7\n"       \
    "vstmia %[" D "]!, {s8-s15}\n"

// The overwriting rank-1 update: per 4 rows x 8 columns one VLDM, 32 VMUL and 4 VSTM.
void tc_f32_ger4_set(float* d, int32_t d_stride, const float a[4], const float* x, int32_t n) {
    float* d0 = d;
    float* d1 = d + d_stride;
    float* d2 = d + 2 * d_stride;
    float* d3 = d + 3 * d_stride;
    int32_t blocks = n >> 3;
    if (blocks > 0) {
        __asm__ volatile(
            "vldmia %[a], {s16-s19}\n"
            "1:\n"
            "vldmia %[x]!, {s0-s7}\n"
            TC_GER_SET_ROW("d0", "s16") TC_GER_SET_ROW("d1", "s17")
            TC_GER_SET_ROW("d2", "s18") TC_GER_SET_ROW("d3", "s19")
            "subs %[n], %[n], #1\n"
            "bne 1b\n"
            : [x] "+r"(x), [d0] "+r"(d0), [d1] "+r"(d1), [d2] "+r"(d2), [d3] "+r"(d3),
              [n] "+r"(blocks)
            : [a] "r"(a)
            : "s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9", "s10", "s11", "s12",
              "s13", "s14", "s15", "s16", "s17", "s18", "s19", "cc", "memory");
    }
    if (n & 4) {
#define TC_GER_SET_ROW4(D, A)                                          \
    "vmul.f32 s8, " A ", s0\n vmul.f32 s9, " A ", s1\n"              \
    "vmul.f32 s10, " A ", s2\n vmul.f32 s11, " A ", s3\n"            \
    "vstmia %[" D "]!, {s8-s11}\n"
        __asm__ volatile(
            "vldmia %[a], {s16-s19}\n"
            "vldmia %[x]!, {s0-s3}\n"
            TC_GER_SET_ROW4("d0", "s16") TC_GER_SET_ROW4("d1", "s17")
            TC_GER_SET_ROW4("d2", "s18") TC_GER_SET_ROW4("d3", "s19")
            : [x] "+r"(x), [d0] "+r"(d0), [d1] "+r"(d1), [d2] "+r"(d2), [d3] "+r"(d3)
            : [a] "r"(a)
            : "s0", "s1", "s2", "s3", "s8", "s9", "s10", "s11", "s16", "s17", "s18", "s19",
              "memory");
#undef TC_GER_SET_ROW4
    }
    const int32_t rest = n & 3;
    if (rest == 0) return;
    tc_f32_scale_set(d0, a[0], x, rest);
    tc_f32_scale_set(d1, a[1], x, rest);
    tc_f32_scale_set(d2, a[2], x, rest);
    tc_f32_scale_set(d3, a[3], x, rest);
}
#undef TC_GER_SET_ROW

#undef TC_S8_CLOBBER
#undef TC_S16_CLOBBER

#else  // portable versions: the same per-element operation order

float tc_f32_dot1(const float* x, const float* w, int32_t n, float acc) {
    return dot1_plain(x, w, n, acc);
}

void tc_f32_axpy1(float* y, float a, const float* x, int32_t n) { axpy1_plain(y, a, x, n); }

void tc_f32_scale_set(float* d, float a, const float* x, int32_t n) {
    scale_set_plain(d, a, x, n);
}

void tc_f32_zero(float* p, int32_t n) {
    for (int32_t i = 0; i < n; ++i) p[i] = 0.0f;
}

void tc_f32_copy(float* d, const float* s, int32_t n) {
    for (int32_t i = 0; i < n; ++i) d[i] = s[i];
}

void tc_f32_ger4_set(float* d, int32_t d_stride, const float a[4], const float* x, int32_t n) {
    for (int32_t j = 0; j < 4; ++j) tc_f32_scale_set(d + j * d_stride, a[j], x, n);
}

void tc_f32_dot4(const float* x, const float* w, int32_t w_stride, int32_t n, float acc[4]) {
    for (int32_t j = 0; j < 4; ++j) acc[j] = tc_f32_dot1(x, w + j * w_stride, n, acc[j]);
}

void tc_f32_axpy4(float* y, const float a[4], const float* w, int32_t w_stride, int32_t n) {
    const float* w0 = w;
    const float* w1 = w + w_stride;
    const float* w2 = w + 2 * w_stride;
    const float* w3 = w + 3 * w_stride;
    for (int32_t i = 0; i < n; ++i)
        y[i] = fmaf(a[3], w3[i], fmaf(a[2], w2[i], fmaf(a[1], w1[i], fmaf(a[0], w0[i], y[i]))));
}

void tc_f32_ger4(float* d, int32_t d_stride, const float a[4], const float* x, int32_t n) {
    for (int32_t j = 0; j < 4; ++j) tc_f32_axpy1(d + j * d_stride, a[j], x, n);
}

#endif
