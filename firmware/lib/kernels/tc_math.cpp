#include "tc_math.h"

#include <string.h>

namespace {

inline float from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

inline uint32_t to_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

// ln(2) split so that k * LN2_HI is exact for |k| < 2^9 (Cody-Waite range reduction).
constexpr float LN2_HI = 0.693145751953125f;
constexpr float LN2_LO = 1.428606765330187e-06f;
constexpr float LOG2E = 1.44269504088896341f;

}  // namespace

float tc_expf(float x) { return tc_expf_inline(x); }

float tc_logf(float x) {
    if (x != x) return x;
    if (x < 0.0f) return NAN;
    if (x == 0.0f) return -INFINITY;
    if (x == INFINITY) return x;
    int32_t e = 0;
    if (x < 1.17549435e-38f) {  // subnormal: scale into the normal range first
        x *= 8388608.0f;
        e = -23;
    }
    const uint32_t u = to_bits(x);
    e += (int32_t)((u >> 23) & 0xff) - 127;
    float m = from_bits((u & 0x007fffffu) | 0x3f800000u);  // [1, 2)
    if (m > 1.41421356f) {
        m *= 0.5f;
        e += 1;
    }
    // log(m) = 2 atanh(s), s = (m - 1) / (m + 1), |s| <= 0.1716
    const float f = m - 1.0f;
    const float s = f / (2.0f + f);
    const float s2 = s * s;
    float p = 2.0f / 9.0f;
    p = fmaf(p, s2, 2.0f / 7.0f);
    p = fmaf(p, s2, 2.0f / 5.0f);
    p = fmaf(p, s2, 2.0f / 3.0f);
    p = fmaf(p, s2, 2.0f);
    const float log_m = p * s;
    const float ef = (float)e;
    return fmaf(ef, LN2_HI, fmaf(ef, LN2_LO, log_m));
}
