// Float32 max and average pooling, forward and backward (NHWC, out_c == in_c).
// Average pooling divides by the number of window elements inside the input (TensorFlow's
// SAME-padding rule); max pooling ignores the padding.
#pragma once
#include "tc_kernels_common.h"

void tc_max_pool_f32_fwd(const tc_window_dims* d, const float* x, float* y);
// dx is overwritten; the gradient goes to the first maximum of each window (scan order ky, kx).
void tc_max_pool_f32_bwd(const tc_window_dims* d, const float* x, const float* dy, float* dx);

void tc_avg_pool_f32_fwd(const tc_window_dims* d, const float* x, float* y);
void tc_avg_pool_f32_bwd(const tc_window_dims* d, const float* dy, float* dx);
