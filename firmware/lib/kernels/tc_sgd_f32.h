// SGD with momentum and global-norm gradient clipping for the trainable float32 tail.
#pragma once
#include "tc_kernels_common.h"

// v = momentum * v + g;  w = w - lr * v   (element-wise, each product rounded separately so the
// result equals the same formula evaluated in float32 anywhere).
void tc_sgd_momentum_f32(float* w, float* v, const float* g, int32_t n, float lr, float momentum);

// Global L2 norm of several gradient tensors: sqrt(sum over tensors and elements of g^2).
float tc_grad_global_norm_f32(float* const* grads, const int32_t* sizes, int32_t count);

// When the global norm exceeds max_norm, scales every gradient by max_norm / norm.
// Returns the norm before clipping.
float tc_clip_grad_global_norm_f32(float* const* grads, const int32_t* sizes, int32_t count,
                                   float max_norm);
