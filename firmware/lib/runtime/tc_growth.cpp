#include "tc_growth.h"

#include <string.h>

void tc_grow_dense(float* w, float* b, uint16_t out_old, uint16_t in_old, uint16_t out_new,
                   uint16_t in_new, bool random_rows, tc_prng* prng) {
    if (in_new > in_old) {
        // Widen every row in place, last row first: row r moves from r*in_old to r*in_new,
        // which is never before its old place, so nothing is overwritten before it is moved.
        for (int32_t r = (int32_t)out_old - 1; r >= 0; --r) {
            memmove(w + (size_t)r * in_new, w + (size_t)r * in_old, sizeof(float) * in_old);
            memset(w + (size_t)r * in_new + in_old, 0, sizeof(float) * (in_new - in_old));
        }
    }
    if (out_new <= out_old) return;
    float* rows = w + (size_t)out_old * in_new;
    const size_t n = (size_t)(out_new - out_old) * in_new;
    if (random_rows) {
        const float scale = tc_prng_he_scale(in_new);
        for (size_t i = 0; i < n; ++i) rows[i] = tc_prng_normal(prng) * scale;
    } else {
        memset(rows, 0, sizeof(float) * n);
    }
    memset(b + out_old, 0, sizeof(float) * (out_new - out_old));
}
