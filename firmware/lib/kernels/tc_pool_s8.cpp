#include "tc_pool_s8.h"

namespace {

struct window {
    int32_t y0, y1, x0, x1;
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

inline int8_t clamp8(int32_t v, int32_t lo, int32_t hi) {
    return (int8_t)(v < lo ? lo : (v > hi ? hi : v));
}

}  // namespace

void tc_max_pool_s8(const tc_window_dims* d, int32_t act_min, int32_t act_max, const int8_t* x,
                    int8_t* y) {
    const int32_t c_n = d->in_c;
    for (int32_t b = 0; b < d->batch; ++b)
        for (int32_t oy = 0; oy < d->out_h; ++oy)
            for (int32_t ox = 0; ox < d->out_w; ++ox) {
                const window w = window_of(d, oy, ox);
                int8_t* yp = y + ((b * d->out_h + oy) * d->out_w + ox) * c_n;
                for (int32_t c = 0; c < c_n; ++c) {
                    int32_t m = -128;
                    for (int32_t iy = w.y0; iy < w.y1; ++iy)
                        for (int32_t ix = w.x0; ix < w.x1; ++ix) {
                            const int32_t v = x[((b * d->in_h + iy) * d->in_w + ix) * c_n + c];
                            if (v > m) m = v;
                        }
                    yp[c] = clamp8(m, act_min, act_max);
                }
            }
}

void tc_avg_pool_s8(const tc_window_dims* d, int32_t act_min, int32_t act_max, const int8_t* x,
                    int8_t* y) {
    const int32_t c_n = d->in_c;
    for (int32_t b = 0; b < d->batch; ++b)
        for (int32_t oy = 0; oy < d->out_h; ++oy)
            for (int32_t ox = 0; ox < d->out_w; ++ox) {
                const window w = window_of(d, oy, ox);
                const int32_t count = (w.y1 - w.y0) * (w.x1 - w.x0);
                int8_t* yp = y + ((b * d->out_h + oy) * d->out_w + ox) * c_n;
                for (int32_t c = 0; c < c_n; ++c) {
                    int32_t sum = 0;
                    for (int32_t iy = w.y0; iy < w.y1; ++iy)
                        for (int32_t ix = w.x0; ix < w.x1; ++ix)
                            sum += x[((b * d->in_h + iy) * d->in_w + ix) * c_n + c];
                    const int32_t avg =
                        sum > 0 ? (sum + count / 2) / count : (sum - count / 2) / count;
                    yp[c] = clamp8(avg, act_min, act_max);
                }
            }
}
