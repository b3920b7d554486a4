// Float32 ReLU and ReLU6, forward and backward (element-wise; in place allowed).
#pragma once
#include "tc_kernels_common.h"

void tc_relu_f32_fwd(const float* x, float* y, int32_t n);
// dx = dy where x > 0, else 0 (x may be the forward output y: same sign pattern).
void tc_relu_f32_bwd(const float* x, const float* dy, float* dx, int32_t n);
void tc_relu6_f32_fwd(const float* x, float* y, int32_t n);
// dx = dy where 0 < x < 6, else 0.
void tc_relu6_f32_bwd(const float* x, const float* dy, float* dx, int32_t n);
