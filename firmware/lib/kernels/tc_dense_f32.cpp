#include "tc_dense_f32.h"

#include <string.h>

void tc_dense_f32_fwd(const tc_dense_dims* d, const float* x, const float* w, const float* bias,
                      float* y) {
    const int32_t in = d->in;
    const int32_t out = d->out;
    for (int32_t b = 0; b < d->batch; ++b) {
        const float* xb = x + b * in;
        float* yb = y + b * out;
        int32_t o = 0;
        // Four outputs at a time: each input value is loaded once for four weight rows.
        for (; o + 4 <= out; o += 4) {
            // The outputs start as the bias and accumulate in place.
            memcpy(yb + o, bias + o, 4 * sizeof(float));
            tc_f32_dot4(xb, w + o * in, in, in, yb + o);
        }
        for (; o < out; ++o) yb[o] = tc_f32_dot1(xb, w + o * in, in, bias[o]);
    }
}

void tc_dense_f32_bwd_input(const tc_dense_dims* d, const float* w, const float* dy, float* dx) {
    const int32_t in = d->in;
    const int32_t out = d->out;
    for (int32_t b = 0; b < d->batch; ++b) {
        const float* dyb = dy + b * out;
        float* dxb = dx + b * in;
        tc_f32_zero(dxb, in);
        int32_t o = 0;
        for (; o + 4 <= out; o += 4) {
            const float a[4] = {dyb[o], dyb[o + 1], dyb[o + 2], dyb[o + 3]};
            tc_f32_axpy4(dxb, a, w + o * in, in, in);
        }
        for (; o < out; ++o) tc_f32_axpy1(dxb, dyb[o], w + o * in, in);
    }
}

void tc_dense_f32_bwd_acc(const tc_dense_dims* d, const float* x, const float* w,
                          const float* dy, float* dx, float* dw, float* db, int32_t accumulate) {
    const int32_t in = d->in;
    const int32_t out = d->out;
    if (dx) tc_dense_f32_bwd_input(d, w, dy, dx);
    for (int32_t b = 0; b < d->batch; ++b) {
        const float* xb = x + b * in;
        const float* dyb = dy + b * out;
        const bool set = b == 0 && !accumulate;
        int32_t o = 0;
        for (; o + 4 <= out; o += 4) {
            const float a[4] = {dyb[o], dyb[o + 1], dyb[o + 2], dyb[o + 3]};
            if (set)
                tc_f32_ger4_set(dw + o * in, in, a, xb, in);
            else
                tc_f32_ger4(dw + o * in, in, a, xb, in);
        }
        for (; o < out; ++o) {
            if (set)
                tc_f32_scale_set(dw + o * in, dyb[o], xb, in);
            else
                tc_f32_axpy1(dw + o * in, dyb[o], xb, in);
        }
        if (db) {
            if (set)
                for (o = 0; o < out; ++o) db[o] = dyb[o];
            else
                for (o = 0; o < out; ++o) db[o] += dyb[o];
        }
    }
}

void tc_dense_f32_bwd(const tc_dense_dims* d, const float* x, const float* w, const float* dy,
                      float* dx, float* dw, float* db) {
    tc_dense_f32_bwd_acc(d, x, w, dy, dx, dw, db, 0);
}
