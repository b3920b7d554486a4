#include "tc_pool_f32.h"

namespace {

struct window {
    int32_t y0, y1, x0, x1;  // clipped input rows/columns [y0, y1) x [x0, x1)
};

inline window window_of(const tc_window_dims* d, int32_t oy, int32_t ox) {
    window w;
    w.y0 = oy * d->stride_h - d->pad_top;
    w.x0 = ox * d->stride_w - d->pad_left;
    w.y1 = w.y0 + d->k_h;
    w.x1 = w.x0 + d->k_w;
    if (w.y0 < 0) w.y0 = 0;
    if (w.x0 < 0) w.x0 = 0;
    if (w.y1 > d->in_h) w.y1 = d->in_h;
    if (w.x1 > d->in_w) w.x1 = d->in_w;
    return w;
}

}  // namespace

void tc_max_pool_f32_fwd(const tc_window_dims* d, const float* x, float* y) {
    const int32_t c_n = d->in_c;
    for (int32_t b = 0; b < d->batch; ++b)
        for (int32_t oy = 0; oy < d->out_h; ++oy)
            for (int32_t ox = 0; ox < d->out_w; ++ox) {
                const window w = window_of(d, oy, ox);
                float* yp = y + ((b * d->out_h + oy) * d->out_w + ox) * c_n;
                for (int32_t c = 0; c < c_n; ++c) yp[c] = -INFINITY;
                for (int32_t iy = w.y0; iy < w.y1; ++iy)
                    for (int32_t ix = w.x0; ix < w.x1; ++ix) {
                        const float* xp = x + ((b * d->in_h + iy) * d->in_w + ix) * c_n;
                        for (int32_t c = 0; c < c_n; ++c)
                            if (xp[c] > yp[c]) yp[c] = xp[c];
                    }
            }
}

void tc_max_pool_f32_bwd(const tc_window_dims* d, const float* x, const float* dy, float* dx) {
    const int32_t c_n = d->in_c;
    tc_f32_zero(dx, d->batch * d->in_h * d->in_w * c_n);
    for (int32_t b = 0; b < d->batch; ++b)
        for (int32_t oy = 0; oy < d->out_h; ++oy)
            for (int32_t ox = 0; ox < d->out_w; ++ox) {
                const window w = window_of(d, oy, ox);
                const float* dyp = dy + ((b * d->out_h + oy) * d->out_w + ox) * c_n;
                for (int32_t c = 0; c < c_n; ++c) {
                    float best = -INFINITY;
                    int32_t at = -1;
                    for (int32_t iy = w.y0; iy < w.y1; ++iy)
                        for (int32_t ix = w.x0; ix < w.x1; ++ix) {
                            const int32_t i = ((b * d->in_h + iy) * d->in_w + ix) * c_n + c;
                            if (at < 0 || x[i] > best) {
                                best = x[i];
                                at = i;
                            }
                        }
                    if (at >= 0) dx[at] += dyp[c];
                }
            }
}

void tc_avg_pool_f32_fwd(const tc_window_dims* d, const float* x, float* y) {
    const int32_t c_n = d->in_c;
    for (int32_t b = 0; b < d->batch; ++b)
        for (int32_t oy = 0; oy < d->out_h; ++oy)
            for (int32_t ox = 0; ox < d->out_w; ++ox) {
                const window w = window_of(d, oy, ox);
                const float count = (float)((w.y1 - w.y0) * (w.x1 - w.x0));
                float* yp = y + ((b * d->out_h + oy) * d->out_w + ox) * c_n;
                for (int32_t c = 0; c < c_n; ++c) yp[c] = 0.0f;
                for (int32_t iy = w.y0; iy < w.y1; ++iy)
                    for (int32_t ix = w.x0; ix < w.x1; ++ix) {
                        const float* xp = x + ((b * d->in_h + iy) * d->in_w + ix) * c_n;
                        for (int32_t c = 0; c < c_n; ++c) yp[c] += xp[c];
                    }
                for (int32_t c = 0; c < c_n; ++c) yp[c] = yp[c] / count;
            }
}

void tc_avg_pool_f32_bwd(const tc_window_dims* d, const float* dy, float* dx) {
    const int32_t c_n = d->in_c;
    tc_f32_zero(dx, d->batch * d->in_h * d->in_w * c_n);
    for (int32_t b = 0; b < d->batch; ++b)
        for (int32_t oy = 0; oy < d->out_h; ++oy)
            for (int32_t ox = 0; ox < d->out_w; ++ox) {
                const window w = window_of(d, oy, ox);
                const float count = (float)((w.y1 - w.y0) * (w.x1 - w.x0));
                const float* dyp = dy + ((b * d->out_h + oy) * d->out_w + ox) * c_n;
                for (int32_t iy = w.y0; iy < w.y1; ++iy)
                    for (int32_t ix = w.x0; ix < w.x1; ++ix) {
                        float* dxp = dx + ((b * d->in_h + iy) * d->in_w + ix) * c_n;
                        for (int32_t c = 0; c < c_n; ++c) dxp[c] += dyp[c] / count;
                    }
            }
}
