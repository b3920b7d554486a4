// Int8 max and average pooling, bit-exact with TFLite's MAX_POOL_2D / AVERAGE_POOL_2D (input and
// output share scale and zero point; act_min/act_max is the fused activation range).
#pragma once
#include "tc_kernels_common.h"

void tc_max_pool_s8(const tc_window_dims* d, int32_t act_min, int32_t act_max, const int8_t* x,
                    int8_t* y);
// Divides the window sum by the number of in-image elements, rounding half away from zero.
void tc_avg_pool_s8(const tc_window_dims* d, int32_t act_min, int32_t act_max, const int8_t* x,
                    int8_t* y);
