#include "tc_softmax_ce_f32.h"

#include "tc_math.h"

float tc_softmax_ce_f32(const float* logits, const int32_t* labels, int32_t batch,
                        int32_t classes, const uint8_t* mask, int32_t num_valid, float* dlogits) {
    float total = 0.0f;
    const float inv_batch = 1.0f / (float)batch;
    for (int32_t b = 0; b < batch; ++b) {
        const float* z = logits + b * classes;
        float* dz = dlogits ? dlogits + b * classes : nullptr;
        const int32_t label = labels[b];
        auto valid = [&](int32_t c) { return mask ? mask[c] != 0 : c < num_valid; };
        if (label < 0 || label >= classes || !valid(label)) return NAN;
        float zmax = -INFINITY;
        for (int32_t c = 0; c < classes; ++c)
            if (valid(c) && z[c] > zmax) zmax = z[c];
        float sum = 0.0f;
        for (int32_t c = 0; c < classes; ++c)
            if (valid(c)) sum += tc_expf(z[c] - zmax);
        // Stable form: -log softmax(z)[label] = log(sum exp(z - max)) - (z[label] - max)
        total += tc_logf(sum) - (z[label] - zmax);
        if (dz) {
            const float inv_sum = 1.0f / sum;
            for (int32_t c = 0; c < classes; ++c) {
                if (!valid(c)) {
                    dz[c] = 0.0f;
                    continue;
                }
                float p = tc_expf(z[c] - zmax) * inv_sum;
                if (c == label) p -= 1.0f;
                dz[c] = p * inv_batch;
            }
        }
    }
    return total * inv_batch;
}
