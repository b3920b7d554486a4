// Int8 mean over the spatial axes (global average pooling), bit-exact with TFLite's MEAN as the
// converter emits it for GlobalAveragePooling1D/2D and reduce_mean over H and W (or T).
//
// Input NHWC [batch][in_h][in_w][c] (a 1-D signal [batch][T][c] is in_h = 1, in_w = T); output
// [batch][c] (keep_dims only changes the shape, not the bytes).
//
// q->multiplier[0] / q->shift[0] are the operator's QuantizeMultiplier(input_scale /
// output_scale), as TFLite prepares MEAN; input_offset is minus the input zero point,
// output_offset the output zero point, act_min/act_max the clamp (-128..127 for MEAN). The kernel
// folds 1 / (in_h * in_w) into that multiplier the way TFLite's reference QuantizedMeanOrSum
// does, then requantises the int32 sum of (x + input_offset).
#pragma once
#include "tc_kernels_common.h"

struct tc_mean_dims {
    int32_t batch;
    int32_t in_h, in_w, c;
};

// TFLite's count folding: with s = min(floor(log2(count)), 32, 31 + shift),
// multiplier' = (multiplier * 2^s) / count (64-bit, truncated) and shift' = shift - s.
void tc_mean_s8_count_multiplier(int32_t multiplier, int32_t shift, int32_t count,
                                 int32_t* count_multiplier, int32_t* count_shift);

void tc_mean_s8(const tc_mean_dims* d, const tc_s8_quant* q, const int8_t* x, int8_t* y);
