#include "tc_growth.h"

#include <string.h>

void tc_grow_filters(float* w, float* b, uint16_t out_old, uint16_t in_old, uint16_t out_new,
                     uint16_t in_new, uint32_t positions, bool random_rows, tc_prng* prng) {
    if (in_new > in_old) {
        // Widen every (filter, position) row in place, last row first: row r moves from
        // r*in_old to r*in_new, never before its old place, so nothing is overwritten before
        // it is moved.
        const int32_t rows = (int32_t)out_old * (int32_t)positions;
        for (int32_t r = rows - 1; r >= 0; --r) {
            memmove(w + (size_t)r * in_new, w + (size_t)r * in_old, sizeof(float) * in_old);
            memset(w + (size_t)r * in_new + in_old, 0, sizeof(float) * (in_new - in_old));
        }
    }
    if (out_new <= out_old) return;
    const size_t fan_in = (size_t)positions * in_new;
    float* rows = w + (size_t)out_old * fan_in;
    const size_t n = (size_t)(out_new - out_old) * fan_in;
    if (random_rows) {
        const float scale = tc_prng_he_scale((uint32_t)fan_in);
        for (size_t i = 0; i < n; ++i) rows[i] = tc_prng_normal(prng) * scale;
    } else {
        memset(rows, 0, sizeof(float) * n);
    }
    memset(b + out_old, 0, sizeof(float) * (out_new - out_old));
}

void tc_grow_depthwise(float* w, float* b, uint16_t c_old, uint16_t c_new, uint32_t positions,
                       tc_prng* prng) {
    if (c_new <= c_old) return;
    for (int32_t p = (int32_t)positions - 1; p >= 0; --p) {
        memmove(w + (size_t)p * c_new, w + (size_t)p * c_old, sizeof(float) * c_old);
        memset(w + (size_t)p * c_new + c_old, 0, sizeof(float) * (c_new - c_old));
    }
    const float scale = tc_prng_he_scale(positions);
    for (uint16_t c = c_old; c < c_new; ++c)
        for (uint32_t p = 0; p < positions; ++p)
            w[(size_t)p * c_new + c] = tc_prng_normal(prng) * scale;
    memset(b + c_old, 0, sizeof(float) * (c_new - c_old));
}

void tc_grow_dense(float* w, float* b, uint16_t out_old, uint16_t in_old, uint16_t out_new,
                   uint16_t in_new, bool random_rows, tc_prng* prng) {
    tc_grow_filters(w, b, out_old, in_old, out_new, in_new, 1, random_rows, prng);
}
