#include "tc_depthwise_conv2d_s8.h"

void tc_depthwise_conv2d_s8(const tc_window_dims* d, const tc_s8_quant* q, const int8_t* x,
                            const int8_t* w, const int32_t* bias, int8_t* y, int32_t* acc) {
    const int32_t in_c = d->in_c;
    const int32_t mult = d->depth_multiplier;
    const int32_t out_c = in_c * mult;
    const int32_t off = q->input_offset;
    for (int32_t b = 0; b < d->batch; ++b) {
        for (int32_t oy = 0; oy < d->out_h; ++oy) {
            for (int32_t ox = 0; ox < d->out_w; ++ox) {
                for (int32_t c = 0; c < out_c; ++c) acc[c] = bias ? bias[c] : 0;
                for (int32_t ky = 0; ky < d->k_h; ++ky) {
                    const int32_t iy = oy * d->stride_h - d->pad_top + ky;
                    if (iy < 0 || iy >= d->in_h) continue;
                    for (int32_t kx = 0; kx < d->k_w; ++kx) {
                        const int32_t ix = ox * d->stride_w - d->pad_left + kx;
                        if (ix < 0 || ix >= d->in_w) continue;
                        const int8_t* xp = x + ((b * d->in_h + iy) * d->in_w + ix) * in_c;
                        const int8_t* wp = w + (ky * d->k_w + kx) * out_c;
                        if (mult == 1) {
                            for (int32_t c = 0; c < in_c; ++c) acc[c] += (xp[c] + off) * wp[c];
                        } else {
                            for (int32_t ic = 0; ic < in_c; ++ic) {
                                const int32_t xv = xp[ic] + off;
                                for (int32_t m = 0; m < mult; ++m)
                                    acc[ic * mult + m] += xv * wp[ic * mult + m];
                            }
                        }
                    }
                }
                int8_t* yp = y + ((b * d->out_h + oy) * d->out_w + ox) * out_c;
                for (int32_t c = 0; c < out_c; ++c) {
                    const int32_t i = q->per_channel ? c : 0;
                    yp[c] = (int8_t)tc_requantize_clamp(acc[c], q->multiplier[i], q->shift[i], q);
                }
            }
        }
    }
}
