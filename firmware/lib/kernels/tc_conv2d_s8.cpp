#include "tc_conv2d_s8.h"

#include "tc_simd_s8.h"

// Structure (the CMSIS-NN idea, arranged for fewer instructions per multiply-accumulate):
//   1. widen the filters once per pass to int16, channels in pairs, interleaved word by word
//      (one 32-bit word = two taps): [c0 w0][c1 w0][c0 w1][c1 w1]...;
//   2. for each block of three output pixels, gather the input patches ("im2col") once as int16
//      with the input offset already added, interleaved the same way: [p0 w0][p1 w0][p2 w0]...;
//      out-of-image taps are 0, which is exactly TFLite's "skip padding" rule; the block then
//      serves every output channel. A window inside the image whose kernel rows are whole words
//      is widened straight from the input; any other is first copied as int8 into a staging
//      area, out-of-image taps as the input zero point (0 once the offset is added), and then
//      widened four taps at a time like the rest;
//   3. a 2 channels x 3 pixels inner loop: per word of taps one LDRD of weights, one LDM of
//      inputs and six dual 16-bit multiply-accumulates (SMLAD): 8 instructions per 12 MACs.
//      Six accumulators, five operands and three loop registers use all 14 general registers;
//      a fourth channel or pixel would not fit.
// Taps are padded to a multiple of four with zeros in both operands. When the scratch cannot
// hold three patches, blocks of two pixels run through the portable loop instead.
namespace {

inline int32_t padded_taps(const tc_window_dims* d) {
    const int32_t k = d->k_h * d->k_w * d->in_c;
    return (k + 3) & ~3;
}

// Words of one lane (one channel or one pixel): two int16 taps per word.
inline int32_t lane_words(int32_t kp) { return kp >> 1; }

// int16 index of tap t in lane `lane` of an operand with `lanes` lanes. Within a group of four
// taps the order is the one SXTB16 produces from a 32-bit word: word 0 holds taps 0 and 2,
// word 1 taps 1 and 3. Weights and inputs use the same order, so the dot product is unchanged.
inline int32_t tap_index(int32_t t, int32_t lanes, int32_t lane) {
    const int32_t word = ((t >> 2) << 1) | (t & 1);
    return ((word * lanes + lane) << 1) | ((t >> 1) & 1);
}

// Widens n taps (a multiple of 4) adding the offset to each: one word load and two SXTAB16 per
// four taps. `dst` points at the first tap's word in its lane.
inline void widen_taps(const int8_t* src, int32_t n, uint32_t offset2, uint32_t* dst,
                       int32_t lanes) {
    for (int32_t i = 0; i < n; i += 4, dst += 2 * lanes) {
        uint32_t v;
        memcpy(&v, src + i, 4);
        dst[0] = tc_sxtab16(offset2, v);
        dst[lanes] = tc_sxtab16_ror8(offset2, v);
    }
}

void clear_lane(uint32_t* op, int32_t kp, int32_t lanes, int32_t lane) {
    for (int32_t i = 0; i < lane_words(kp); ++i) op[i * lanes + lane] = 0;
}

// Byte loops for the staging area, kept as loops: its runs are a few bytes (a kernel row of a
// thin input), for which a call to memset or memcpy costs more than the bytes themselves.
__attribute__((optimize("no-tree-loop-distribute-patterns")))
inline int8_t* stage_fill(int8_t* dst, int8_t value, int32_t n) {
    for (int32_t i = 0; i < n; ++i) dst[i] = value;
    return dst + n;
}

__attribute__((optimize("no-tree-loop-distribute-patterns")))
inline int8_t* stage_copy(int8_t* dst, const int8_t* src, int32_t n) {
    if (n >= 16) {  // a longer run: the library's word copy wins
        memcpy(dst, src, (size_t)n);
        return dst + n;
    }
    for (int32_t i = 0; i < n; ++i) dst[i] = src[i];
    return dst + n;
}

// Gathers the patch of output pixel p (batch, row and column flattened) into one lane of
// `cols`, in tap order ky, kx, ci. `stage` holds kp bytes.
void gather_patch(const tc_window_dims* d, const int8_t* x, int32_t p, int32_t input_offset,
                  uint32_t* cols, int32_t kp, int32_t lanes, int32_t lane, int8_t* stage) {
    const int32_t in_c = d->in_c;
    const int32_t per_image = d->out_h * d->out_w;
    const int32_t b = p / per_image, r = p % per_image;
    const int32_t y0 = (r / d->out_w) * d->stride_h - d->pad_top;
    const int32_t x0 = (r % d->out_w) * d->stride_w - d->pad_left;
    const int32_t row = d->k_w * in_c;
    const int8_t* image = x + b * d->in_h * d->in_w * in_c;
    const uint32_t off2 = ((uint32_t)input_offset & 0xffffu) | ((uint32_t)input_offset << 16);
    const bool inside = y0 >= 0 && x0 >= 0 && y0 + d->k_h <= d->in_h && x0 + d->k_w <= d->in_w;
    if (inside && (row & 3) == 0) {
        // Each kernel row is one contiguous run of whole words: widen it in place.
        for (int32_t ky = 0; ky < d->k_h; ++ky)
            widen_taps(image + ((y0 + ky) * d->in_w + x0) * in_c, row, off2,
                       cols + (ky * row >> 1) * lanes + lane, lanes);
        return;  // kp == k: no padding taps
    }
    // The input zero point: an int8 (input_offset is its negation), 0 after the offset.
    const int8_t pad = (int8_t)(-input_offset);
    // Columns of the window inside the image: kx in [kx_lo, kx_hi).
    int32_t kx_lo = x0 < 0 ? -x0 : 0;
    if (kx_lo > d->k_w) kx_lo = d->k_w;
    int32_t kx_hi = d->in_w - x0 < d->k_w ? d->in_w - x0 : d->k_w;
    if (kx_hi < kx_lo) kx_hi = kx_lo;
    const int32_t before = kx_lo * in_c, run = (kx_hi - kx_lo) * in_c, after = row - before - run;
    int8_t* s = stage;
    for (int32_t ky = 0; ky < d->k_h; ++ky) {
        const int32_t iy = y0 + ky;
        if (iy < 0 || iy >= d->in_h) {
            s = stage_fill(s, pad, row);
            continue;
        }
        s = stage_fill(s, pad, before);
        s = stage_copy(s, image + (iy * d->in_w + x0 + kx_lo) * in_c, run);
        s = stage_fill(s, pad, after);
    }
    stage_fill(s, pad, kp - d->k_h * row);  // taps padded to a multiple of four
    widen_taps(stage, kp, off2, cols + lane, lanes);
}

// Widens filters c0 .. c0 + count - 1 (count even; channels >= out_c become zeros) into
// channel pairs of kp words each.
void widen_filters(const int8_t* w, int32_t k, int32_t kp, int32_t c0, int32_t count,
                   int32_t out_c, uint32_t* wide) {
    for (int32_t i = 0; i < count; ++i) {
        const int32_t c = c0 + i, lane = i & 1;
        uint32_t* pair = wide + (i >> 1) * kp;
        if (c >= out_c) {
            clear_lane(pair, kp, 2, lane);
        } else if ((k & 3) == 0) {
            widen_taps(w + c * k, k, 0, pair + lane, 2);
        } else {
            int16_t* p16 = (int16_t*)pair;
            for (int32_t t = 0; t < kp; ++t)
                p16[tap_index(t, 2, lane)] = t < k ? (int16_t)w[c * k + t] : (int16_t)0;
        }
    }
}

// acc[c * Pixels + j] += dot(channel c, pixel j) over `words` words: the portable loop, also
// the reference the Cortex-M7 loop below must equal.
template <int32_t Pixels>
inline void dot_2xp(const uint32_t* w, const uint32_t* x, int32_t words, int32_t* acc) {
    for (int32_t i = 0; i < words; ++i, w += 2, x += Pixels) {
        for (int32_t j = 0; j < Pixels; ++j) {
            acc[j] = tc_smlad(w[0], x[j], acc[j]);
            acc[Pixels + j] = tc_smlad(w[1], x[j], acc[Pixels + j]);
        }
    }
}

#if defined(TC_KERNELS_ARM_DSP)
// The 2 x 3 block on the Cortex-M7 (words even). Registers: r0 weights, r1 inputs, r2 count,
// r3-r8 accumulators, r9-r11 three pixels' words, r12/lr two channels' words. GCC does not
// keep fourteen values in registers around a loop written in C, hence a whole function in
// assembly; the accumulator pointer waits on the stack.
#define TC_DOT_2X3_WORD                        \
    "ldrd r12, lr, [r0], #8\n"                 \
    "ldmia r1!, {r9, r10, r11}\n"              \
    "smlad r3, r12, r9, r3\n"                  \
    "smlad r4, r12, r10, r4\n"                 \
    "smlad r5, r12, r11, r5\n"                 \
    "smlad r6, lr, r9, r6\n"                   \
    "smlad r7, lr, r10, r7\n"                  \
    "smlad r8, lr, r11, r8\n"

extern "C" __attribute__((naked)) void tc_conv2d_s8_dot_2x3(const uint32_t*, const uint32_t*,
                                                            int32_t, int32_t*) {
    __asm__ volatile(
        "push {r3-r11, lr}\n"
        "ldm r3, {r3-r8}\n"
        "tst r2, #2\n"  // two words first when the count is not a multiple of four
        "beq 2f\n"
        TC_DOT_2X3_WORD TC_DOT_2X3_WORD
        "2:\n"
        "lsrs r2, r2, #2\n"
        "beq 3f\n"
        "1:\n"
        TC_DOT_2X3_WORD TC_DOT_2X3_WORD TC_DOT_2X3_WORD TC_DOT_2X3_WORD
        "subs r2, r2, #1\n"
        "bne 1b\n"
        "3:\n"
        "ldr r0, [sp]\n"
        "stm r0, {r3-r8}\n"
        "pop {r3-r11, pc}\n");
}
#undef TC_DOT_2X3_WORD
#endif

template <int32_t Pixels>
inline void dot_block(const uint32_t* w, const uint32_t* x, int32_t words, int32_t* acc) {
#if defined(TC_KERNELS_ARM_DSP)
    if (Pixels == 3) {
        tc_conv2d_s8_dot_2x3(w, x, words, acc);
        return;
    }
#endif
    dot_2xp<Pixels>(w, x, words, acc);
}

inline int8_t finish(int32_t acc, const tc_requant_channel* r, int32_t offset, int32_t lo,
                     int32_t hi) {
    const int32_t v = tc_requant_channel_apply(acc, r) + offset;
    return (int8_t)(v < lo ? lo : v > hi ? hi : v);
}

// Channels per pass at most: their requantisation parameters are computed once per pass into
// an array on the stack (20 bytes each).
constexpr int32_t kMaxBlock = 32;

// Every pixel block for channels c0 .. c_end - 1, whose filters are widened in `wide`.
template <int32_t Pixels>
void run_pass(const tc_window_dims* d, const tc_s8_quant* q, const int8_t* x,
              const int32_t* bias, int8_t* y, int8_t* stage, uint32_t* cols,
              const uint32_t* wide, int32_t kp, int32_t c0, int32_t c_end) {
    const int32_t out_c = d->out_c;
    tc_requant_channel rq[kMaxBlock];
    int32_t b0[kMaxBlock];
    for (int32_t c = c0; c < c_end; ++c) {
        const int32_t qi = q->per_channel ? c : 0;
        rq[c - c0] = tc_requant_channel_of(q->multiplier[qi], q->shift[qi]);
        b0[c - c0] = bias ? bias[c] : 0;
    }
    const int32_t pixels = d->batch * d->out_h * d->out_w;
    // Copies: an int8 store may alias anything, and the fields would be reloaded per output.
    const int32_t offset = q->output_offset, lo = q->act_min, hi = q->act_max;
    for (int32_t p = 0; p < pixels; p += Pixels) {
        const int32_t here = pixels - p < Pixels ? pixels - p : Pixels;
        for (int32_t j = 0; j < Pixels; ++j) {
            if (j < here)
                gather_patch(d, x, p + j, q->input_offset, cols, kp, Pixels, j, stage);
            else
                clear_lane(cols, kp, Pixels, j);
        }
        int8_t* yp = y + p * out_c;
        for (int32_t c = c0; c < c_end; c += 2) {
            const int32_t n = c + 1 < c_end ? 2 : 1;  // the last pair of an odd out_c
            int32_t acc[2 * Pixels];
            for (int32_t j = 0; j < Pixels; ++j) {
                acc[j] = b0[c - c0];
                acc[Pixels + j] = n == 2 ? b0[c - c0 + 1] : 0;
            }
            dot_block<Pixels>(wide + (c - c0) * (kp >> 1), cols, lane_words(kp), acc);
            for (int32_t i = 0; i < n; ++i)
                for (int32_t j = 0; j < here; ++j)
                    yp[j * out_c + c + i] =
                        finish(acc[i * Pixels + j], &rq[c - c0 + i], offset, lo, hi);
        }
    }
}

// Channels per pass that fit next to the staging area and `pixels` patches (even, 0 when not
// even two fit).
int32_t channel_block(int32_t scratch_bytes, int32_t kp, int32_t pixels) {
    const int32_t words = scratch_bytes / 4 - kp / 4 - pixels * lane_words(kp);
    return words < kp ? 0 : 2 * (words / kp);
}

// ---------------------------------------------------------------------------------------------
// The first layer of an image model: one input channel, 3x3, stride 1. With nine taps per output
// the general layout's per-output work (gathering a patch, the requantisation) would outweigh
// the multiply-accumulates, so this path slides along rows instead:
//   - three input rows are kept widened to int16 with the offset added, zeros outside the image
//     (a rolling window: one new row per output row), so that a word at an even column holds two
//     neighbouring inputs;
//   - per channel, each kernel row is held as two words, (w0, w1) and (w1, w2), doubled; two
//     neighbouring outputs x, x+1 then take per kernel row one LDRD and four multiply-
//     accumulates: SMLAD (x: taps 0,1), SMLABT (x: tap 2), SMLATB (x+1: tap 0), SMLAD
//     (x+1: taps 1,2): 15 instructions for 18 MACs;
//   - the accumulators of a row go to a small array, then a short exact requantisation finishes
//     them (tc_requant_fast's arithmetic: the doubled weights and bias give 2 acc for SMMLAR
//     directly; the sign correction may use acc's sign, as h is 0 whenever their signs differ,
//     and 0 gives the same result either way; rounding half and output offset are one constant).
// It applies when every channel has a right shift and a bias that keeps |acc| < 2^30, the row
// fits kMaxRow and the scratch holds the three rows; otherwise the general path runs.
constexpr int32_t kMaxRow = 128;   // output columns of the accumulator row (stack)
constexpr int32_t kMaxThin = 32;   // channels whose packed weights sit on the stack per pass

inline int32_t thin_row_words(int32_t out_w) { return (out_w + 4) >> 1; }

int32_t thin_scratch_bytes(const tc_window_dims* d) {
    return 3 * thin_row_words(d->out_w) * 4;
}

bool thin_applies(const tc_window_dims* d, const tc_s8_quant* q, const int32_t* bias,
                  int32_t scratch_bytes) {
    if (d->in_c != 1 || d->k_h != 3 || d->k_w != 3 || d->stride_h != 1 || d->stride_w != 1)
        return false;
    if (d->out_w > kMaxRow || thin_scratch_bytes(d) > scratch_bytes) return false;
    if (q->act_min < -128 || q->act_max > 127 || q->output_offset < -128 ||
        q->output_offset > 127)
        return false;
    for (int32_t c = 0; c < d->out_c; ++c) {
        const int32_t qi = q->per_channel ? c : 0;
        // A right shift of at most 22 keeps the folded rounding constant (2^(right-1) plus
        // the output offset times 2^right) and the sum below 2^31.
        if (q->shift[qi] >= 0 || q->shift[qi] < -22 || q->multiplier[qi] == INT32_MIN)
            return false;
        // |acc| <= |bias| + 9 * 255 * 128 must stay below 2^30.
        const int32_t b = bias ? bias[c] : 0;
        if (b > (1 << 29) || b < -(1 << 29)) return false;
    }
    return true;
}

// Widens input row iy of image `image` into `row` (columns shifted by pad_left, zeros outside).
// Inside the image four inputs at a time: one word load, two SXTAB16 (offset added) and two
// PKHBT/PKHTB to put neighbours side by side, two word stores (which may be unaligned).
void thin_widen_row(const tc_window_dims* d, const int8_t* image, int32_t iy, int32_t offset,
                    int16_t* row) {
    const int32_t n = 2 * thin_row_words(d->out_w);
    if (iy < 0 || iy >= d->in_h) {
        memset(row, 0, (size_t)n * 2);
        return;
    }
    const int8_t* src = image + iy * d->in_w;
    const int32_t pad = d->pad_left;
    // Columns j with input ix = j - pad inside the image: [pad, pad + in_w), within [0, n).
    const int32_t j_end = pad + d->in_w < n ? pad + d->in_w : n;
    int32_t j = 0;
    for (; j < pad; ++j) row[j] = 0;
    const uint32_t off2 = ((uint32_t)offset & 0xffffu) | ((uint32_t)offset << 16);
    for (; j + 4 <= j_end; j += 4) {
        uint32_t v;
        memcpy(&v, src + (j - pad), 4);
        const uint32_t even = tc_sxtab16(off2, v);       // (x0, x2)
        const uint32_t odd = tc_sxtab16_ror8(off2, v);   // (x1, x3)
        const uint32_t w01 = (even & 0xffffu) | (odd << 16);
        const uint32_t w23 = (even >> 16) | (odd & 0xffff0000u);
        memcpy(row + j, &w01, 4);
        memcpy(row + j + 2, &w23, 4);
    }
    for (; j < j_end; ++j) row[j] = (int16_t)(src[j - pad] + offset);
    for (; j < n; ++j) row[j] = 0;
}

inline uint32_t pack16(int32_t lo, int32_t hi) {
    return ((uint32_t)lo & 0xffffu) | ((uint32_t)hi << 16);
}

// acc[x] = 2 * (bias + sum of the 3x3 window at output column x) for one output row, two
// columns per round; wk: per kernel row the words (w0, w1) and (w1, w2), doubled.
#if defined(TC_KERNELS_ARM_DSP)
// Registers: r0-r2 the three rows, r3 the accumulators, r4 the pair count, r5/r6 two input
// words, r7/r8 the two outputs, r9/r10 a kernel row's words, r11 wk, r12 2 * bias. Per pair
// three LDRD of inputs, three of weights, twelve multiply-accumulates (the first of each output
// adds the bias), one STM, two loop instructions: 21 instructions for 18 MACs.
#define TC_THIN_KROW(ROW, WOFF, FIRST0, FIRST1)                  \
    "ldrd r9, r10, [r11, #" WOFF "]\n"                           \
    "ldrd r5, r6, [" ROW "], #4\n"                               \
    "smlad r7, r5, r9, " FIRST0 "\n"                             \
    "smlabt r7, r6, r10, r7\n"                                   \
    "smlatb r8, r5, r9, " FIRST1 "\n"                            \
    "smlad r8, r6, r10, r8\n"
extern "C" __attribute__((naked)) void tc_conv2d_s8_thin_row(const uint32_t*, const uint32_t*,
                                                             const uint32_t*, int32_t*, int32_t,
                                                             const uint32_t*, int32_t) {
    __asm__ volatile(
        "push {r4-r11, lr}\n"
        "ldr r4, [sp, #36]\n"
        "ldr r11, [sp, #40]\n"
        "ldr r12, [sp, #44]\n"
        "1:\n"
        TC_THIN_KROW("r0", "0", "r12", "r12")
        TC_THIN_KROW("r1", "8", "r7", "r8")
        TC_THIN_KROW("r2", "16", "r7", "r8")
        "stmia r3!, {r7, r8}\n"
        "subs r4, r4, #1\n"
        "bne 1b\n"
        "pop {r4-r11, pc}\n");
}
#undef TC_THIN_KROW

// Requantises n (even) doubled accumulators into int8 outputs `stride` bytes apart:
// v = (k + (a >> 31) + SMMLAR-high(a * mult)) >> right, then SSAT to int8 and, unless it is
// -128 (a ReLU layer's zero point as TFLite quantises it), the lower bound (k = 2^(right-1) +
// offset * 2^right; see thin_conv). Registers: r0 acc, r1 out, r2 count, r3 stride, r4 mult,
// r5 k, r6 right, r7 lo, r8/r9 two accumulators, r10/r11 temporaries.
#define TC_THIN_OUT(A, T, CLAMP)                 \
    "add " T ", r5, " A ", asr #31\n"            \
    "smmlar " T ", " A ", r4, " T "\n"           \
    "asr " T ", " T ", r6\n"                     \
    "ssat " T ", #8, " T "\n"                    \
    CLAMP                                        \
    "strb " T ", [r1]\n"                         \
    "add r1, r1, r3\n"
#define TC_THIN_LO(T) "cmp " T ", r7\n it lt\n movlt " T ", r7\n"
extern "C" __attribute__((naked)) void tc_conv2d_s8_thin_requant(const int32_t*, int8_t*,
                                                                 int32_t, int32_t, int32_t,
                                                                 int32_t, int32_t, int32_t) {
    __asm__ volatile(
        "push {r4-r11, lr}\n"
        "ldrd r4, r5, [sp, #36]\n"
        "ldrd r6, r7, [sp, #44]\n"
        "lsrs r2, r2, #1\n"
        "cmn r7, #128\n"
        "beq 2f\n"
        "1:\n"
        "ldrd r8, r9, [r0], #8\n"
        TC_THIN_OUT("r8", "r10", TC_THIN_LO("r10"))
        TC_THIN_OUT("r9", "r11", TC_THIN_LO("r11"))
        "subs r2, r2, #1\n"
        "bne 1b\n"
        "pop {r4-r11, pc}\n"
        "2:\n"
        "ldrd r8, r9, [r0], #8\n"
        TC_THIN_OUT("r8", "r10", "")
        TC_THIN_OUT("r9", "r11", "")
        "subs r2, r2, #1\n"
        "bne 2b\n"
        "pop {r4-r11, pc}\n");
}
#undef TC_THIN_OUT
#undef TC_THIN_LO
#endif

void thin_row(const uint32_t* r0, const uint32_t* r1, const uint32_t* r2, const uint32_t* wk,
              int32_t bias2, int32_t out_w, int32_t* acc) {
#if defined(TC_KERNELS_ARM_DSP)
    tc_conv2d_s8_thin_row(r0, r1, r2, acc, (out_w + 1) >> 1, wk, bias2);
#else
    const uint32_t* rows[3] = {r0, r1, r2};
    for (int32_t x = 0, k = 0; x < out_w; x += 2, ++k, acc += 2) {
        int32_t s0 = bias2, s1 = bias2;
        for (int32_t ky = 0; ky < 3; ++ky) {
            const uint32_t u = rows[ky][k], v = rows[ky][k + 1];
            const uint32_t a = wk[2 * ky], b = wk[2 * ky + 1];
            s0 = tc_smlad(u, a, s0);
            s0 = tc_smlabt(v, b, s0);
            s1 = tc_smlatb(u, a, s1);
            s1 = tc_smlad(v, b, s1);
        }
        acc[0] = s0;
        acc[1] = s1;
    }
#endif
}

// One doubled accumulator to int8: the same arithmetic as the Cortex-M7 loop.
inline int8_t thin_finish(int32_t a, int32_t mult, int32_t k, int32_t right, int32_t lo,
                          int32_t hi) {
    const int32_t h = (int32_t)(((int64_t)a * mult + (1ll << 31)) >> 32);
    int32_t v = (k + (a >> 31) + h) >> right;
    v = v < -128 ? -128 : v > 127 ? 127 : v;
    v = v < lo ? lo : v;
    return (int8_t)(v > hi ? hi : v);
}

void thin_conv(const tc_window_dims* d, const tc_s8_quant* q, const int8_t* x, const int8_t* w,
               const int32_t* bias, int8_t* y, void* scratch) {
    const int32_t out_c = d->out_c, out_w = d->out_w, words = thin_row_words(out_w);
    uint32_t* rows[3] = {(uint32_t*)scratch, (uint32_t*)scratch + words,
                         (uint32_t*)scratch + 2 * words};
    // Per channel of a pass: the packed kernel rows, then 2 * bias, multiplier, rounding
    // constant and right shift (computed once, not per output row).
    uint32_t wk[kMaxThin][6];
    int32_t par[kMaxThin][4];
    int32_t acc[kMaxRow + 1];
    const int32_t offset = q->output_offset, lo = q->act_min, hi = q->act_max;
    for (int32_t c0 = 0; c0 < out_c; c0 += kMaxThin) {
        const int32_t c1 = c0 + kMaxThin < out_c ? c0 + kMaxThin : out_c;
        for (int32_t c = c0; c < c1; ++c)
            for (int32_t ky = 0; ky < 3; ++ky) {
                const int8_t* t = w + c * 9 + ky * 3;
                wk[c - c0][2 * ky] = pack16(2 * t[0], 2 * t[1]);
                wk[c - c0][2 * ky + 1] = pack16(2 * t[1], 2 * t[2]);
            }
        for (int32_t c = c0; c < c1; ++c) {
            const int32_t qi = q->per_channel ? c : 0;
            const int32_t right = -q->shift[qi];
            int32_t* p = par[c - c0];
            p[0] = 2 * (bias ? bias[c] : 0);
            p[1] = q->multiplier[qi];
            // The rounding half and the output offset in one constant (exact: the offset
            // times 2^right is a multiple of the divisor).
            p[2] = (1 << (right - 1)) + offset * (1 << right);
            p[3] = right;
        }
        for (int32_t b = 0; b < d->batch; ++b) {
            const int8_t* image = x + b * d->in_h * d->in_w;
            const int32_t y0 = -d->pad_top;
            // The window of output row 0: input rows y0 .. y0 + 2.
            for (int32_t i = 0; i < 3; ++i)
                thin_widen_row(d, image, y0 + i, q->input_offset, (int16_t*)rows[i]);
            for (int32_t oy = 0; oy < d->out_h; ++oy) {
                if (oy > 0) {  // slide: the oldest row becomes the newest
                    uint32_t* oldest = rows[0];
                    rows[0] = rows[1];
                    rows[1] = rows[2];
                    rows[2] = oldest;
                    thin_widen_row(d, image, y0 + oy + 2, q->input_offset, (int16_t*)oldest);
                }
                int8_t* yrow = y + ((b * d->out_h + oy) * out_w) * out_c;
                for (int32_t c = c0; c < c1; ++c) {
                    const int32_t* p = par[c - c0];
                    const int32_t mult = p[1], k = p[2], right = p[3];
                    thin_row(rows[0], rows[1], rows[2], wk[c - c0], p[0], out_w, acc);
                    int8_t* out = yrow + c;
                    int32_t ox = 0;
#if defined(TC_KERNELS_ARM_DSP)
                    if (hi == 127 && out_w >= 2) {
                        ox = out_w & ~1;
                        tc_conv2d_s8_thin_requant(acc, out, ox, out_c, mult, k, right, lo);
                        out += ox * out_c;
                    }
#endif
                    for (; ox < out_w; ++ox, out += out_c)
                        *out = thin_finish(acc[ox], mult, k, right, lo, hi);
                }
            }
        }
    }
}

}  // namespace

int32_t tc_conv2d_s8_scratch_bytes(const tc_window_dims* d, int32_t out_block) {
    if (out_block < 2) out_block = 2;
    out_block = (out_block + 1) & ~1;
    return (3 + out_block) * padded_taps(d) * (int32_t)sizeof(int16_t) + padded_taps(d);
}

int32_t tc_conv2d_s8_min_scratch_bytes(const tc_window_dims* d) {
    return (2 + 2) * padded_taps(d) * (int32_t)sizeof(int16_t) + padded_taps(d);
}

bool tc_conv2d_s8(const tc_window_dims* d, const tc_s8_quant* q, const int8_t* x,
                  const int8_t* w, const int32_t* bias, int8_t* y, void* scratch,
                  int32_t scratch_bytes) {
    const int32_t k = d->k_h * d->k_w * d->in_c;
    const int32_t kp = padded_taps(d);
    const int32_t out_c = d->out_c;
    for (int32_t c = 0; c < (q->per_channel ? out_c : 1); ++c)
        if (q->multiplier[c] == INT32_MIN) return false;
    if (thin_applies(d, q, bias, scratch_bytes)) {
        thin_conv(d, q, x, w, bias, y, scratch);
        return true;
    }
    int32_t pixels = 3;
    int32_t block = channel_block(scratch_bytes, kp, pixels);
    if (block == 0) {
        pixels = 2;
        block = channel_block(scratch_bytes, kp, pixels);
        if (block == 0) return false;
    }
    const int32_t out_c_even = (out_c + 1) & ~1;
    if (block > out_c_even) block = out_c_even;
    if (block > kMaxBlock) block = kMaxBlock;
    int8_t* stage = (int8_t*)scratch;                   // one patch as int8 (kp bytes)
    uint32_t* cols = (uint32_t*)(stage + kp);           // `pixels` patches, interleaved
    uint32_t* wide = cols + pixels * lane_words(kp);    // `block` filters, pairs interleaved
    for (int32_t c0 = 0; c0 < out_c; c0 += block) {
        const int32_t c_end = c0 + block < out_c ? c0 + block : out_c;
        widen_filters(w, k, kp, c0, block, out_c, wide);
        if (pixels == 3)
            run_pass<3>(d, q, x, bias, y, stage, cols, wide, kp, c0, c_end);
        else
            run_pass<2>(d, q, x, bias, y, stage, cols, wide, kp, c0, c_end);
    }
    return true;
}
