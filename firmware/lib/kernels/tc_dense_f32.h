// Float32 dense (fully connected) layer, forward and backward.
// x [batch][in], w [out][in], b [out], y [batch][out].
#pragma once
#include "tc_kernels_common.h"

// y[b][o] = bias[o] + sum_i x[b][i] * w[o][i], accumulated with fmaf in input order.
void tc_dense_f32_fwd(const tc_dense_dims* d, const float* x, const float* w, const float* bias,
                      float* y);

// Gradients of the loss given dy = dL/dy [batch][out]:
//   dx [batch][in]  = dy . w        (skipped when dx is null, e.g. for the first trainable layer)
//   dw [out][in]    = sum_b dy^T . x (overwritten)
//   db [out]        = sum_b dy       (overwritten; skipped when null)
void tc_dense_f32_bwd(const tc_dense_dims* d, const float* x, const float* w, const float* dy,
                      float* dx, float* dw, float* db);
