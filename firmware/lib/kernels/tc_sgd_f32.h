// SGD with momentum and global-norm gradient clipping for the trainable float32 layers.
//
// At small batches these loops, not the multiply-accumulates, decide a training step's cost, so
// they are written like the MAC kernels: blocks of eight or sixteen floats moved by one VLDM or
// VSTM, fused multiply-adds, no byte-wise memset. Every function has one fixed per-element
// operation order, identical in the portable (host) and the Cortex-M7 versions.
#pragma once
#include "tc_kernels_common.h"

// v = momentum * v + g;  w = w - lr * v   (element-wise, each product rounded separately so the
// result equals the same formula evaluated in float32 anywhere).
void tc_sgd_momentum_f32(float* w, float* v, const float* g, int32_t n, float lr, float momentum);

// The fused form, with the clipping factor folded in (one pass over the parameters instead of
// a scaling pass and an update pass):
//   g' = g * scale (skipped when scale == 1, which changes nothing);
//   v  = fmaf(momentum, v, g');  w = fmaf(-lr, v, w).
void tc_sgd_momentum_fma_f32(float* w, float* v, const float* g, int32_t n, float lr,
                             float momentum, float scale);

// The same update for a dense layer's weights at batch 1, where the weight gradient is the
// outer product dy x^T and need never be stored: w, v [rows][cols];
//   a = dy[r] * scale (skipped when scale == 1);  g = a * x[c];
//   v = fmaf(momentum, v, g);  w = fmaf(-lr, v, w).
void tc_sgd_momentum_outer_f32(float* w, float* v, int32_t rows, int32_t cols, const float* dy,
                               const float* x, float lr, float momentum, float scale);

// acc = fmaf(p[i], p[i], acc) for i = 0..n-1 in order; returns acc.
float tc_f32_sum_squares(const float* p, int32_t n, float acc);

// Global L2 norm of several gradient tensors: sqrt(sum over tensors and elements of g^2), the
// squares accumulated with fmaf in tensor order, each tensor in element order.
float tc_grad_global_norm_f32(float* const* grads, const int32_t* sizes, int32_t count);

// The clipping factor for a global norm: max_norm / norm when norm > max_norm > 0, else 1.
float tc_clip_factor_f32(float norm, float max_norm);

// When the global norm exceeds max_norm, scales every gradient by max_norm / norm.
// Returns the norm before clipping.
float tc_clip_grad_global_norm_f32(float* const* grads, const int32_t* sizes, int32_t count,
                                   float max_norm);
