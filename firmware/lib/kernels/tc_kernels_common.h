// Shared types and inner loops of the tinycil kernels.
//
// Conventions (the same as TensorFlow Lite, so exported tensors are used as stored):
//   activations  NHWC (channels last), batch outermost
//   conv2d       weights [out_c][k_h][k_w][in_c], bias [out_c]
//   depthwise    weights [k_h][k_w][in_c * depth_multiplier] (output channel = ic * mult + m)
//   dense        weights [out][in], bias [out]
//
// Float determinism: the firmware and the host build both compile with -ffp-contract=off, and
// every multiply-accumulate below is an explicit fmaf() done in one fixed order per output
// element. On the Cortex-M7 fmaf() is one vfma.f32; on the host it is correctly rounded too,
// so the host build of a kernel produces bit-identical floats to the firmware build.
#pragma once

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#if defined(__arm__) && defined(__ARM_FP) && (__ARM_FP & 4) && defined(__ARM_ARCH_7EM__)
// Cortex-M4/M7 with a single-precision FPU: the hand-scheduled inner loops below use VLDM/VSTM
// to move eight floats per instruction, which is what brings dense and conv2d under two
// instructions per multiply-accumulate.
#define TC_KERNELS_ARM_FPU 1
#endif
#if defined(__ARM_FEATURE_DSP)
#define TC_KERNELS_ARM_DSP 1
#endif

enum tc_padding : int32_t { TC_PADDING_VALID = 0, TC_PADDING_SAME = 1 };

// Geometry of a sliding-window operator (conv2d, depthwise conv2d, pooling).
struct tc_window_dims {
    int32_t batch;
    int32_t in_h, in_w, in_c;
    int32_t out_h, out_w, out_c;
    int32_t k_h, k_w;
    int32_t stride_h, stride_w;
    int32_t pad_top, pad_left;   // implicit zero rows/columns before the input
    int32_t depth_multiplier;    // depthwise only; 1 elsewhere
};

// Fills `d` with TensorFlow's output size and padding rule (SAME: out = ceil(in / stride) and the
// odd padding pixel goes to the bottom/right; VALID: out = ceil((in - k + 1) / stride)).
// out_c = in_c * depth_multiplier for depthwise and pooling; pass out_c explicitly for conv2d.
// Returns false (and leaves an output size of 0) when the window does not fit the input.
bool tc_window_dims_init(tc_window_dims* d, int32_t batch, int32_t in_h, int32_t in_w,
                         int32_t in_c, int32_t out_c, int32_t k_h, int32_t k_w, int32_t stride_h,
                         int32_t stride_w, tc_padding padding, int32_t depth_multiplier);

struct tc_dense_dims {
    int32_t batch;
    int32_t in;
    int32_t out;
};

// Quantisation of an int8 operator with TFLite semantics:
//   out = clamp(output_offset + requantize(bias + sum((x + input_offset) * w), multiplier, shift))
// multiplier/shift come from TFLite's QuantizeMultiplier(input_scale * w_scale / output_scale):
// a Q31 multiplier in [2^30, 2^31) and a power-of-two exponent (positive = left shift).
struct tc_s8_quant {
    int32_t input_offset;   // minus the input zero point
    int32_t output_offset;  // the output zero point
    int32_t act_min;        // fused activation, e.g. ReLU: output zero point .. 127
    int32_t act_max;
    const int32_t* multiplier;  // per output channel, or one entry when per_channel == 0
    const int32_t* shift;
    int32_t per_channel;
};

// ---------------------------------------------------------------------------------------------
// Requantisation (gemmlowp/TFLite fixed-point arithmetic, the "double rounding" of TFLite's
// MultiplyByQuantizedMultiplier, which LiteRT's reference CONV_2D, DEPTHWISE_CONV_2D and MEAN
// kernels use; FULLY_CONNECTED rounds once, see tc_multiply_by_quantized_multiplier_single).

// round(a * b / 2^31) with ties rounded up, saturating the single overflow case.
static inline int32_t tc_sat_rounding_doubling_high_mul(int32_t a, int32_t b) {
    if (a == b && a == INT32_MIN) return INT32_MAX;
    const int64_t ab = (int64_t)a * (int64_t)b;
    const int64_t nudge = ab >= 0 ? (1ll << 30) : (1ll - (1ll << 30));
    // Division (truncation toward zero) after the nudge, not an arithmetic shift: this exact
    // combination is TFLite's, including its treatment of negative half-way cases.
    return (int32_t)((ab + nudge) / (1ll << 31));
}

// x / 2^exponent rounded to nearest, ties away from zero.
static inline int32_t tc_rounding_divide_by_pot(int32_t x, int32_t exponent) {
    const int32_t mask = (int32_t)((1ll << exponent) - 1);
    const int32_t remainder = x & mask;
    const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

static inline int32_t tc_multiply_by_quantized_multiplier(int32_t x, int32_t multiplier,
                                                          int32_t shift) {
    const int32_t left = shift > 0 ? shift : 0;
    const int32_t right = shift > 0 ? 0 : -shift;
    // The left shift is done in 32 bits exactly as the reference (it cannot overflow for the
    // multipliers TFLite produces from real scales).
    return tc_rounding_divide_by_pot(
        tc_sat_rounding_doubling_high_mul((int32_t)((uint32_t)x << left), multiplier), right);
}

static inline int32_t tc_requantize_clamp(int32_t acc, int32_t multiplier, int32_t shift,
                                          const tc_s8_quant* q) {
    int32_t v = tc_multiply_by_quantized_multiplier(acc, multiplier, shift) + q->output_offset;
    if (v < q->act_min) v = q->act_min;
    if (v > q->act_max) v = q->act_max;
    return v;
}

// The same requantisation with the per-channel parts computed once, for kernels that finish
// many outputs per channel. Exactly tc_multiply_by_quantized_multiplier for every accumulator
// and every multiplier except INT32_MIN (the reference's single saturating case):
//   - the high multiply's "(ab + nudge) / 2^31, truncated" with nudge = 2^30 for ab >= 0 and
//     1 - 2^30 below is floor((ab + 2^30) / 2^31) for both signs (for ab < 0 truncation is a
//     ceiling, and ceil((ab + 1 - 2^30) / 2^31) = floor((ab + 2^30) / 2^31)): one SMLAL with
//     2^30 preloaded and a 64-bit shift;
//   - "remainder > threshold + (h < 0)" is "remainder + (h >> 31) > threshold".
struct tc_requant_channel {
    int32_t multiplier;
    int32_t left, right;  // left shift before, rounding right shift after the high multiply
    int32_t mask;         // 2^right - 1
    int32_t threshold;    // mask / 2
};

static inline tc_requant_channel tc_requant_channel_of(int32_t multiplier, int32_t shift) {
    tc_requant_channel r;
    r.multiplier = multiplier;
    r.left = shift > 0 ? shift : 0;
    r.right = shift > 0 ? 0 : -shift;
    r.mask = (int32_t)((1ll << r.right) - 1);
    r.threshold = r.mask >> 1;
    return r;
}

static inline int32_t tc_requant_channel_apply(int32_t acc, const tc_requant_channel* r) {
    const int32_t a = (int32_t)((uint32_t)acc << r->left);
    const int32_t h = (int32_t)(((int64_t)a * r->multiplier + (1ll << 30)) >> 31);
    const int32_t remainder = (h & r->mask) + (h >> 31);
    return (h >> r->right) + (remainder > r->threshold ? 1 : 0);
}

// The same (double-rounding) requantisation in a few instructions for the common case, as the
// one-channel convolution path computes it (in assembly on the Cortex-M7): a right shift
// (shift <= -1, right = -shift), a multiplier that is not INT32_MIN and |acc| < 2^30
// (tc_requant_fast_fits).
//   - the high multiply floor((acc * M + 2^30) / 2^31) is floor((2 acc * M + 2^31) / 2^32): one
//     SMMULR (the rounding high multiply) of 2 acc, which cannot overflow under the bound;
//   - the rounding divide "(h >> r) + (remainder > threshold + (h < 0))" is
//     "(h + 2^(r-1) + (h >> 31)) >> r": for h >= 0 ties round up, for h < 0 the extra -1 makes
//     them round down, as the reference's larger threshold does; |h| < 2^30 keeps the sum exact.
static inline bool tc_requant_fast_fits(int32_t acc) {
    return (uint32_t)acc + (1u << 30) < (1u << 31);
}

static inline int32_t tc_requant_fast(int32_t acc, int32_t multiplier, int32_t right,
                                      int32_t half) {
#if defined(__ARM_ARCH_7EM__)
    int32_t h;
    __asm__("smmulr %0, %1, %2" : "=r"(h) : "r"(acc * 2), "r"(multiplier));
#else
    const int32_t h = (int32_t)(((int64_t)acc * 2 * multiplier + (1ll << 31)) >> 32);
#endif
    return (h + half + (h >> 31)) >> right;
}

// ---------------------------------------------------------------------------------------------
// Requantisation in one rounding, for FULLY_CONNECTED: round(x * multiplier / 2^(31 - shift))
// from the exact 64-bit product, ties rounded up. LiteRT's reference FULLY_CONNECTED kernel
// computes this (per-channel and per-tensor alike), where its CONV_2D, DEPTHWISE_CONV_2D and
// MEAN use the double rounding above; the two differ only near half-way cases, e.g. -5.49899
// (-2160 * 1399585810 / 2^39) gives -5 here and, through a high multiply rounded to
// -1408 = -5.5 * 2^8, -6 there. The host simulation
// runs LiteRT's reference kernels (tinycil/learn/quantize.py, make_interpreter, says why), so
// each kernel here follows the rule of its reference kernel.

// shift is in [-31, 30] (QuantizeMultiplier's range, as the exporter writes it), so the total
// shift is 1 .. 62 and the sum below cannot overflow (|x * multiplier| < 2^62).
static inline int32_t tc_multiply_by_quantized_multiplier_single(int32_t x, int32_t multiplier,
                                                                 int32_t shift) {
    const int32_t total = 31 - shift;
    const int64_t r = ((int64_t)x * multiplier + (1ll << (total - 1))) >> total;
    // Saturated rather than wrapped: only a multiplier above 1 reaches beyond int32, and the
    // output clamp to int8 then gives the same value either way for the sign of the product.
    return r > INT32_MAX ? INT32_MAX : r < INT32_MIN ? INT32_MIN : (int32_t)r;
}

// The same for a right shift (shift <= -1, right = -shift, half = 2^(right-1)) and
// |acc| < 2^30 (tc_requant_fast_fits), in two instructions. With a = 2 acc:
//   floor((acc * M + 2^(30+right)) / 2^(31+right)) = floor((a * M + 2^(31+right)) / 2^(32+right))
//   = (floor(a * M / 2^32) + half) >> right,
// because 2^(31+right) is a whole multiple of 2^32 (right >= 1). floor(a * M / 2^32) + half is
// SMMLA (the high word of the product plus an accumulator, no rounding of its own); under the
// bound it lies in [-2^30, 2^30) and the sum stays below 2^31.
static inline int32_t tc_requant_single_fast(int32_t acc, int32_t multiplier, int32_t right,
                                             int32_t half) {
#if defined(__ARM_ARCH_7EM__)
    int32_t h;
    __asm__("smmla %0, %1, %2, %3" : "=r"(h) : "r"(acc * 2), "r"(multiplier), "r"(half));
#else
    const int32_t h = (int32_t)(((int64_t)acc * 2 * multiplier) >> 32) + half;
#endif
    return h >> right;
}

// ---------------------------------------------------------------------------------------------
// Float inner loops shared by dense and conv2d. Each has one fixed per-element operation order
// (documented), identical in the portable and the Cortex-M7 versions.

// acc[j] = fmaf(x[i], w_j[i], acc[j]) for i = 0..n-1 in order, rows w_j = w + j * w_stride.
void tc_f32_dot4(const float* x, const float* w, int32_t w_stride, int32_t n, float acc[4]);
// acc = fmaf(x[i], w[i], acc) for i = 0..n-1 in order; returns acc.
float tc_f32_dot1(const float* x, const float* w, int32_t n, float acc);
// y[i] = fmaf(a[3], w_3[i], fmaf(a[2], w_2[i], fmaf(a[1], w_1[i], fmaf(a[0], w_0[i], y[i]))))
void tc_f32_axpy4(float* y, const float a[4], const float* w, int32_t w_stride, int32_t n);
// y[i] = fmaf(a, x[i], y[i])
void tc_f32_axpy1(float* y, float a, const float* x, int32_t n);
// d_j[i] = fmaf(a[j], x[i], d_j[i]) for the four rows d_j = d + j * d_stride
void tc_f32_ger4(float* d, int32_t d_stride, const float a[4], const float* x, int32_t n);
// d_j[i] = a[j] * x[i] (overwrites: the first sample of a gradient needs no cleared buffer)
void tc_f32_ger4_set(float* d, int32_t d_stride, const float a[4], const float* x, int32_t n);
// d[i] = a * x[i]
void tc_f32_scale_set(float* d, float a, const float* x, int32_t n);
// p[i] = +0.0f, sixteen floats per store on the Cortex-M7 (never a byte-wise memset)
void tc_f32_zero(float* p, int32_t n);
// d[i] = s[i], eight floats per load and store on the Cortex-M7 (never a byte-wise memcpy)
void tc_f32_copy(float* d, const float* s, int32_t n);
