// C entry points over the firmware kernels for the host tests (loaded with ctypes). Not part of
// the firmware build: geometry arrives as plain integers and is turned into the kernels' structs.
#include "tc_conv2d_f32.h"
#include "tc_conv2d_s8.h"
#include "tc_dense_f32.h"
#include "tc_depthwise_conv2d_f32.h"
#include "tc_depthwise_conv2d_s8.h"
#include "tc_fully_connected_s8.h"
#include "tc_math.h"
#include "tc_pool_f32.h"
#include "tc_mean_s8.h"
#include "tc_pool_s8.h"
#include "tc_quantize_s8.h"
#include "tc_relu_f32.h"
#include "tc_sgd_f32.h"
#include "tc_softmax_ce_f32.h"

#include <vector>

namespace {

// geo: batch, in_h, in_w, in_c, out_c, k_h, k_w, stride_h, stride_w, padding, depth_multiplier
bool dims_of(const int32_t* g, tc_window_dims* d) {
    return tc_window_dims_init(d, g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7], g[8],
                               (tc_padding)g[9], g[10]);
}

tc_s8_quant quant_of(const int32_t* qp, const int32_t* mult, const int32_t* shift) {
    tc_s8_quant q;
    q.input_offset = qp[0];
    q.output_offset = qp[1];
    q.act_min = qp[2];
    q.act_max = qp[3];
    q.per_channel = qp[4];
    q.multiplier = mult;
    q.shift = shift;
    return q;
}

}  // namespace

extern "C" {

// out: out_h, out_w, pad_top, pad_left. Returns 0, or -1 when the geometry is invalid.
int tck_window_dims(const int32_t* g, int32_t* out) {
    tc_window_dims d;
    const bool ok = dims_of(g, &d);
    out[0] = d.out_h;
    out[1] = d.out_w;
    out[2] = d.pad_top;
    out[3] = d.pad_left;
    return ok ? 0 : -1;
}

int tck_conv2d_f32_fwd(const int32_t* g, const float* x, const float* w, const float* b,
                       float* y) {
    tc_window_dims d;
    if (!dims_of(g, &d)) return -1;
    tc_conv2d_f32_fwd(&d, x, w, b, y);
    return 0;
}

int tck_conv2d_f32_bwd(const int32_t* g, const float* x, const float* w, const float* dy,
                       float* dx, float* dw, float* db) {
    tc_window_dims d;
    if (!dims_of(g, &d)) return -1;
    tc_conv2d_f32_bwd(&d, x, w, dy, dx, dw, db);
    return 0;
}

int tck_depthwise_f32_fwd(const int32_t* g, const float* x, const float* w, const float* b,
                          float* y) {
    tc_window_dims d;
    if (!dims_of(g, &d)) return -1;
    tc_depthwise_conv2d_f32_fwd(&d, x, w, b, y);
    return 0;
}

int tck_depthwise_f32_bwd(const int32_t* g, const float* x, const float* w, const float* dy,
                          float* dx, float* dw, float* db) {
    tc_window_dims d;
    if (!dims_of(g, &d)) return -1;
    tc_depthwise_conv2d_f32_bwd(&d, x, w, dy, dx, dw, db);
    return 0;
}

int tck_pool_f32(int kind, int backward, const int32_t* g, const float* x, const float* dy,
                 float* out) {
    tc_window_dims d;
    if (!dims_of(g, &d)) return -1;
    if (kind == 0 && !backward) tc_max_pool_f32_fwd(&d, x, out);
    if (kind == 0 && backward) tc_max_pool_f32_bwd(&d, x, dy, out);
    if (kind == 1 && !backward) tc_avg_pool_f32_fwd(&d, x, out);
    if (kind == 1 && backward) tc_avg_pool_f32_bwd(&d, dy, out);
    return 0;
}

void tck_dense_f32_fwd(int32_t batch, int32_t in, int32_t out, const float* x, const float* w,
                       const float* b, float* y) {
    const tc_dense_dims d = {batch, in, out};
    tc_dense_f32_fwd(&d, x, w, b, y);
}

void tck_dense_f32_bwd(int32_t batch, int32_t in, int32_t out, const float* x, const float* w,
                       const float* dy, float* dx, float* dw, float* db) {
    const tc_dense_dims d = {batch, in, out};
    tc_dense_f32_bwd(&d, x, w, dy, dx, dw, db);
}

void tck_relu_f32(int six, int backward, const float* x, const float* dy, float* out, int32_t n) {
    if (six) {
        if (backward) tc_relu6_f32_bwd(x, dy, out, n);
        else tc_relu6_f32_fwd(x, out, n);
    } else {
        if (backward) tc_relu_f32_bwd(x, dy, out, n);
        else tc_relu_f32_fwd(x, out, n);
    }
}

float tck_softmax_ce_f32(const float* logits, const int32_t* labels, int32_t batch,
                         int32_t classes, const uint8_t* mask, int32_t num_valid, float* dlogits) {
    return tc_softmax_ce_f32(logits, labels, batch, classes, mask, num_valid, dlogits);
}

void tck_sgd_momentum_f32(float* w, float* v, const float* g, int32_t n, float lr, float m) {
    tc_sgd_momentum_f32(w, v, g, n, lr, m);
}

void tck_sgd_momentum_fma_f32(float* w, float* v, const float* g, int32_t n, float lr, float m,
                              float scale) {
    tc_sgd_momentum_fma_f32(w, v, g, n, lr, m, scale);
}

void tck_sgd_momentum_outer_f32(float* w, float* v, int32_t rows, int32_t cols, const float* dy,
                                const float* x, float lr, float m, float scale) {
    tc_sgd_momentum_outer_f32(w, v, rows, cols, dy, x, lr, m, scale);
}

float tck_f32_sum_squares(const float* p, int32_t n, float acc) {
    return tc_f32_sum_squares(p, n, acc);
}

void tck_dense_f32_bwd_acc(int32_t batch, int32_t in, int32_t out, const float* x, const float* w,
                           const float* dy, float* dx, float* dw, float* db, int32_t accumulate) {
    const tc_dense_dims d = {batch, in, out};
    tc_dense_f32_bwd_acc(&d, x, w, dy, dx, dw, db, accumulate);
}

float tck_softmax_ce_row_f32(const float* z, int32_t label, int32_t classes, const uint8_t* mask,
                             int32_t num_valid, float scale, float* dz) {
    return tc_softmax_ce_row_f32(z, label, classes, mask, num_valid, scale, dz);
}

// grads: `count` tensors stored back to back in `flat`, sizes[t] elements each.
float tck_clip_grad_global_norm_f32(float* flat, const int32_t* sizes, int32_t count,
                                    float max_norm) {
    std::vector<float*> ptrs;
    float* p = flat;
    for (int32_t t = 0; t < count; ++t) {
        ptrs.push_back(p);
        p += sizes[t];
    }
    return tc_clip_grad_global_norm_f32(ptrs.data(), sizes, count, max_norm);
}

void tck_expf(const float* x, float* y, int32_t n) {
    for (int32_t i = 0; i < n; ++i) y[i] = tc_expf(x[i]);
}

void tck_logf(const float* x, float* y, int32_t n) {
    for (int32_t i = 0; i < n; ++i) y[i] = tc_logf(x[i]);
}

// The scratch the conv kernel wants for an output-channel block: the exporter mirrors it.
int32_t tck_conv2d_s8_scratch_bytes(const int32_t* g, int32_t out_block) {
    tc_window_dims d;
    if (!dims_of(g, &d)) return -1;
    return out_block == 0 ? tc_conv2d_s8_min_scratch_bytes(&d) : tc_conv2d_s8_scratch_bytes(&d, out_block);
}

// qp: input_offset, output_offset, act_min, act_max, per_channel
int tck_conv2d_s8(const int32_t* g, const int32_t* qp, const int32_t* mult, const int32_t* shift,
                  const int8_t* x, const int8_t* w, const int32_t* b, int8_t* y,
                  int32_t out_block) {
    tc_window_dims d;
    if (!dims_of(g, &d)) return -1;
    const tc_s8_quant q = quant_of(qp, mult, shift);
    // out_block 0: the least scratch the kernel accepts (its slower two-pixel layout).
    const int32_t bytes = out_block == 0 ? tc_conv2d_s8_min_scratch_bytes(&d)
                                         : tc_conv2d_s8_scratch_bytes(&d, out_block);
    std::vector<int32_t> scratch((bytes + 3) / 4);
    return tc_conv2d_s8(&d, &q, x, w, b, y, scratch.data(), bytes) ? 0 : -2;
}

int tck_depthwise_s8(const int32_t* g, const int32_t* qp, const int32_t* mult,
                     const int32_t* shift, const int8_t* x, const int8_t* w, const int32_t* b,
                     int8_t* y) {
    tc_window_dims d;
    if (!dims_of(g, &d)) return -1;
    const tc_s8_quant q = quant_of(qp, mult, shift);
    std::vector<int32_t> acc(d.in_c * d.depth_multiplier);
    tc_depthwise_conv2d_s8(&d, &q, x, w, b, y, acc.data());
    return 0;
}

void tck_fully_connected_s8(int32_t batch, int32_t in, int32_t out, const int32_t* qp,
                            const int32_t* mult, const int32_t* shift, const int8_t* x,
                            const int8_t* w, const int32_t* b, int8_t* y) {
    const tc_dense_dims d = {batch, in, out};
    const tc_s8_quant q = quant_of(qp, mult, shift);
    tc_fully_connected_s8(&d, &q, x, w, b, y);
}

int tck_pool_s8(int kind, const int32_t* g, int32_t act_min, int32_t act_max, const int8_t* x,
                int8_t* y) {
    tc_window_dims d;
    if (!dims_of(g, &d)) return -1;
    if (kind == 0) tc_max_pool_s8(&d, act_min, act_max, x, y);
    else tc_avg_pool_s8(&d, act_min, act_max, x, y);
    return 0;
}

// g: batch, in_h, in_w, c; qp as quant_of; one multiplier and shift.
void tck_mean_s8(const int32_t* g, const int32_t* qp, const int32_t* mult, const int32_t* shift,
                 const int8_t* x, int8_t* y) {
    const tc_mean_dims d = {g[0], g[1], g[2], g[3]};
    const tc_s8_quant q = quant_of(qp, mult, shift);
    tc_mean_s8(&d, &q, x, y);
}

void tck_mean_s8_count_multiplier(int32_t mult, int32_t shift, int32_t count, int32_t* out) {
    tc_mean_s8_count_multiplier(mult, shift, count, &out[0], &out[1]);
}

void tck_quantize_s8(const float* x, int8_t* q, int32_t n, float scale, int32_t zp) {
    tc_quantize_s8(x, q, n, scale, zp);
}

void tck_dequantize_s8(const int8_t* q, float* x, int32_t n, float scale, int32_t zp) {
    tc_dequantize_s8(q, x, n, scale, zp);
}

void tck_quantize_multiplier(double real, int32_t* mult, int32_t* shift) {
    tc_quantize_multiplier(real, mult, shift);
}

int32_t tck_multiply_by_quantized_multiplier(int32_t x, int32_t mult, int32_t shift) {
    return tc_multiply_by_quantized_multiplier(x, mult, shift);
}

int32_t tck_multiply_by_quantized_multiplier_single(int32_t x, int32_t mult, int32_t shift) {
    return tc_multiply_by_quantized_multiplier_single(x, mult, shift);
}

// The fully connected kernel's short path where it applies (shift < 0, |x| < 2^30), else its
// general path: what the kernel computes for one accumulator.
int32_t tck_fully_connected_requant(int32_t x, int32_t mult, int32_t shift) {
    if (shift < 0 && tc_requant_fast_fits(x))
        return tc_requant_single_fast(x, mult, -shift, 1 << (-shift - 1));
    return tc_multiply_by_quantized_multiplier_single(x, mult, shift);
}

int32_t tck_requant_channel_apply(int32_t x, int32_t mult, int32_t shift) {
    const tc_requant_channel r = tc_requant_channel_of(mult, shift);
    return tc_requant_channel_apply(x, &r);
}

}  // extern "C"
