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

// The same for gradients summed sample by sample (or micro-batch by micro-batch): with
// `accumulate` nonzero dw and db are added to (dw[o][i] = fmaf(dy[b][o], x[b][i], dw) for b
// increasing, db[o] += dy[b][o]); with 0 they are overwritten, the first row's products
// stored as they are (dw = dy * x, db = dy), so no buffer is ever cleared. dx as above.
void tc_dense_f32_bwd_acc(const tc_dense_dims* d, const float* x, const float* w,
                          const float* dy, float* dx, float* dw, float* db, int32_t accumulate);

// The input gradient alone: dx [batch][in] = dy . w (dx[b][i] = fmaf(dy[b][o], w[o][i], dx)
// for o increasing, from 0).
void tc_dense_f32_bwd_input(const tc_dense_dims* d, const float* w, const float* dy, float* dx);
