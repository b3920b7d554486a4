#include "tc_conv2d_f32.h"

#include <math.h>

// In NHWC, the input pixels (iy, kx0..kx1-1) of one kernel row are contiguous together with
// their channels, and so are the matching weights [o][ky][kx0..kx1-1][:]. Every kernel row of
// an output pixel is therefore one contiguous dot product of length (kx1 - kx0) * in_c, which
// is what the blocked inner loops want, also for in_c = 1 or 3.
namespace {

struct window_span {
    int32_t ky0, ky1, kx0, kx1;  // valid kernel rows/columns for this output pixel
    int32_t iy0, ix0;            // input pixel of (ky0, kx0)
};

inline window_span span_of(const tc_window_dims* d, int32_t oy, int32_t ox) {
    window_span s;
    const int32_t y0 = oy * d->stride_h - d->pad_top;
    const int32_t x0 = ox * d->stride_w - d->pad_left;
    s.ky0 = y0 < 0 ? -y0 : 0;
    s.kx0 = x0 < 0 ? -x0 : 0;
    s.ky1 = d->in_h - y0 < d->k_h ? d->in_h - y0 : d->k_h;
    s.kx1 = d->in_w - x0 < d->k_w ? d->in_w - x0 : d->k_w;
    s.iy0 = y0 + s.ky0;
    s.ix0 = x0 + s.kx0;
    return s;
}

// One input channel and a 3x3 filter (an image model's first layer): a kernel row is 3 taps,
// far too short for the blocked loops, whose set-up per call would cost more than the taps. For a
// pixel whose window lies inside the input the nine inputs stay in registers while every filter
// runs its taps in the blocked loops' order (row by row, left to right), so the results are bit
// for bit the same; pixels at the border take the general path.
inline bool full_3x3_single_channel(const tc_window_dims* d, const window_span& s) {
    return d->in_c == 1 && d->k_h == 3 && d->k_w == 3 && s.ky0 == 0 && s.ky1 == 3 &&
           s.kx0 == 0 && s.kx1 == 3;
}

struct window9 {
    float t[9];
    explicit window9(const float* p, int32_t row) {
        for (int32_t r = 0; r < 3; ++r)
            for (int32_t c = 0; c < 3; ++c) t[3 * r + c] = p[r * row + c];
    }
};

inline float dot9(const window9& x, const float* w, float acc) {
    acc = fmaf(x.t[0], w[0], acc);
    acc = fmaf(x.t[1], w[1], acc);
    acc = fmaf(x.t[2], w[2], acc);
    acc = fmaf(x.t[3], w[3], acc);
    acc = fmaf(x.t[4], w[4], acc);
    acc = fmaf(x.t[5], w[5], acc);
    acc = fmaf(x.t[6], w[6], acc);
    acc = fmaf(x.t[7], w[7], acc);
    return fmaf(x.t[8], w[8], acc);
}

}  // namespace

void tc_conv2d_f32_fwd(const tc_window_dims* d, const float* x, const float* w, const float* bias,
                       float* y) {
    const int32_t in_c = d->in_c;
    const int32_t out_c = d->out_c;
    const int32_t w_row = d->k_w * in_c;            // one kernel row of one filter
    const int32_t w_filter = d->k_h * w_row;        // one filter
    const int32_t x_row = d->in_w * in_c;
    for (int32_t b = 0; b < d->batch; ++b) {
        const float* xb = x + b * d->in_h * x_row;
        for (int32_t oy = 0; oy < d->out_h; ++oy) {
            for (int32_t ox = 0; ox < d->out_w; ++ox) {
                const window_span s = span_of(d, oy, ox);
                const int32_t n = (s.kx1 - s.kx0) * in_c;
                const int32_t w_off = s.kx0 * in_c;
                float* yp = y + ((b * d->out_h + oy) * d->out_w + ox) * out_c;
                if (full_3x3_single_channel(d, s)) {
                    const window9 win(xb + s.iy0 * x_row + s.ix0, x_row);
                    for (int32_t o = 0; o < out_c; ++o) yp[o] = dot9(win, w + 9 * o, bias[o]);
                    continue;
                }
                int32_t o = 0;
                for (; o + 4 <= out_c; o += 4) {
                    float acc[4] = {bias[o], bias[o + 1], bias[o + 2], bias[o + 3]};
                    for (int32_t ky = s.ky0; ky < s.ky1; ++ky) {
                        const float* xs = xb + (s.iy0 + ky - s.ky0) * x_row + s.ix0 * in_c;
                        tc_f32_dot4(xs, w + o * w_filter + ky * w_row + w_off, w_filter, n, acc);
                    }
                    yp[o] = acc[0];
                    yp[o + 1] = acc[1];
                    yp[o + 2] = acc[2];
                    yp[o + 3] = acc[3];
                }
                for (; o < out_c; ++o) {
                    float acc = bias[o];
                    for (int32_t ky = s.ky0; ky < s.ky1; ++ky) {
                        const float* xs = xb + (s.iy0 + ky - s.ky0) * x_row + s.ix0 * in_c;
                        acc = tc_f32_dot1(xs, w + o * w_filter + ky * w_row + w_off, n, acc);
                    }
                    yp[o] = acc;
                }
            }
        }
    }
}

void tc_conv2d_f32_bwd(const tc_window_dims* d, const float* x, const float* w, const float* dy,
                       float* dx, float* dw, float* db) {
    tc_conv2d_f32_bwd_acc(d, x, w, dy, dx, dw, db, 0);
}

void tc_conv2d_f32_bwd_acc(const tc_window_dims* d, const float* x, const float* w,
                           const float* dy, float* dx, float* dw, float* db, int32_t accumulate) {
    const int32_t in_c = d->in_c;
    const int32_t out_c = d->out_c;
    const int32_t w_row = d->k_w * in_c;
    const int32_t w_filter = d->k_h * w_row;
    const int32_t x_row = d->in_w * in_c;
    if (!accumulate) {
        tc_f32_zero(dw, out_c * w_filter);
        if (db) tc_f32_zero(db, out_c);
    }
    if (dx) tc_f32_zero(dx, d->batch * d->in_h * x_row);
    for (int32_t b = 0; b < d->batch; ++b) {
        const float* xb = x + b * d->in_h * x_row;
        float* dxb = dx ? dx + b * d->in_h * x_row : nullptr;
        for (int32_t oy = 0; oy < d->out_h; ++oy) {
            for (int32_t ox = 0; ox < d->out_w; ++ox) {
                const window_span s = span_of(d, oy, ox);
                const int32_t n = (s.kx1 - s.kx0) * in_c;
                const int32_t w_off = s.kx0 * in_c;
                const float* dyp = dy + ((b * d->out_h + oy) * d->out_w + ox) * out_c;
                if (full_3x3_single_channel(d, s)) {
                    const int32_t x_off = s.iy0 * x_row + s.ix0;
                    const window9 win(xb + x_off, x_row);
                    // dw: one fmaf per pixel and weight; dx: over the filters in order, as the
                    // four-row AXPY and its remainder add them.
                    float g[9] = {0, 0, 0, 0, 0, 0, 0, 0, 0};
                    if (dxb) {
                        const window9 cur(dxb + x_off, x_row);
                        for (int32_t k = 0; k < 9; ++k) g[k] = cur.t[k];
                    }
                    for (int32_t o = 0; o < out_c; ++o) {
                        const float a = dyp[o];
                        float* dwo = dw + 9 * o;
                        for (int32_t k = 0; k < 9; ++k) dwo[k] = fmaf(a, win.t[k], dwo[k]);
                        if (dxb) {
                            const float* wo = w + 9 * o;
                            for (int32_t k = 0; k < 9; ++k) g[k] = fmaf(a, wo[k], g[k]);
                        }
                    }
                    if (dxb)
                        for (int32_t r = 0; r < 3; ++r)
                            for (int32_t c = 0; c < 3; ++c) dxb[x_off + r * x_row + c] = g[3 * r + c];
                    if (db)
                        for (int32_t o = 0; o < out_c; ++o) db[o] += dyp[o];
                    continue;
                }
                int32_t o = 0;
                for (; o + 4 <= out_c; o += 4) {
                    const float a[4] = {dyp[o], dyp[o + 1], dyp[o + 2], dyp[o + 3]};
                    for (int32_t ky = s.ky0; ky < s.ky1; ++ky) {
                        const int32_t x_off = (s.iy0 + ky - s.ky0) * x_row + s.ix0 * in_c;
                        const int32_t wo = o * w_filter + ky * w_row + w_off;
                        if (dxb) tc_f32_axpy4(dxb + x_off, a, w + wo, w_filter, n);
                        tc_f32_ger4(dw + wo, w_filter, a, xb + x_off, n);
                    }
                }
                for (; o < out_c; ++o) {
                    for (int32_t ky = s.ky0; ky < s.ky1; ++ky) {
                        const int32_t x_off = (s.iy0 + ky - s.ky0) * x_row + s.ix0 * in_c;
                        const int32_t wo = o * w_filter + ky * w_row + w_off;
                        if (dxb) tc_f32_axpy1(dxb + x_off, dyp[o], w + wo, n);
                        tc_f32_axpy1(dw + wo, dyp[o], xb + x_off, n);
                    }
                }
                if (db)
                    for (o = 0; o < out_c; ++o) db[o] += dyp[o];
            }
        }
    }
}
