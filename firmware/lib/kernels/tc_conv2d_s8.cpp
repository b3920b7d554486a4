#include "tc_conv2d_s8.h"

#include "tc_simd_s8.h"

// Structure (the CMSIS-NN idea, made to need fewer instructions per multiply-accumulate):
//   1. widen a block of filters once to int16, with pairs of channels interleaved in groups of
//      four taps: [c0 k0..3][c1 k0..3][c0 k4..7][c1 k4..7]...;
//   2. for each pair of output pixels, gather the two input patches ("im2col") as int16 with the
//      input offset already added, interleaved the same way ([p0 k0..3][p1 k0..3]...);
//      out-of-image taps are 0, which is exactly TFLite's "skip padding" rule;
//   3. a 2 channels x 2 pixels inner loop: per four taps two 64-bit loads of weights, two of
//      inputs and eight dual 16-bit multiply-accumulates (SMLAD).
// Taps are padded to a multiple of four with zeros in both operands.
namespace {

// Position of tap k in an interleaved operand: groups of four taps, every other group, and
// within a group the order SXTB16 produces from one 32-bit word (bytes 0, 2, 1, 3). Weights and
// inputs use the same order, so the dot product is unchanged.
inline int32_t slot(int32_t k) { return ((k >> 2) << 3) | ((k & 1) << 1) | ((k >> 1) & 1); }

// Widens n taps (a multiple of 4, starting at a multiple of 4) adding the input offset: one
// word load and two SXTAB16 per four taps.
inline void widen_segment(const int8_t* src, int16_t* col, int32_t k0, int32_t n,
                          uint32_t offset2) {
    uint32_t* dst = (uint32_t*)(col + slot(k0));
    for (int32_t i = 0; i < n; i += 4, dst += 4) {
        uint32_t v;
        memcpy(&v, src + i, 4);
        dst[0] = tc_sxtab16(offset2, v);
        dst[1] = tc_sxtab16(offset2, (v >> 8) | (v << 24));
    }
}

inline int32_t padded_taps(const tc_window_dims* d) {
    const int32_t k = d->k_h * d->k_w * d->in_c;
    return (k + 3) & ~3;
}

// Gathers the patch of output pixel (b, oy, ox) into every other group of four int16 of `col`
// (stride 8 between groups), in tap order ky, kx, ci.
void gather_patch(const tc_window_dims* d, const int8_t* x, int32_t b, int32_t oy, int32_t ox,
                  int32_t input_offset, int16_t* col, int32_t kp) {
    const int32_t in_c = d->in_c;
    const int32_t y0 = oy * d->stride_h - d->pad_top;
    const int32_t x0 = ox * d->stride_w - d->pad_left;
    const int32_t row = d->k_w * in_c;
    if ((row & 3) == 0 && y0 >= 0 && x0 >= 0 && y0 + d->k_h <= d->in_h &&
        x0 + d->k_w <= d->in_w) {
        // Whole window inside the image: each kernel row is one contiguous run of bytes.
        const uint32_t off2 = ((uint32_t)input_offset & 0xffffu) | ((uint32_t)input_offset << 16);
        for (int32_t ky = 0; ky < d->k_h; ++ky)
            widen_segment(x + ((b * d->in_h + y0 + ky) * d->in_w + x0) * in_c, col, ky * row,
                          row, off2);
        return;  // kp == k: no padding taps
    }
    int32_t k = 0;
    for (int32_t ky = 0; ky < d->k_h; ++ky) {
        const int32_t iy = y0 + ky;
        const bool row_ok = iy >= 0 && iy < d->in_h;
        for (int32_t kx = 0; kx < d->k_w; ++kx) {
            const int32_t ix = x0 + kx;
            if (row_ok && ix >= 0 && ix < d->in_w) {
                const int8_t* xp = x + ((b * d->in_h + iy) * d->in_w + ix) * in_c;
                for (int32_t c = 0; c < in_c; ++c, ++k)
                    col[slot(k)] = (int16_t)(xp[c] + input_offset);
            } else {
                for (int32_t c = 0; c < in_c; ++c, ++k) col[slot(k)] = 0;
            }
        }
    }
    for (; k < kp; ++k) col[slot(k)] = 0;
}

void clear_patch(int16_t* col, int32_t kp) {
    for (int32_t k = 0; k < kp; ++k) col[slot(k)] = 0;
}

// Widens filters c and c + 1 (c + 1 may not exist: zeros) into the interleaved layout.
void widen_filter_pair(const int8_t* w, int32_t k, int32_t kp, int32_t c, int32_t out_c,
                       int16_t* dst) {
    for (int32_t j = 0; j < 2; ++j) {
        const int8_t* wc = w + (c + j) * k;
        int16_t* dj = dst + 4 * j;
        const bool exists = c + j < out_c;
        for (int32_t t = 0; t < kp; ++t)
            dj[slot(t)] = (exists && t < k) ? (int16_t)wc[t] : (int16_t)0;
    }
}

inline int8_t finish(int32_t acc, const tc_s8_quant* q, int32_t c) {
    const int32_t i = q->per_channel ? c : 0;
    return (int8_t)tc_requantize_clamp(acc, q->multiplier[i], q->shift[i], q);
}

}  // namespace

int32_t tc_conv2d_s8_scratch_bytes(const tc_window_dims* d, int32_t out_block) {
    if (out_block < 2) out_block = 2;
    out_block = (out_block + 1) & ~1;
    const int32_t kp = padded_taps(d);
    return (2 * kp + out_block * kp) * (int32_t)sizeof(int16_t);
}

bool tc_conv2d_s8(const tc_window_dims* d, const tc_s8_quant* q, const int8_t* x,
                  const int8_t* w, const int32_t* bias, int8_t* y, void* scratch,
                  int32_t scratch_bytes) {
    const int32_t k = d->k_h * d->k_w * d->in_c;
    const int32_t kp = padded_taps(d);
    const int32_t out_c = d->out_c;
    const int32_t min_bytes = tc_conv2d_s8_scratch_bytes(d, 2);
    if (scratch_bytes < min_bytes) return false;
    int32_t block = (scratch_bytes / (int32_t)sizeof(int16_t) - 2 * kp) / kp;
    block &= ~1;
    const int32_t out_c_even = (out_c + 1) & ~1;
    if (block > out_c_even) block = out_c_even;
    int16_t* cols = (int16_t*)scratch;         // 2 patches, interleaved
    int16_t* wide = cols + 2 * kp;             // `block` filters, pairs interleaved
    const int32_t pixels = d->batch * d->out_h * d->out_w;
    const int32_t per_image = d->out_h * d->out_w;

    for (int32_t c0 = 0; c0 < out_c; c0 += block) {
        const int32_t c_end = c0 + block < out_c ? c0 + block : out_c;
        for (int32_t c = c0; c < c_end; c += 2)
            widen_filter_pair(w, k, kp, c, out_c, wide + (c - c0) * kp);
        for (int32_t p = 0; p < pixels; p += 2) {
            const bool second = p + 1 < pixels;
            {
                const int32_t b = p / per_image, r = p % per_image;
                gather_patch(d, x, b, r / d->out_w, r % d->out_w, q->input_offset, cols, kp);
            }
            if (second) {
                const int32_t b = (p + 1) / per_image, r = (p + 1) % per_image;
                gather_patch(d, x, b, r / d->out_w, r % d->out_w, q->input_offset, cols + 4, kp);
            } else {
                clear_patch(cols + 4, kp);
            }
            int8_t* y0 = y + p * out_c;
            int8_t* y1 = y0 + out_c;
            for (int32_t c = c0; c < c_end; c += 2) {
                int32_t acc[4];  // [c][p0], [c][p1], [c+1][p0], [c+1][p1]
                const bool pair = c + 1 < c_end;
                acc[0] = acc[1] = bias ? bias[c] : 0;
                acc[2] = acc[3] = (bias && pair) ? bias[c + 1] : 0;
                tc_s16_dot_2x2(wide + (c - c0) * kp, cols, kp, acc);
                y0[c] = finish(acc[0], q, c);
                if (second) y1[c] = finish(acc[1], q, c);
                if (pair) {
                    y0[c + 1] = finish(acc[2], q, c + 1);
                    if (second) y1[c + 1] = finish(acc[3], q, c + 1);
                }
            }
        }
    }
    return true;
}
