#include "tc_relu_f32.h"

void tc_relu_f32_fwd(const float* x, float* y, int32_t n) {
    for (int32_t i = 0; i < n; ++i) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

void tc_relu_f32_bwd(const float* x, const float* dy, float* dx, int32_t n) {
    for (int32_t i = 0; i < n; ++i) dx[i] = x[i] > 0.0f ? dy[i] : 0.0f;
}

void tc_relu6_f32_fwd(const float* x, float* y, int32_t n) {
    for (int32_t i = 0; i < n; ++i) y[i] = x[i] > 0.0f ? (x[i] < 6.0f ? x[i] : 6.0f) : 0.0f;
}

void tc_relu6_f32_bwd(const float* x, const float* dy, float* dx, int32_t n) {
    for (int32_t i = 0; i < n; ++i) dx[i] = (x[i] > 0.0f && x[i] < 6.0f) ? dy[i] : 0.0f;
}
