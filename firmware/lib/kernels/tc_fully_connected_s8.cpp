#include "tc_fully_connected_s8.h"

#include "tc_simd_s8.h"

// Structure: the input row is widened once to int16 with the input offset already added (one
// word load and two SXTAB16 per four inputs), in the order SXTB16 produces from a word of
// weights: word 0 holds inputs 0 and 2, word 1 inputs 1 and 3. The inner loop then takes two
// weight rows at a time: per eight inputs one LDM of four widened input words shared by both
// rows, and per row one LDRD of eight weights, four SXTB16 and four SMLAD (dual 16-bit
// multiply-accumulate): 19 instructions per 16 MACs, four such groups per loop round. The
// offset term needs no per-row sum of weights. Inputs are widened in chunks of kChunk on the stack (no scratch from the caller) and
// outputs are accumulated in groups of kGroup, so any size works with 768 bytes of stack.
namespace {

constexpr int32_t kChunk = 256;  // inputs per widened chunk (a multiple of 8)
constexpr int32_t kGroup = 64;   // outputs accumulated together across the chunks

// Widens n inputs (a multiple of 4) adding the offset: words (x0,x2), (x1,x3), ...
inline void widen_inputs(const int8_t* x, int32_t n, uint32_t off2, uint32_t* xw) {
    for (int32_t i = 0; i < n; i += 4, xw += 2) {
        uint32_t v;
        memcpy(&v, x + i, 4);
        xw[0] = tc_sxtab16(off2, v);
        xw[1] = tc_sxtab16_ror8(off2, v);
    }
}

// Four weights as the two int16 pairs SXTB16 gives: (w0, w2) and (w1, w3).
inline void widen_weights(const int8_t* w, uint32_t* even, uint32_t* odd) {
    uint32_t v;
    memcpy(&v, w, 4);
#if defined(TC_KERNELS_ARM_DSP)
    *even = __sxtb16(v);
    *odd = __sxtb16((v >> 8) | (v << 24));  // GCC folds the rotate into SXTB16 ROR #8
#else
    *even = tc_sxtab16(0, v);
    *odd = tc_sxtab16_ror8(0, v);
#endif
}

// acc0/acc1 += dot(rows w0/w1, widened inputs) over `groups` groups of eight inputs.
// Aligned: the weight rows start on words (LDRD faults on an unaligned address on the
// Cortex-M7); otherwise two LDR (which may be unaligned) replace each LDRD.
template <bool Aligned>
inline void dot2(const uint32_t* xw, const int8_t* w0, const int8_t* w1, int32_t groups,
                 int32_t* acc0, int32_t* acc1) {
#if defined(TC_KERNELS_ARM_DSP)
    if (groups > 0) {
        int32_t a0 = *acc0, a1 = *acc1;
        // LDM fills its registers in ascending order: the four input words are pinned to
        // r8-r11 so that x0 gets the first word.
        register uint32_t x0 __asm__("r8");
        register uint32_t x1 __asm__("r9");
        register uint32_t x2 __asm__("r10");
        register uint32_t x3 __asm__("r11");
        uint32_t wa, wb, t;
#define TC_FC_ROW(W, A)                                \
    TC_FC_LOAD(W)                                      \
    "sxtb16 %[t], %[wa]\n"                            \
    "smlad %[" A "], %[x0], %[t], %[" A "]\n"         \
    "sxtb16 %[t], %[wa], ror #8\n"                    \
    "smlad %[" A "], %[x1], %[t], %[" A "]\n"         \
    "sxtb16 %[t], %[wb]\n"                            \
    "smlad %[" A "], %[x2], %[t], %[" A "]\n"         \
    "sxtb16 %[t], %[wb], ror #8\n"                    \
    "smlad %[" A "], %[x3], %[t], %[" A "]\n"
#define TC_FC_GROUP                                    \
    "ldmia %[xw]!, {%[x0], %[x1], %[x2], %[x3]}\n"    \
    TC_FC_ROW("w0", "a0") TC_FC_ROW("w1", "a1")
#define TC_FC_LOAD(W) "ldrd %[wa], %[wb], [%[" W "]], #8\n"
        if constexpr (Aligned) {
        // Four groups per round (78 instructions per 64 MACs); the groups beyond a multiple of
        // four first.
        __asm__ volatile(
            "tst %[n], #1\n"
            "beq 2f\n"
            TC_FC_GROUP
            "2:\n"
            "tst %[n], #2\n"
            "beq 4f\n"
            TC_FC_GROUP TC_FC_GROUP
            "4:\n"
            "lsrs %[n], %[n], #2\n"
            "beq 3f\n"
            "1:\n"
            TC_FC_GROUP TC_FC_GROUP TC_FC_GROUP TC_FC_GROUP
            "subs %[n], %[n], #1\n"
            "bne 1b\n"
            "3:\n"
            : [xw] "+r"(xw), [w0] "+r"(w0), [w1] "+r"(w1), [n] "+r"(groups), [a0] "+r"(a0),
              [a1] "+r"(a1), [x0] "=&r"(x0), [x1] "=&r"(x1), [x2] "=&r"(x2), [x3] "=&r"(x3),
              [wa] "=&r"(wa), [wb] "=&r"(wb), [t] "=&r"(t)
            :
            : "cc", "memory");
        } else {
#undef TC_FC_LOAD
#define TC_FC_LOAD(W) "ldr %[wb], [%[" W "], #4]\n" "ldr %[wa], [%[" W "]], #8\n"
        // Four groups per round (78 instructions per 64 MACs); the groups beyond a multiple of
        // four first.
        __asm__ volatile(
            "tst %[n], #1\n"
            "beq 2f\n"
            TC_FC_GROUP
            "2:\n"
            "tst %[n], #2\n"
            "beq 4f\n"
            TC_FC_GROUP TC_FC_GROUP
            "4:\n"
            "lsrs %[n], %[n], #2\n"
            "beq 3f\n"
            "1:\n"
            TC_FC_GROUP TC_FC_GROUP TC_FC_GROUP TC_FC_GROUP
            "subs %[n], %[n], #1\n"
            "bne 1b\n"
            "3:\n"
            : [xw] "+r"(xw), [w0] "+r"(w0), [w1] "+r"(w1), [n] "+r"(groups), [a0] "+r"(a0),
              [a1] "+r"(a1), [x0] "=&r"(x0), [x1] "=&r"(x1), [x2] "=&r"(x2), [x3] "=&r"(x3),
              [wa] "=&r"(wa), [wb] "=&r"(wb), [t] "=&r"(t)
            :
            : "cc", "memory");
        }
#undef TC_FC_LOAD
        *acc0 = a0;
        *acc1 = a1;
#undef TC_FC_ROW
#undef TC_FC_GROUP
    }
#else
    for (int32_t g = 0; g < groups; ++g, xw += 4, w0 += 8, w1 += 8) {
        for (int32_t h = 0; h < 2; ++h) {
            uint32_t e, o;
            widen_weights(w0 + 4 * h, &e, &o);
            *acc0 = tc_smlad(xw[2 * h], e, *acc0);
            *acc0 = tc_smlad(xw[2 * h + 1], o, *acc0);
            widen_weights(w1 + 4 * h, &e, &o);
            *acc1 = tc_smlad(xw[2 * h], e, *acc1);
            *acc1 = tc_smlad(xw[2 * h + 1], o, *acc1);
        }
    }
#endif
}

// One row over n inputs (n a multiple of 4) of the widened chunk.
inline int32_t dot1(const uint32_t* xw, const int8_t* w, int32_t n, int32_t acc) {
    for (int32_t i = 0; i < n; i += 4, xw += 2) {
        uint32_t e, o;
        widen_weights(w + i, &e, &o);
        acc = tc_smlad(xw[0], e, acc);
        acc = tc_smlad(xw[1], o, acc);
    }
    return acc;
}

// Requantises one output as LiteRT's reference FULLY_CONNECTED kernel does, in one rounding
// (not the double rounding of the convolutions: see tc_multiply_by_quantized_multiplier_single),
// by the two-instruction path when it applies.
inline int8_t finish(int32_t acc, int32_t mult, int32_t shift, int32_t out_offset, int32_t lo,
                     int32_t hi) {
    int32_t v;
    if (shift < 0 && tc_requant_fast_fits(acc))
        v = tc_requant_single_fast(acc, mult, -shift, 1 << (-shift - 1));
    else
        v = tc_multiply_by_quantized_multiplier_single(acc, mult, shift);
    v += out_offset;
    return (int8_t)(v < lo ? lo : v > hi ? hi : v);
}

}  // namespace

void tc_fully_connected_s8(const tc_dense_dims* d, const tc_s8_quant* q, const int8_t* x,
                           const int8_t* w, const int32_t* bias, int8_t* y) {
    const int32_t in = d->in, out = d->out;
    const int32_t off = q->input_offset;
    const uint32_t off2 = ((uint32_t)off & 0xffffu) | ((uint32_t)off << 16);
    const int32_t in4 = in & ~3;  // the last in % 4 inputs are added one by one
    // Copies: an int8 store may alias anything, and the fields would be reloaded per output.
    const int32_t out_offset = q->output_offset, lo = q->act_min, hi = q->act_max;
    const int32_t* mults = q->multiplier;
    const int32_t* shifts = q->shift;
    const int32_t step = q->per_channel ? 1 : 0;
    uint32_t xw[kChunk / 2];
    // Every row (and chunk) starts on a word when the matrix does and rows are whole words.
    const bool aligned = (((uintptr_t)w | (uintptr_t)in) & 3) == 0;
    if (in4 <= kChunk) {
        // One chunk holds the whole row (the usual case): outputs are finished pair by pair.
        const int32_t groups = in4 >> 3, n8 = in4 & ~7;
        for (int32_t b = 0; b < d->batch; ++b) {
            const int8_t* xb = x + b * in;
            int8_t* yb = y + b * out;
            widen_inputs(xb, in4, off2, xw);
            int32_t o = 0;
            const int8_t* w0 = w;
            for (; o + 2 <= out; o += 2, w0 += 2 * in) {
                int32_t a0 = bias ? bias[o] : 0, a1 = bias ? bias[o + 1] : 0;
                if (aligned)
                    dot2<true>(xw, w0, w0 + in, groups, &a0, &a1);
                else
                    dot2<false>(xw, w0, w0 + in, groups, &a0, &a1);
                if (n8 < in4) {
                    a0 = dot1(xw + n8 / 2, w0 + n8, 4, a0);
                    a1 = dot1(xw + n8 / 2, w0 + in + n8, 4, a1);
                }
                for (int32_t i = in4; i < in; ++i) {
                    a0 += (xb[i] + off) * w0[i];
                    a1 += (xb[i] + off) * w0[in + i];
                }
                yb[o] = finish(a0, mults[o * step], shifts[o * step], out_offset, lo, hi);
                yb[o + 1] =
                    finish(a1, mults[(o + 1) * step], shifts[(o + 1) * step], out_offset, lo, hi);
            }
            if (o < out) {
                int32_t a = dot1(xw, w0, in4, bias ? bias[o] : 0);
                for (int32_t i = in4; i < in; ++i) a += (xb[i] + off) * w0[i];
                yb[o] = finish(a, mults[o * step], shifts[o * step], out_offset, lo, hi);
            }
        }
        return;
    }
    int32_t acc[kGroup];
    for (int32_t b = 0; b < d->batch; ++b) {
        const int8_t* xb = x + b * in;
        int8_t* yb = y + b * out;
        for (int32_t o0 = 0; o0 < out; o0 += kGroup) {
            const int32_t o1 = o0 + kGroup < out ? o0 + kGroup : out;
            for (int32_t o = o0; o < o1; ++o) acc[o - o0] = bias ? bias[o] : 0;
            for (int32_t i0 = 0; i0 < in4; i0 += kChunk) {
                const int32_t n = in4 - i0 < kChunk ? in4 - i0 : kChunk;
                widen_inputs(xb + i0, n, off2, xw);
                const int32_t groups = n >> 3, n8 = n & ~7;
                int32_t o = o0;
                for (; o + 2 <= o1; o += 2) {
                    const int8_t* w0 = w + (size_t)o * in + i0;
                    if (aligned)
                        dot2<true>(xw, w0, w0 + in, groups, &acc[o - o0], &acc[o + 1 - o0]);
                    else
                        dot2<false>(xw, w0, w0 + in, groups, &acc[o - o0], &acc[o + 1 - o0]);
                    if (n8 < n) {  // four inputs left in this chunk
                        acc[o - o0] = dot1(xw + n8 / 2, w0 + n8, 4, acc[o - o0]);
                        acc[o + 1 - o0] = dot1(xw + n8 / 2, w0 + in + n8, 4, acc[o + 1 - o0]);
                    }
                }
                if (o < o1)
                    acc[o - o0] = dot1(xw, w + (size_t)o * in + i0, n, acc[o - o0]);
            }
            for (int32_t o = o0; o < o1; ++o) {
                int32_t a = acc[o - o0];
                for (int32_t i = in4; i < in; ++i) a += (xb[i] + off) * w[(size_t)o * in + i];
                yb[o] = finish(a, mults[o * step], shifts[o * step], out_offset, lo, hi);
            }
        }
    }
}
