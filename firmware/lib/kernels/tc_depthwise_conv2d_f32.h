// Float32 depthwise 2-D convolution, forward and backward.
// x [batch][in_h][in_w][in_c], w [k_h][k_w][in_c * mult], b [in_c * mult],
// y [batch][out_h][out_w][in_c * mult]; output channel oc = ic * mult + m.
#pragma once
#include "tc_kernels_common.h"

void tc_depthwise_conv2d_f32_fwd(const tc_window_dims* d, const float* x, const float* w,
                                 const float* bias, float* y);

// dx (skipped when null), dw and db (skipped when null) are overwritten.
void tc_depthwise_conv2d_f32_bwd(const tc_window_dims* d, const float* x, const float* w,
                                 const float* dy, float* dx, float* dw, float* db);

// The same with `accumulate` nonzero: dw and db are added to (per output pixel in raster order:
// db += dy, then dw = fmaf(dy, x, dw) per tap), dx is overwritten.
void tc_depthwise_conv2d_f32_bwd_acc(const tc_window_dims* d, const float* x, const float* w,
                                     const float* dy, float* dx, float* dw, float* db,
                                     int32_t accumulate);
