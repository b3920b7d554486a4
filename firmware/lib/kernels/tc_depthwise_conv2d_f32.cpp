#include "tc_depthwise_conv2d_f32.h"

// Channels are innermost in x, w and y, so for multiplier 1 each kernel tap is an element-wise
// multiply-accumulate over contiguous channels.
void tc_depthwise_conv2d_f32_fwd(const tc_window_dims* d, const float* x, const float* w,
                                 const float* bias, float* y) {
    const int32_t in_c = d->in_c;
    const int32_t mult = d->depth_multiplier;
    const int32_t out_c = in_c * mult;
    for (int32_t b = 0; b < d->batch; ++b) {
        for (int32_t oy = 0; oy < d->out_h; ++oy) {
            for (int32_t ox = 0; ox < d->out_w; ++ox) {
                float* yp = y + ((b * d->out_h + oy) * d->out_w + ox) * out_c;
                for (int32_t c = 0; c < out_c; ++c) yp[c] = bias[c];
                for (int32_t ky = 0; ky < d->k_h; ++ky) {
                    const int32_t iy = oy * d->stride_h - d->pad_top + ky;
                    if (iy < 0 || iy >= d->in_h) continue;
                    for (int32_t kx = 0; kx < d->k_w; ++kx) {
                        const int32_t ix = ox * d->stride_w - d->pad_left + kx;
                        if (ix < 0 || ix >= d->in_w) continue;
                        const float* xp = x + ((b * d->in_h + iy) * d->in_w + ix) * in_c;
                        const float* wp = w + (ky * d->k_w + kx) * out_c;
                        if (mult == 1) {
                            for (int32_t c = 0; c < in_c; ++c) yp[c] = fmaf(xp[c], wp[c], yp[c]);
                        } else {
                            for (int32_t ic = 0; ic < in_c; ++ic)
                                for (int32_t m = 0; m < mult; ++m) {
                                    const int32_t oc = ic * mult + m;
                                    yp[oc] = fmaf(xp[ic], wp[oc], yp[oc]);
                                }
                        }
                    }
                }
            }
        }
    }
}

void tc_depthwise_conv2d_f32_bwd(const tc_window_dims* d, const float* x, const float* w,
                                 const float* dy, float* dx, float* dw, float* db) {
    tc_depthwise_conv2d_f32_bwd_acc(d, x, w, dy, dx, dw, db, 0);
}

void tc_depthwise_conv2d_f32_bwd_acc(const tc_window_dims* d, const float* x, const float* w,
                                     const float* dy, float* dx, float* dw, float* db,
                                     int32_t accumulate) {
    const int32_t in_c = d->in_c;
    const int32_t mult = d->depth_multiplier;
    const int32_t out_c = in_c * mult;
    if (!accumulate) {
        tc_f32_zero(dw, d->k_h * d->k_w * out_c);
        if (db) tc_f32_zero(db, out_c);
    }
    if (dx) tc_f32_zero(dx, d->batch * d->in_h * d->in_w * in_c);
    for (int32_t b = 0; b < d->batch; ++b) {
        for (int32_t oy = 0; oy < d->out_h; ++oy) {
            for (int32_t ox = 0; ox < d->out_w; ++ox) {
                const float* dyp = dy + ((b * d->out_h + oy) * d->out_w + ox) * out_c;
                if (db)
                    for (int32_t c = 0; c < out_c; ++c) db[c] += dyp[c];
                for (int32_t ky = 0; ky < d->k_h; ++ky) {
                    const int32_t iy = oy * d->stride_h - d->pad_top + ky;
                    if (iy < 0 || iy >= d->in_h) continue;
                    for (int32_t kx = 0; kx < d->k_w; ++kx) {
                        const int32_t ix = ox * d->stride_w - d->pad_left + kx;
                        if (ix < 0 || ix >= d->in_w) continue;
                        const int32_t xo = ((b * d->in_h + iy) * d->in_w + ix) * in_c;
                        const float* xp = x + xo;
                        const float* wp = w + (ky * d->k_w + kx) * out_c;
                        float* dwp = dw + (ky * d->k_w + kx) * out_c;
                        for (int32_t ic = 0; ic < in_c; ++ic) {
                            for (int32_t m = 0; m < mult; ++m) {
                                const int32_t oc = ic * mult + m;
                                dwp[oc] = fmaf(dyp[oc], xp[ic], dwp[oc]);
                                if (dx) dx[xo + ic] = fmaf(dyp[oc], wp[oc], dx[xo + ic]);
                            }
                        }
                    }
                }
            }
        }
    }
}
