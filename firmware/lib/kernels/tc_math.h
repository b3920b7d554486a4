// exp and log for the float kernels. The C libraries' expf/logf differ between newlib (firmware)
// and glibc (host tests) in the last bits; these use only +, *, fmaf and bit operations, so the
// host build and the firmware produce the same bits.
#pragma once
#include <string.h>

#include "tc_kernels_common.h"

// e^x with a relative error below 2e-7. Returns 0 for x < -87.3 (no subnormal results) and
// e^88 for x > 88 (softmax only ever asks for x <= 0).
float tc_expf(float x);
// The same function, inlined into loops that call it many times (softmax): the constants then
// stay in registers across the loop.
static inline float tc_expf_inline(float x) {
    // ln(2) split so that k * ln2_hi is exact for |k| < 2^9 (Cody-Waite range reduction).
    const float ln2_hi = 0.693145751953125f, ln2_lo = 1.428606765330187e-06f;
    const float log2e = 1.44269504088896341f;
    if (x != x) return x;
    if (x < -87.3f) return 0.0f;
    if (x > 88.0f) x = 88.0f;
    const float t = x * log2e;
    const int32_t k = (int32_t)(t >= 0.0f ? t + 0.5f : t - 0.5f);
    const float kf = (float)k;
    float r = fmaf(-kf, ln2_hi, x);
    r = fmaf(-kf, ln2_lo, r);  // |r| <= ln(2)/2 (plus rounding)
    // Taylor series of e^r to degree 7: truncation error below 1e-8 on |r| <= 0.35.
    float p = 1.0f / 5040.0f;
    p = fmaf(p, r, 1.0f / 720.0f);
    p = fmaf(p, r, 1.0f / 120.0f);
    p = fmaf(p, r, 1.0f / 24.0f);
    p = fmaf(p, r, 1.0f / 6.0f);
    p = fmaf(p, r, 0.5f);
    p = fmaf(p, r, 1.0f);
    p = fmaf(p, r, 1.0f);
    const uint32_t bits = (uint32_t)(k + 127) << 23;  // k is in [-126, 127] here
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}
// Natural logarithm with an absolute error below 1e-7 on [0.5, 2]. Returns -inf for 0 and NaN
// for negative input.
float tc_logf(float x);
