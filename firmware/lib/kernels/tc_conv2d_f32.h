// Float32 2-D convolution, forward and backward.
// x [batch][in_h][in_w][in_c], w [out_c][k_h][k_w][in_c], b [out_c], y [batch][out_h][out_w][out_c].
#pragma once
#include "tc_kernels_common.h"

void tc_conv2d_f32_fwd(const tc_window_dims* d, const float* x, const float* w, const float* bias,
                       float* y);

// dx (skipped when null), dw and db (skipped when null) are overwritten.
void tc_conv2d_f32_bwd(const tc_window_dims* d, const float* x, const float* w, const float* dy,
                       float* dx, float* dw, float* db);

// The same with `accumulate` nonzero: dw and db are added to (dw = fmaf(dy, x, dw) per output
// pixel in raster order, db += dy), so a mini-batch's gradient accumulates sample by sample with
// no buffer for one sample's gradient; dx is overwritten as above.
void tc_conv2d_f32_bwd_acc(const tc_window_dims* d, const float* x, const float* w,
                           const float* dy, float* dx, float* dw, float* db, int32_t accumulate);
