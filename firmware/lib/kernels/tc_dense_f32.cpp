#include "tc_dense_f32.h"

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
            float acc[4] = {bias[o], bias[o + 1], bias[o + 2], bias[o + 3]};
            tc_f32_dot4(xb, w + o * in, in, in, acc);
            yb[o] = acc[0];
            yb[o + 1] = acc[1];
            yb[o + 2] = acc[2];
            yb[o + 3] = acc[3];
        }
        for (; o < out; ++o) yb[o] = tc_f32_dot1(xb, w + o * in, in, bias[o]);
    }
}

void tc_dense_f32_bwd(const tc_dense_dims* d, const float* x, const float* w, const float* dy,
                      float* dx, float* dw, float* db) {
    const int32_t in = d->in;
    const int32_t out = d->out;
    tc_f32_zero(dw, out * in);
    if (db) tc_f32_zero(db, out);
    for (int32_t b = 0; b < d->batch; ++b) {
        const float* xb = x + b * in;
        const float* dyb = dy + b * out;
        float* dxb = dx ? dx + b * in : nullptr;
        if (dxb) tc_f32_zero(dxb, in);
        int32_t o = 0;
        for (; o + 4 <= out; o += 4) {
            const float a[4] = {dyb[o], dyb[o + 1], dyb[o + 2], dyb[o + 3]};
            if (dxb) tc_f32_axpy4(dxb, a, w + o * in, in, in);
            tc_f32_ger4(dw + o * in, in, a, xb, in);
        }
        for (; o < out; ++o) {
            if (dxb) tc_f32_axpy1(dxb, dyb[o], w + o * in, in);
            tc_f32_axpy1(dw + o * in, dyb[o], xb, in);
        }
        if (db)
            for (o = 0; o < out; ++o) db[o] += dyb[o];
    }
}
