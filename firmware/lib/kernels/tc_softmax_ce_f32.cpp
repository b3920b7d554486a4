#include "tc_softmax_ce_f32.h"

#include "tc_math.h"

namespace {

inline bool valid(const uint8_t* mask, int32_t num_valid, int32_t c) {
    return mask ? mask[c] != 0 : c < num_valid;
}

}  // namespace

float tc_softmax_ce_row_f32(const float* z, int32_t label, int32_t classes, const uint8_t* mask,
                            int32_t num_valid, float scale, float* dz) {
    if (label < 0 || label >= classes || !valid(mask, num_valid, label)) return NAN;
    float zmax = -INFINITY, sum = 0.0f;
    if (mask == nullptr) {
        // The valid classes are 0 .. n-1: straight loops, the exponentials kept in dz for the
        // gradient, expf inlined (about 30 instructions per class).
        const int32_t n = num_valid < classes ? num_valid : classes;
        for (int32_t c = 0; c < n; ++c)
            if (z[c] > zmax) zmax = z[c];
        for (int32_t c = 0; c < n; ++c) {
            const float ec = tc_expf_inline(z[c] - zmax);
            if (dz) dz[c] = ec;
            sum += ec;
        }
        if (dz) {
            const float inv_sum = 1.0f / sum;
            for (int32_t c = 0; c < n; ++c) {
                float p = dz[c] * inv_sum;
                if (c == label) p -= 1.0f;
                dz[c] = p * scale;
            }
            for (int32_t c = n; c < classes; ++c) dz[c] = 0.0f;
        }
    } else {
        for (int32_t c = 0; c < classes; ++c)
            if (mask[c] && z[c] > zmax) zmax = z[c];
        for (int32_t c = 0; c < classes; ++c) {
            const float ec = mask[c] ? tc_expf_inline(z[c] - zmax) : 0.0f;
            if (dz) dz[c] = ec;
            if (mask[c]) sum += ec;
        }
        if (dz) {
            const float inv_sum = 1.0f / sum;
            for (int32_t c = 0; c < classes; ++c) {
                if (!mask[c]) continue;  // already 0
                float p = dz[c] * inv_sum;
                if (c == label) p -= 1.0f;
                dz[c] = p * scale;
            }
        }
    }
    // Stable form: -log softmax(z)[label] = log(sum exp(z - max)) - (z[label] - max)
    return tc_logf(sum) - (z[label] - zmax);
}

float tc_softmax_ce_f32(const float* logits, const int32_t* labels, int32_t batch,
                        int32_t classes, const uint8_t* mask, int32_t num_valid, float* dlogits) {
    float total = 0.0f;
    const float inv_batch = 1.0f / (float)batch;
    for (int32_t b = 0; b < batch; ++b) {
        const int32_t label = labels[b];
        if (label < 0 || label >= classes || !valid(mask, num_valid, label)) return NAN;
        total += tc_softmax_ce_row_f32(logits + b * classes, label, classes, mask, num_valid,
                                       inv_batch, dlogits ? dlogits + b * classes : nullptr);
    }
    return total * inv_batch;
}
