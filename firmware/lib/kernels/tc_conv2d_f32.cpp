#include "tc_conv2d_f32.h"

#include <math.h>

// In NHWC, the input pixels (iy, kx0..kx1-1) of one kernel row are contiguous together with
// their channels, and so are the matching weights [o][ky][kx0..kx1-1][:]. Every kernel row of
// an output pixel is therefore one contiguous dot product of length (kx1 - kx0) * in_c, which
// is what the blocked inner loops want. Two cases have paths of their own, because their rows
// are too short for the loops' set-up: one input channel with a 3x3 filter (an image model's
// first layer), and few input channels (windows copied into one run, see gathers()).
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

// The backward pass of a one-channel 3x3 layer that needs an input gradient (not a first
// layer): pixel by pixel, and for a pixel whose window lies inside the input the nine inputs
// stay in registers while every filter runs its taps in the blocked loops' order (row by row,
// left to right), so the results are bit for bit the same; pixels at the border take the
// general path.
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

// The output columns whose 3-column window lies inside the input: [lo, hi).
struct column_range {
    int32_t lo, hi;
};

inline column_range full_columns(const tc_window_dims* d) {
    column_range r;
    r.lo = (d->pad_left + d->stride_w - 1) / d->stride_w;
    const int32_t last = d->in_w - 3 + d->pad_left;  // x0 + 3 <= in_w  <=>  ox * stride <= last
    r.hi = last < 0 ? 0 : last / d->stride_w + 1;
    if (r.hi > d->out_w) r.hi = d->out_w;
    if (r.lo > r.hi) r.lo = r.hi;
    return r;
}

// One input channel, 3x3 (an image model's first layer): a kernel row is 3 taps, far too short
// for the blocked loops, whose set-up per call would cost more than the taps. These paths run
// filter by filter instead of pixel by pixel, F filters per pass over the image: the F x 9
// weights (forward) or gradients (weight gradient) stay in registers while the window slides.
// A tap outside the input reads as zero, which is the simulation's zero-padded arithmetic (a
// missing tap adds fmaf(0, w, acc) = acc). Whether each of the window's three rows lies inside
// the input is fixed for a whole output row (template arguments R0..R2: no test per pixel);
// whether each column does is tested only at the left and right border.

// The nine inputs of the window whose top-left input is at offset i0 (row r at i0 + r * in_w);
// R0..R2 say which rows, c0v..c2v which columns lie inside the input (a tap outside is zero).
#define TC_WINDOW9(xb, i0, in_w, c0v, c1v, c2v)                                              \
    const float t0 = R0 && (c0v) ? (xb)[(i0)] : 0.0f;                                        \
    const float t1 = R0 && (c1v) ? (xb)[(i0) + 1] : 0.0f;                                    \
    const float t2 = R0 && (c2v) ? (xb)[(i0) + 2] : 0.0f;                                    \
    const float t3 = R1 && (c0v) ? (xb)[(i0) + (in_w)] : 0.0f;                               \
    const float t4 = R1 && (c1v) ? (xb)[(i0) + (in_w) + 1] : 0.0f;                           \
    const float t5 = R1 && (c2v) ? (xb)[(i0) + (in_w) + 2] : 0.0f;                           \
    const float t6 = R2 && (c0v) ? (xb)[(i0) + 2 * (in_w)] : 0.0f;                           \
    const float t7 = R2 && (c1v) ? (xb)[(i0) + 2 * (in_w) + 1] : 0.0f;                       \
    const float t8 = R2 && (c2v) ? (xb)[(i0) + 2 * (in_w) + 2] : 0.0f

// Runs BODY for every output pixel of the row whose window's top-left input is (y0, .), with
// t0..t8 its window and ox its column: the border columns with each column tested, the columns
// in between as a loop of their own.
#define TC_ROW9_BORDER(BODY)                                                                 \
    {                                                                                        \
        const int32_t x0 = ox * d->stride_w - d->pad_left;                                   \
        const int32_t i0 = y0 * d->in_w + x0;                                                \
        const bool c0v = x0 >= 0 && x0 < d->in_w, c1v = x0 + 1 >= 0 && x0 + 1 < d->in_w,     \
                   c2v = x0 + 2 >= 0 && x0 + 2 < d->in_w;                                    \
        TC_WINDOW9(xb, i0, d->in_w, c0v, c1v, c2v);                                          \
        BODY                                                                                 \
    }
#define TC_ROW9(BODY)                                                                        \
    int32_t ox = 0;                                                                          \
    for (; ox < full.lo; ++ox) TC_ROW9_BORDER(BODY)                                          \
    for (int32_t i0 = y0 * d->in_w + ox * d->stride_w - d->pad_left; ox < full.hi;           \
         ++ox, i0 += d->stride_w) {                                                          \
        TC_WINDOW9(xb, i0, d->in_w, true, true, true);                                       \
        BODY                                                                                 \
    }                                                                                        \
    for (; ox < d->out_w; ++ox) TC_ROW9_BORDER(BODY)

// y[f] = bias, then fmaf over the nine taps row by row (the blocked loops' order).
#define TC_CONV9_FWD                                                                         \
    _Pragma("GCC unroll 4") for (int f = 0; f < F; ++f) {                                    \
        float acc = bk[f];                                                                   \
        acc = fmaf(t0, wk[f][0], acc);                                                       \
        acc = fmaf(t1, wk[f][1], acc);                                                       \
        acc = fmaf(t2, wk[f][2], acc);                                                       \
        acc = fmaf(t3, wk[f][3], acc);                                                       \
        acc = fmaf(t4, wk[f][4], acc);                                                       \
        acc = fmaf(t5, wk[f][5], acc);                                                       \
        acc = fmaf(t6, wk[f][6], acc);                                                       \
        acc = fmaf(t7, wk[f][7], acc);                                                       \
        yrow[ox * d->out_c + f] = fmaf(t8, wk[f][8], acc);                                   \
    }

// g[f][k] = fmaf(dy[f], t_k, g[f][k]); gb[f] += dy[f].
#define TC_CONV9_DW                                                                          \
    _Pragma("GCC unroll 4") for (int f = 0; f < F; ++f) {                                    \
        const float a = dyrow[ox * d->out_c + f];                                            \
        g[f][0] = fmaf(a, t0, g[f][0]);                                                      \
        g[f][1] = fmaf(a, t1, g[f][1]);                                                      \
        g[f][2] = fmaf(a, t2, g[f][2]);                                                      \
        g[f][3] = fmaf(a, t3, g[f][3]);                                                      \
        g[f][4] = fmaf(a, t4, g[f][4]);                                                      \
        g[f][5] = fmaf(a, t5, g[f][5]);                                                      \
        g[f][6] = fmaf(a, t6, g[f][6]);                                                      \
        g[f][7] = fmaf(a, t7, g[f][7]);                                                      \
        g[f][8] = fmaf(a, t8, g[f][8]);                                                      \
        gb[f] += a;                                                                          \
    }

template <int F, bool R0, bool R1, bool R2>
void conv_1ch_3x3_fwd_row(const tc_window_dims* d, const column_range& full, const float* xb,
                          int32_t y0, const float (&w_in)[F][9], const float (&b_in)[F],
                          float* yrow) {
    // Local copies, so that the compiler keeps them in registers over the row.
    float wk[F][9], bk[F];
    for (int f = 0; f < F; ++f) {
        bk[f] = b_in[f];
        for (int k = 0; k < 9; ++k) wk[f][k] = w_in[f][k];
    }
    TC_ROW9(TC_CONV9_FWD)
}

template <int F, bool R0, bool R1, bool R2>
void conv_1ch_3x3_dw_row(const tc_window_dims* d, const column_range& full, const float* xb,
                         int32_t y0, const float* dyrow, float (&g_io)[F][9], float (&gb_io)[F]) {
    // Local copies, so that the compiler keeps them in registers over the row.
    float g[F][9], gb[F];
    for (int f = 0; f < F; ++f) {
        gb[f] = gb_io[f];
        for (int k = 0; k < 9; ++k) g[f][k] = g_io[f][k];
    }
    TC_ROW9(TC_CONV9_DW)
    for (int f = 0; f < F; ++f) {
        gb_io[f] = gb[f];
        for (int k = 0; k < 9; ++k) g_io[f][k] = g[f][k];
    }
}

// Which of the window's rows y0, y0 + 1, y0 + 2 lie inside the input, as a 3-bit mask.
inline int row_mask(int32_t y0, int32_t in_h) {
    return (y0 >= 0 && y0 < in_h ? 1 : 0) | (y0 + 1 >= 0 && y0 + 1 < in_h ? 2 : 0) |
           (y0 + 2 >= 0 && y0 + 2 < in_h ? 4 : 0);
}

// Calls ROW<F, R0, R1, R2>(args...) for the row mask `mask`.
#define TC_DISPATCH_ROWS(ROW, mask, ...)                           \
    switch (mask) {                                                \
        case 7: ROW<F, true, true, true>(__VA_ARGS__); break;      \
        case 6: ROW<F, false, true, true>(__VA_ARGS__); break;     \
        case 3: ROW<F, true, true, false>(__VA_ARGS__); break;     \
        case 1: ROW<F, true, false, false>(__VA_ARGS__); break;    \
        case 2: ROW<F, false, true, false>(__VA_ARGS__); break;    \
        case 4: ROW<F, false, false, true>(__VA_ARGS__); break;    \
        case 5: ROW<F, true, false, true>(__VA_ARGS__); break;     \
        default: ROW<F, false, false, false>(__VA_ARGS__); break;  \
    }

template <int F>
void conv_1ch_3x3_fwd_block(const tc_window_dims* d, const float* xb, const float* w,
                            const float* bias, float* yb) {
    const column_range full = full_columns(d);
    float wk[F][9], bk[F];
    for (int f = 0; f < F; ++f) {
        bk[f] = bias[f];
        for (int k = 0; k < 9; ++k) wk[f][k] = w[9 * f + k];
    }
    for (int32_t oy = 0; oy < d->out_h; ++oy) {
        const int32_t y0 = oy * d->stride_h - d->pad_top;
        float* yrow = yb + oy * d->out_w * d->out_c;
        TC_DISPATCH_ROWS(conv_1ch_3x3_fwd_row, row_mask(y0, d->in_h), d, full, xb, y0, wk, bk, yrow)
    }
}

void conv_1ch_3x3_fwd(const tc_window_dims* d, const float* x, const float* w, const float* bias,
                      float* y) {
    const int32_t plane_in = d->in_h * d->in_w, plane_out = d->out_h * d->out_w * d->out_c;
    for (int32_t b = 0; b < d->batch; ++b) {
        int32_t o = 0;
        for (; o + 2 <= d->out_c; o += 2)
            conv_1ch_3x3_fwd_block<2>(d, x + b * plane_in, w + 9 * o, bias + o,
                                      y + b * plane_out + o);
        if (o < d->out_c)
            conv_1ch_3x3_fwd_block<1>(d, x + b * plane_in, w + 9 * o, bias + o,
                                      y + b * plane_out + o);
    }
}

// Weight and bias gradients (no input gradient: the image model's first layer): each gradient
// is fmaf(dy, x, dw) pixel after pixel in raster order over the batch, from dw (accumulate) or
// zero, and db += dy in the same order.
template <int F>
void conv_1ch_3x3_dw_block(const tc_window_dims* d, const float* x, const float* dy, float* dw,
                           float* db, int32_t accumulate) {
    const column_range full = full_columns(d);
    float g[F][9], gb[F];
    for (int f = 0; f < F; ++f) {
        gb[f] = accumulate && db ? db[f] : 0.0f;
        for (int k = 0; k < 9; ++k) g[f][k] = accumulate ? dw[9 * f + k] : 0.0f;
    }
    for (int32_t b = 0; b < d->batch; ++b) {
        const float* xb = x + b * d->in_h * d->in_w;
        for (int32_t oy = 0; oy < d->out_h; ++oy) {
            const int32_t y0 = oy * d->stride_h - d->pad_top;
            const float* dyrow = dy + (b * d->out_h + oy) * d->out_w * d->out_c;
            TC_DISPATCH_ROWS(conv_1ch_3x3_dw_row, row_mask(y0, d->in_h), d, full, xb, y0, dyrow,
                             g, gb)
        }
    }
    for (int f = 0; f < F; ++f) {
        if (db) db[f] = gb[f];
        for (int k = 0; k < 9; ++k) dw[9 * f + k] = g[f][k];
    }
}

void conv_1ch_3x3_dw(const tc_window_dims* d, const float* x, const float* dy, float* dw, float* db,
                     int32_t accumulate) {
    int32_t o = 0;
    for (; o + 2 <= d->out_c; o += 2)
        conv_1ch_3x3_dw_block<2>(d, x, dy + o, dw + 9 * o, db ? db + o : nullptr, accumulate);
    if (o < d->out_c)
        conv_1ch_3x3_dw_block<1>(d, x, dy + o, dw + 9 * o, db ? db + o : nullptr, accumulate);
}

// Few input channels (a kernel row shorter than two blocks of eight): the per-row calls of the
// blocked loops would cost more than their taps. So a window inside the input is first copied
// (eight floats per load and store) into one contiguous run of k_h * k_w * in_c floats, which
// matches a filter's [kh][kw][in] layout; then each block of four filters is one call over the
// whole window, with the same fmaf chain per output as row after row. A window at the border
// keeps the per-row calls over its valid taps: padding it with zeros costs more than its rows'
// calls (measured on the 4x4 and 7x7 maps of the demo models' second layer). The copy lives on
// the stack, so it is bounded.
constexpr int32_t kGatherRowMax = 16;     // kernel rows of fewer floats are gathered
constexpr int32_t kGatherFloats = 96;     // 384 bytes of stack each (two in the backward pass)

inline bool gathers(const tc_window_dims* d) {
    const int32_t row = d->k_w * d->in_c;
    return d->k_h > 1 && row < kGatherRowMax && d->k_h * row <= kGatherFloats;
}

inline bool inside(const tc_window_dims* d, const window_span& s) {
    return s.ky0 == 0 && s.ky1 == d->k_h && s.kx0 == 0 && s.kx1 == d->k_w;
}

// Copies the window (inside the input) whose top-left input is xs into win, row after row.
inline void gather_window(float* win, const float* xs, const tc_window_dims* d) {
    const int32_t row = d->k_w * d->in_c, x_row = d->in_w * d->in_c;
    for (int32_t ky = 0; ky < d->k_h; ++ky) tc_f32_copy(win + ky * row, xs + ky * x_row, row);
}

// The inverse, for an input gradient.
inline void scatter_window(float* xs, const float* win, const tc_window_dims* d) {
    const int32_t row = d->k_w * d->in_c, x_row = d->in_w * d->in_c;
    for (int32_t ky = 0; ky < d->k_h; ++ky) tc_f32_copy(xs + ky * x_row, win + ky * row, row);
}

inline bool single_channel_3x3(const tc_window_dims* d) {
    return d->in_c == 1 && d->k_h == 3 && d->k_w == 3;
}

}  // namespace

void tc_conv2d_f32_fwd(const tc_window_dims* d, const float* x, const float* w, const float* bias,
                       float* y) {
    const int32_t in_c = d->in_c;
    const int32_t out_c = d->out_c;
    const int32_t w_row = d->k_w * in_c;            // one kernel row of one filter
    const int32_t w_filter = d->k_h * w_row;        // one filter
    const int32_t x_row = d->in_w * in_c;
    if (single_channel_3x3(d)) {
        conv_1ch_3x3_fwd(d, x, w, bias, y);
        return;
    }
    const bool gather = gathers(d);
    float win[kGatherFloats];
    for (int32_t b = 0; b < d->batch; ++b) {
        const float* xb = x + b * d->in_h * x_row;
        for (int32_t oy = 0; oy < d->out_h; ++oy) {
            for (int32_t ox = 0; ox < d->out_w; ++ox) {
                const window_span s = span_of(d, oy, ox);
                const int32_t n = (s.kx1 - s.kx0) * in_c;
                const int32_t w_off = s.kx0 * in_c;
                float* yp = y + ((b * d->out_h + oy) * d->out_w + ox) * out_c;
                int32_t o = 0;
                if (gather && inside(d, s)) {
                    gather_window(win, xb + s.iy0 * x_row + s.ix0 * in_c, d);
                    for (; o + 4 <= out_c; o += 4) {
                        float acc[4] = {bias[o], bias[o + 1], bias[o + 2], bias[o + 3]};
                        tc_f32_dot4(win, w + o * w_filter, w_filter, w_filter, acc);
                        yp[o] = acc[0];
                        yp[o + 1] = acc[1];
                        yp[o + 2] = acc[2];
                        yp[o + 3] = acc[3];
                    }
                    for (; o < out_c; ++o)
                        yp[o] = tc_f32_dot1(win, w + o * w_filter, w_filter, bias[o]);
                    continue;
                }
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
    if (!dx && single_channel_3x3(d)) {
        conv_1ch_3x3_dw(d, x, dy, dw, db, accumulate);
        return;
    }
    if (!accumulate) {
        tc_f32_zero(dw, out_c * w_filter);
        if (db) tc_f32_zero(db, out_c);
    }
    if (dx) tc_f32_zero(dx, d->batch * d->in_h * x_row);
    const bool gather = gathers(d);
    float win[kGatherFloats], dwin[kGatherFloats];
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
                if (gather && inside(d, s)) {
                    // The window's inputs and (with dx) its input gradient so far, each one
                    // contiguous run; every filter block then takes one call per run. Per
                    // element the order is unchanged: dx over the filters in order, dw per pixel.
                    const int32_t x_off = s.iy0 * x_row + s.ix0 * in_c;
                    gather_window(win, xb + x_off, d);
                    if (dxb) gather_window(dwin, dxb + x_off, d);
                    for (; o + 4 <= out_c; o += 4) {
                        const float a[4] = {dyp[o], dyp[o + 1], dyp[o + 2], dyp[o + 3]};
                        if (dxb) tc_f32_axpy4(dwin, a, w + o * w_filter, w_filter, w_filter);
                        tc_f32_ger4(dw + o * w_filter, w_filter, a, win, w_filter);
                    }
                    for (; o < out_c; ++o) {
                        if (dxb) tc_f32_axpy1(dwin, dyp[o], w + o * w_filter, w_filter);
                        tc_f32_axpy1(dw + o * w_filter, dyp[o], win, w_filter);
                    }
                    if (dxb) scatter_window(dxb + x_off, dwin, d);
                } else {
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
                }
                if (db)
                    for (o = 0; o < out_c; ++o) db[o] += dyp[o];
            }
        }
    }
}
