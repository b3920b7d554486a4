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
    for (int32_t i = 0; i < n; ++i) x[i] = scale * (float)(q[i] - zero_point);
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
