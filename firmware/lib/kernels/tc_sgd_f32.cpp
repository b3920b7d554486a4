#include "tc_sgd_f32.h"

void tc_sgd_momentum_f32(float* w, float* v, const float* g, int32_t n, float lr,
                         float momentum) {
    for (int32_t i = 0; i < n; ++i) {
        const float vi = momentum * v[i] + g[i];
        v[i] = vi;
        w[i] = w[i] - lr * vi;
    }
}

float tc_grad_global_norm_f32(float* const* grads, const int32_t* sizes, int32_t count) {
    float sum = 0.0f;
    for (int32_t t = 0; t < count; ++t)
        for (int32_t i = 0; i < sizes[t]; ++i) sum = fmaf(grads[t][i], grads[t][i], sum);
    return sqrtf(sum);
}

float tc_clip_grad_global_norm_f32(float* const* grads, const int32_t* sizes, int32_t count,
                                   float max_norm) {
    const float norm = tc_grad_global_norm_f32(grads, sizes, count);
    if (norm > max_norm) {
        const float scale = max_norm / norm;
        for (int32_t t = 0; t < count; ++t)
            for (int32_t i = 0; i < sizes[t]; ++i) grads[t][i] *= scale;
    }
    return norm;
}
