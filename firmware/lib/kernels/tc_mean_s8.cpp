#include "tc_mean_s8.h"

void tc_mean_s8_count_multiplier(int32_t multiplier, int32_t shift, int32_t count,
                                 int32_t* count_multiplier, int32_t* count_shift) {
    int32_t s = 0;
    while (s < 31 && ((int64_t)1 << (s + 1)) <= count) ++s;  // floor(log2(count)), count < 2^31
    // The clamps keep the 64-bit product in range and the final shift >= -31 (the requantiser's
    // precondition); TFLite accepts the precision this may cost, and so must we to match it.
    if (s > 32) s = 32;
    if (s > 31 + shift) s = 31 + shift;
    if (s < 0) s = 0;  // only for shift < -31, which QuantizeMultiplier never gives
    *count_multiplier = (int32_t)(((int64_t)multiplier * ((int64_t)1 << s)) / count);
    *count_shift = shift - s;
}

namespace {

inline int8_t finish(int32_t sum, const tc_requant_channel* r, const tc_s8_quant* q) {
    int32_t v = tc_requant_channel_apply(sum, r) + q->output_offset;
    if (v < q->act_min) v = q->act_min;
    if (v > q->act_max) v = q->act_max;
    return (int8_t)v;
}

}  // namespace

void tc_mean_s8(const tc_mean_dims* d, const tc_s8_quant* q, const int8_t* x, int8_t* y) {
    const int32_t count = d->in_h * d->in_w;
    const int32_t c_n = d->c;
    if (count <= 0 || c_n <= 0) return;
    int32_t m, s;
    tc_mean_s8_count_multiplier(q->multiplier[0], q->shift[0], count, &m, &s);
    // The folded multiplier is below 2^31 and never INT32_MIN, where the precomputed
    // requantisation equals tc_multiply_by_quantized_multiplier exactly.
    const tc_requant_channel r = tc_requant_channel_of(m, s);
    // sum(x + offset) = sum(x) + count * offset: one multiply instead of one add per element.
    const int32_t offset_sum = count * q->input_offset;
    for (int32_t b = 0; b < d->batch; ++b) {
        const int8_t* xb = x + (size_t)b * count * c_n;
        int8_t* yb = y + (size_t)b * c_n;
        int32_t c = 0;
        // Four channels per pass over the pixels: four accumulators stay in registers and the
        // four bytes of a pixel are adjacent in memory.
        for (; c + 4 <= c_n; c += 4) {
            int32_t a0 = offset_sum, a1 = offset_sum, a2 = offset_sum, a3 = offset_sum;
            const int8_t* p = xb + c;
            for (int32_t i = 0; i < count; ++i, p += c_n) {
                a0 += p[0];
                a1 += p[1];
                a2 += p[2];
                a3 += p[3];
            }
            yb[c] = finish(a0, &r, q);
            yb[c + 1] = finish(a1, &r, q);
            yb[c + 2] = finish(a2, &r, q);
            yb[c + 3] = finish(a3, &r, q);
        }
        for (; c < c_n; ++c) {
            int32_t a = offset_sum;
            const int8_t* p = xb + c;
            for (int32_t i = 0; i < count; ++i, p += c_n) a += *p;
            yb[c] = finish(a, &r, q);
        }
    }
}
