#include "tc_fully_connected_s8.h"

#include "tc_simd_s8.h"

namespace {

// Four int8 values as two int16 pairs, the layout SXTB16 produces: (v0, v2) and (v1, v3).
inline void widen4(const int8_t* p, uint32_t* even, uint32_t* odd) {
#if defined(TC_KERNELS_ARM_DSP)
    uint32_t v;
    memcpy(&v, p, 4);
    *even = __sxtb16(v);
    *odd = __sxtb16((v >> 8) | (v << 24));  // GCC folds the rotate into SXTB16 ROR #8
#else
    *even = (uint32_t)(uint16_t)p[0] | ((uint32_t)(uint16_t)p[2] << 16);
    *odd = (uint32_t)(uint16_t)p[1] | ((uint32_t)(uint16_t)p[3] << 16);
#endif
}

}  // namespace

// sum((x + off) * w) = sum(x * w) + off * sum(w): the inner loop multiplies raw int8 pairs
// (two SMLAD per four weights) and the offset term is added once per output.
void tc_fully_connected_s8(const tc_dense_dims* d, const tc_s8_quant* q, const int8_t* x,
                           const int8_t* w, const int32_t* bias, int8_t* y) {
    const int32_t in = d->in;
    const int32_t off = q->input_offset;
    for (int32_t b = 0; b < d->batch; ++b) {
        const int8_t* xb = x + b * in;
        for (int32_t o = 0; o < d->out; ++o) {
            const int8_t* wo = w + o * in;
            int32_t acc = bias ? bias[o] : 0;
            int32_t wsum = 0;
            int32_t i = 0;
            for (; i + 4 <= in; i += 4) {
                uint32_t xe, xo, we, wodd;
                widen4(xb + i, &xe, &xo);
                widen4(wo + i, &we, &wodd);
                acc = tc_smlad(xe, we, acc);
                acc = tc_smlad(xo, wodd, acc);
                wsum += wo[i] + wo[i + 1] + wo[i + 2] + wo[i + 3];
            }
            for (; i < in; ++i) {
                acc += xb[i] * wo[i];
                wsum += wo[i];
            }
            acc += off * wsum;
            const int32_t qi = q->per_channel ? o : 0;
            y[b * d->out + o] =
                (int8_t)tc_requantize_clamp(acc, q->multiplier[qi], q->shift[qi], q);
        }
    }
}
