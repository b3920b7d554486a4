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

inline bool is_2x2(const window& w) { return w.y1 - w.y0 == 2 && w.x1 - w.x0 == 2; }

}  // namespace

void tc_max_pool_f32_fwd(const tc_window_dims* d, const float* x, float* y) {
    const int32_t c_n = d->in_c;
    for (int32_t b = 0; b < d->batch; ++b)
        for (int32_t oy = 0; oy < d->out_h; ++oy)
            for (int32_t ox = 0; ox < d->out_w; ++ox) {
                const window w = window_of(d, oy, ox);
                float* yp = y + ((b * d->out_h + oy) * d->out_w + ox) * c_n;
                if (is_2x2(w)) {
                    // The common 2x2 window: its four pixels' channels side by side, the
                    // maximum kept in a register (the same comparisons in the same order).
                    const float* p0 = x + ((b * d->in_h + w.y0) * d->in_w + w.x0) * c_n;
                    const float* p1 = p0 + c_n;
                    const float* p2 = p0 + d->in_w * c_n;
                    const float* p3 = p2 + c_n;
                    for (int32_t c = 0; c < c_n; ++c) {
                        float m = -INFINITY;
                        if (p0[c] > m) m = p0[c];
                        if (p1[c] > m) m = p1[c];
                        if (p2[c] > m) m = p2[c];
                        if (p3[c] > m) m = p3[c];
                        yp[c] = m;
                    }
                    continue;
                }
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
                if (is_2x2(w)) {
                    // The common 2x2 window: the first maximum in scan order found with the
                    // pixels' channels side by side instead of an index computed per element.
                    const int32_t i0 = ((b * d->in_h + w.y0) * d->in_w + w.x0) * c_n;
                    const int32_t i1 = i0 + c_n, i2 = i0 + d->in_w * c_n, i3 = i2 + c_n;
                    for (int32_t c = 0; c < c_n; ++c) {
                        float best = x[i0 + c];
                        int32_t at = i0 + c;
                        if (x[i1 + c] > best) {
                            best = x[i1 + c];
                            at = i1 + c;
                        }
                        if (x[i2 + c] > best) {
                            best = x[i2 + c];
                            at = i2 + c;
                        }
                        if (x[i3 + c] > best) at = i3 + c;
                        dx[at] += dyp[c];
                    }
                    continue;
                }
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
